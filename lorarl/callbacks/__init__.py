from lorarl.callbacks.checkpoint import AdapterCheckpoint
from lorarl.callbacks.evaluation import PeriodicEvaluation

__all__ = ["AdapterCheckpoint", "PeriodicEvaluation"]

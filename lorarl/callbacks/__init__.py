from lorarl.callbacks.checkpoint import AdapterCheckpoint
from lorarl.callbacks.evaluation import PeriodicEvaluation
from lorarl.callbacks.progress import IterationLog, IterationProgress
from lorarl.callbacks.summary import RunSummary

__all__ = ["AdapterCheckpoint", "IterationLog", "IterationProgress", "PeriodicEvaluation", "RunSummary"]

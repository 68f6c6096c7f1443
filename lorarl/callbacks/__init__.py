from lorarl.callbacks.checkpoint import AdapterCheckpoint

__all__ = ["AdapterCheckpoint"]

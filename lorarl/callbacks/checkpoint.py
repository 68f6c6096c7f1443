"""Save adapter-only checkpoints every N iterations and after the last one, verified by a manifest.
A save that fails (a full disk) removes its temporary directory, leaves older checkpoints as they
are, and stops the run with one line (``CheckpointError``)."""

from __future__ import annotations

import errno
import shutil
import time
from collections import Counter
from pathlib import Path

import lightning as L

from lorarl import checkpointing as ckpt


class AdapterCheckpoint(L.Callback):
    def __init__(self, dirpath: str | Path, every_n_iterations: int, keep_last: int | None = None, tokenizer=None):
        """``tokenizer``: saved with full fine-tuning checkpoints, so that one loads on its own
        (AutoTokenizer and AutoModelForCausalLM on the directory, or evaluate.py model_path=)."""
        self.dirpath = Path(dirpath)
        self.tokenizer = tokenizer
        self.every = every_n_iterations
        self.keep_last = keep_last
        self.last_saved: Path | None = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        done = trainer.current_epoch + 1  # iterations completed
        if (self.every and done % self.every == 0) or done == trainer.max_epochs:
            self.save(trainer, pl_module, done)

    def save(self, trainer: L.Trainer, module: L.LightningModule, iteration: int) -> Path:
        name = ckpt.checkpoint_name(iteration)
        tmp, final = self.dirpath / f".tmp-{name}", self.dirpath / name
        try:
            if trainer.is_global_zero:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            trainer.strategy.barrier()
            state = module.sharding.trainable_state_dict(module.policy)  # collective when sharded
            if trainer.is_global_zero:
                ckpt.save_policy_files(module.policy, state, tmp)
                if self.tokenizer is not None and not ckpt.is_lora(module.policy.lm):
                    self.tokenizer.save_pretrained(str(tmp))
            trainer.save_checkpoint(tmp / ckpt.TRAINER_STATE, weights_only=False)  # collective; rank 0 writes
            if trainer.is_global_zero:
                ckpt.write_stats(tmp, training_stats(module, iteration, trainer.global_step))
                ckpt.write_manifest(tmp)
                ckpt.publish(tmp, final)
                ckpt.prune(self.dirpath, self.keep_last)
        except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
            shutil.rmtree(tmp, ignore_errors=True)
            raise ckpt.CheckpointError(f"{_reason(e, self.dirpath)} in {self.dirpath}") from None
        trainer.strategy.barrier()
        self.last_saved = final
        return final


def _reason(e: Exception, where: Path) -> str:
    if isinstance(e, OSError) and e.errno == errno.ENOSPC or shutil.disk_usage(where).free < (1 << 20):
        return "no space left on device"
    return (e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]).lower()


def training_stats(module: L.LightningModule, iteration: int, global_step: int) -> dict:
    """What a user wants to read next to an adapter: how the policy was doing when it was saved."""
    episodes = module.last_episodes
    return {
        "iteration": iteration,
        "global_step": global_step,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "episodes": len(episodes),
        "outcome_counts": dict(Counter(e.outcome for e in episodes)),
        "metrics": {k: float(v) for k, v in module.last_stats.items()},
    }

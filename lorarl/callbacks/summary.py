"""How a run ends: what it reached, where its newest adapter is, and the commands to look at it
and evaluate it, on the console and in train.log. A run of the built-in random-weight model that
never succeeded says, once, how to warm it up first."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L

from lorarl import checkpointing as ckpt

WARM_UP = "add stage=warmstart (python train.py experiment=target_word_warmstart shows it learning in a minute)"


def next_steps(run_dir: Path, adapter: Path | None, tensorboard: bool) -> list[str]:
    lines = [f"adapter: {adapter}" if adapter else "adapter: none saved"]
    if tensorboard:
        lines.append(f"  tensorboard --logdir {run_dir / 'tb'}")
    if adapter:
        lines.append(f"  python evaluate.py adapter={adapter}")
    return lines


class RunSummary(L.Callback):
    """``random_model``: the policy started from the built-in model's random weights (no warm start)."""

    def __init__(self, run_dir: Path, tensorboard: bool, sft: bool, random_model: bool):
        self.run_dir, self.tensorboard, self.sft, self.random_model = Path(run_dir), tensorboard, sft, random_model
        self.start, self.successes = time.monotonic(), 0.0

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.successes += module.last_stats.get("rollout/success_rate", 0.0)

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        s, done = module.last_stats, trainer.current_epoch
        if self.sft:
            reached = f"loss {s.get('sft/loss', float('nan')):.3f}, held-out loss {s.get('sft/val_loss', float('nan')):.3f}"
        else:
            reached = (f"reward {s.get('rollout/reward_mean', float('nan')):.3f}, "
                       f"success {s.get('rollout/success_rate', float('nan')):.3f}")
        newest = ckpt.checkpoints(self.run_dir / "checkpoints")
        lines = [f"done: {done} {'epochs' if self.sft else 'iterations'} in {time.monotonic() - self.start:.0f} s; "
                 f"last: {reached}", *next_steps(self.run_dir, newest[0] if newest else None, self.tensorboard)]
        if self.random_model and not self.sft and self.successes == 0:
            lines.append("note: the built-in model starts from random weights and did not solve a task by chance; "
                         f"warm it up on solved transcripts first: {WARM_UP}")
        say(lines)


def say(lines: list[str]) -> None:
    """On the console as plain lines, and in train.log ("lorarl.run": the log file only)."""
    print("\n".join(lines), flush=True)
    for line in lines:
        logging.getLogger("lorarl.run").info(line)

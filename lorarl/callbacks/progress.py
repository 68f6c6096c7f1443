"""One progress bar over the run's iterations (SFT: epochs) with the numbers that matter, and one
line per iteration in the run's log (train.log). Lightning's own bar counts the batches of an
epoch: ``1/1`` per RL iteration, which says nothing."""

from __future__ import annotations

import logging

import lightning as L
from tqdm.auto import tqdm

RL_FIELDS = {"reward": "rollout/reward_mean", "success": "rollout/success_rate"}
SFT_FIELDS = {"loss": "sft/loss", "val_loss": "sft/val_loss"}


def _fmt(stats: dict, key: str) -> str:
    return f"{stats[key]:.3f}" if key in stats else "-"


class IterationProgress(L.Callback):
    """``per_step``: the bar counts optimizer steps (SFT: an epoch of a real model takes minutes)."""

    def __init__(self, iterations: int, fields: dict[str, str] = RL_FIELDS, unit: str = "iterations",
                 per_step: bool = False):
        self.iterations, self.fields, self.unit, self.per_step = iterations, fields, unit, per_step
        self.bar = None

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            done = trainer.global_step if self.per_step else trainer.current_epoch
            self.bar = tqdm(total=self.iterations, initial=done, desc=self.unit, unit="it", dynamic_ncols=True)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args) -> None:
        if self.per_step:
            self._advance(module)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not self.per_step:
            self._advance(module)

    def _advance(self, module: L.LightningModule) -> None:
        if self.bar is None:
            return
        self.bar.set_postfix({name: _fmt(module.last_stats, key) for name, key in self.fields.items()}, refresh=False)
        self.bar.update(1)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class IterationLog(L.Callback):
    """RL: reward, success, outcome mix, KL, entropy, seconds. SFT: loss and held-out loss."""

    def __init__(self, iterations: int, sft: bool = False):
        self.iterations, self.sft = iterations, sft
        self.lines = logging.getLogger("lorarl.iterations")

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        s, done = module.last_stats, trainer.current_epoch + 1
        if self.sft:
            self.lines.info("epoch %d/%d loss=%s val_loss=%s", done, self.iterations, _fmt(s, "sft/loss"),
                            _fmt(s, "sft/val_loss"))
            return
        outcomes = " ".join(f"{k.rsplit('/', 1)[1]}={v:.2f}" for k, v in s.items() if k.startswith("rollout/outcome/") and v)
        kl = next((f" kl={v:.4f}" for k, v in s.items() if k.startswith("rollout/kl_to_base")), "")
        if "train/informative_share" in s:  # skip_uniform_groups: the share of episodes trained on, or no update
            kl += f" trained={s['train/informative_share']:.2f}" if "train/loss" in s else " no-update(equal-rewards)"
        if "train/replay_loss" in s:  # sft.replay_coef: does the policy still fit the SFT transcripts?
            kl += f" replay_loss={s['train/replay_loss']:.4f}"
        self.lines.info("iteration %d/%d reward=%s success=%s %s%s entropy=%s %.1fs", done, self.iterations,
                        _fmt(s, "rollout/reward_mean"), _fmt(s, "rollout/success_rate"), outcomes, kl,
                        _fmt(s, "train/entropy"), s.get("perf/iteration_s", float("nan")))

"""One progress bar over the run's iterations, showing the last iteration's reward and success.
(Lightning's own bar counts batches of an epoch: ``1/1`` per iteration, which says nothing.)"""

from __future__ import annotations

import lightning as L
from tqdm.auto import tqdm


class IterationProgress(L.Callback):
    def __init__(self, iterations: int):
        self.iterations = iterations
        self.bar = None

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.bar = tqdm(total=self.iterations, initial=trainer.current_epoch, desc="iterations", unit="it",
                            dynamic_ncols=True)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.bar is None:
            return
        stats = module.last_stats
        self.bar.set_postfix(reward=f"{stats.get('rollout/reward_mean', float('nan')):.3f}",
                             success=f"{stats.get('rollout/success_rate', float('nan')):.2f}", refresh=False)
        self.bar.update(1)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class IterationLog(L.Callback):
    """One line per iteration in the run's log (train.log): reward, success, outcomes, KL, time."""

    def __init__(self, iterations: int):
        import logging

        self.iterations = iterations
        self.lines = logging.getLogger("lorarl.iterations")

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        s = module.last_stats
        outcomes = " ".join(f"{k.rsplit('/', 1)[1]}={v:.2f}" for k, v in s.items() if k.startswith("rollout/outcome/") and v)
        kl = next((f" kl={v:.4f}" for k, v in s.items() if k.startswith("rollout/kl_to_base")), "")
        self.lines.info("iteration %d/%d reward=%.3f success=%.3f %s%s entropy=%.3f %.1fs", trainer.current_epoch + 1,
                      self.iterations, s.get("rollout/reward_mean", float("nan")), s.get("rollout/success_rate", float("nan")),
                      outcomes, kl, s.get("train/entropy", float("nan")), s.get("perf/iteration_s", float("nan")))

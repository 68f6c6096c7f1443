"""Periodic evaluation during training, with the same code as ``evaluate.py``.

Runs greedy episodes on a held-out seed range (far from the training seeds) every N
iterations and logs ``eval/*`` metrics next to the training curves.
"""

from __future__ import annotations

import lightning as L

from lorarl.evaluation import EvalSpec, evaluate_policy, summarize
from lorarl.rollout import RolloutCollector


class PeriodicEvaluation(L.Callback):
    def __init__(self, collector: RolloutCollector, spec: EvalSpec, every_n_iterations: int):
        self.collector, self.spec, self.every = collector, spec, every_n_iterations
        self.history: list[dict] = []

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        done = trainer.current_epoch + 1
        if not self.every or done % self.every:
            return
        with module.sampling_mode():
            episodes, tps = evaluate_policy(module.policy, self.collector, self.spec,
                                            module.sharding.synced_generate, module._any_rank)
        m = summarize(episodes, tps)
        self.history.append({"iteration": done, **m})
        stats = {"eval/success_rate": m["success_rate"], "eval/mean_reward": m["mean_reward"], "eval/mean_rounds": m["mean_rounds"]}
        stats.update({f"eval/outcome/{k}": v for k, v in m["outcome_mix"].items()})
        module.log_dict(stats, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(episodes))

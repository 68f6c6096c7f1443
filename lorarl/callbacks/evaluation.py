"""Periodic evaluation during training, with the same code and metric names as ``evaluate.py``.

Runs greedy episodes on a held-out seed range (far from the training seeds) every N
iterations and logs ``eval/<metric>`` next to the training curves' ``rollout/<metric>``; each
evaluation's episodes are kept as a report like evaluate.py's (``<run>/eval/iter_NNNNNN.json``:
metrics, intervals, every episode with its transcript, and the env and decoding under ``config`` as
in evaluate.py's: ``make_transcripts.py --from-report`` reads either), so runs can be compared task by task.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L

from lorarl.evaluation import EvalSpec, confidence, episode_records, evaluate_policy
from lorarl.metrics import episode_metrics, log_synced, prefixed
from lorarl.rollout import RolloutCollector


class PeriodicEvaluation(L.Callback):
    def __init__(self, collector: RolloutCollector, spec: EvalSpec, every_n_iterations: int, config: dict | None = None):
        self.collector, self.spec, self.every = collector, spec, every_n_iterations
        self.config = config or {}  # the env and decoding, written into each report as evaluate.py writes its own
        self.history: list[dict] = []
        self.last: dict[str, float] = {}  # the eval/* metrics last logged

    def teardown(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        self.collector.close()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        done = trainer.current_epoch + 1
        if not self.every or done % self.every:
            return
        with module.sampling_mode():
            episodes, _ = evaluate_policy(module.policy, self.collector, self.spec, module.sharding.synced_generate,
                                          module.any_rank)
        metrics = episode_metrics(episodes)
        self.history.append({"iteration": done, "episodes": len(episodes), **metrics})
        self.last = log_synced(module, prefixed("eval", metrics), step=done)
        if trainer.is_global_zero:
            report = Path(trainer.default_root_dir) / "eval" / f"iter_{done:06d}.json"
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(json.dumps({"iteration": done, "seed": self.spec.seed, "config": self.config, "metrics": metrics,
                                          "confidence": confidence(episodes), "episodes": episode_records(episodes)},
                                         indent=1, default=str))

"""The LightningModule: Lightning glue around one RL iteration per training "epoch".

Iteration = collect a batch of online episodes (``rollout``) -> ``ppo.prepare`` (logprob check,
values, reference logprobs, advantages) -> ``ppo.update`` (manual optimization, one optimizer step
per minibatch). Making each Lightning epoch one iteration lets Lightning's own checkpoint/resume
machinery restore exactly at an iteration boundary.

Environment state never lives here: the collector owns the envs; the module owns the policy, the
optimizer and the few numbers that must survive a resume (``ppo.AdvantageState``).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from lorarl import ppo
from lorarl.checkpointing import trainable_only
from lorarl.logprob_check import LogprobGuard
from lorarl.lora import merged_for_inference
from lorarl.metrics import episode_metrics, log_synced, prefixed
from lorarl.packing import CostModel
from lorarl.policy import Policy
from lorarl.rollout import Episode, RolloutCollector, format_transcript
from lorarl.sft import Replay
from lorarl.sharding import ShardingPlan, max_over_ranks
from lorarl.transcript_page import write_page


@dataclass
class LoopSpec:
    iterations: int
    envs_per_rank: int  # episodes per iteration on each rank
    seed: int
    logprob_tolerance: float  # |logp_train - logp_sample| per token (lorarl.logprob_check: when the run fails)
    temperature: float  # the sampling temperature, also applied when logprobs are recomputed
    merge_adapter: bool  # generate with the adapter merged into the weights
    transcripts_every: int  # iterations between transcript logs (0: never)
    transcripts_count: int
    micro_batch_tokens: int  # tokens per training forward/backward (lorarl.packing)
    share_prefixes: bool  # compute a prefix that episodes share once in the training forwards


class _Iterations(Dataset):
    """One item per epoch: the loop is driven by rollouts, not by a dataset."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> int:
        return i


class RLModule(L.LightningModule):
    def __init__(self, policy: Policy, collector: RolloutCollector, spec: ppo.PPOSpec, optim: ppo.OptimSpec,
                 loop: LoopSpec, sharding: ShardingPlan | None = None, replay: Replay | None = None):
        super().__init__()
        self.replay = replay  # SFT transcripts trained on beside RL (sft.replay_coef), or None
        self.policy, self.collector = policy, collector
        self.spec, self.optim, self.loop = spec, optim, loop
        self.sharding = sharding or ShardingPlan()
        self.automatic_optimization = False
        self.strict_loading = False  # checkpoints hold trainable weights only
        self.advantage_state = ppo.AdvantageState()
        self.check = LogprobGuard(loop.logprob_tolerance)
        self.batching = ppo.Batching(loop.micro_batch_tokens, CostModel.of(policy.lm), collector.tok.pad_token_id,
                                     loop.share_prefixes, self.max_over_ranks)
        self.last_stats: dict[str, float] = {}
        self.last_episodes: list[Episode] = []

    # ---- setup -------------------------------------------------------------------------
    def configure_model(self) -> None:
        self.sharding.apply(self.policy, getattr(self, "device_mesh", None))

    def teardown(self, stage: str) -> None:
        self.collector.close()  # the run's envs end with it (workers, sandboxes, file descriptors)

    def configure_optimizers(self):
        params = [p for p in self.policy.parameters() if p.requires_grad]
        # foreach: one kernel per step for all (many small) adapter tensors, not a Python loop over them
        opt = torch.optim.AdamW(params, lr=self.optim.lr, weight_decay=self.optim.weight_decay, foreach=True)
        warm = max(1, self.optim.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warm))
        return [opt], [{"scheduler": sched, "interval": "step"}]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Iterations(), batch_size=None)

    # ---- one iteration -----------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        iteration = self.current_epoch
        # Sampling depends only on (seed, iteration, rank): a resumed run replays exactly.
        seed = self.loop.seed * 1_000_003 + iteration * 1009 + self.global_rank
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        episodes = self._collect(iteration)
        rollout_s = time.perf_counter() - t0
        data = self.collector.batch(episodes).to(self.device)
        rollout_tokens, trained = data.num_action_tokens, {}
        if self.spec.skip_uniform_groups:
            rows, count = ppo.informative_rows(data, self.max_over_ranks)
            data, trained = data.select(rows) if len(rows) else None, {"train/informative_share": count / len(episodes)}
        temperature = self.loop.temperature
        t_prep = t1 = time.perf_counter()  # still in eval mode: old values and logprobs are the no-dropout policy's
        if data is not None:  # None: every group on every rank got equal rewards, so no update (and no step)
            targets, prep_stats = ppo.prepare(self.policy, data, self.spec, self.advantage_state, temperature,
                                              self.batching, self.check, self.mean_over_ranks)
            self.policy.train()
            t1 = time.perf_counter()
            replay = self.replay.sampler(seed, self.device) if self.replay else None
            train_stats, train_tokens = ppo.update(self.policy, data, targets, self.spec, temperature, self.batching,
                                                   self._backward, self._step, self.check, replay)
            trained.update({**prep_stats, **train_stats,
                            "perf/train_tokens_per_s": train_tokens / max(time.perf_counter() - t1, 1e-9)})
        stats = {**prefixed("rollout", episode_metrics(episodes)), **trained,
                 "perf/rollout_tokens_per_s": rollout_tokens / max(rollout_s, 1e-9),
                 "perf/iteration_s": time.perf_counter() - t0,
                 "perf/rollout_s": rollout_s, **{f"perf/{k}": v for k, v in self.collector.timing.items()},
                 **{f"perf/{k}": v for k, v in self.collector.prefill.items()},
                 "perf/prepare_s": t1 - t_prep, "perf/update_s": time.perf_counter() - t1,
                 "iteration": float(iteration)}
        # TensorBoard's x-axis is the iteration (1-based, as in train.log and checkpoint names)
        log_synced(self, stats, step=iteration + 1)
        self.last_stats, self.last_episodes = stats, episodes
        self._log_transcripts(iteration, episodes)

    def _collect(self, iteration: int) -> list[Episode]:
        per_task = self.spec.group_size
        tasks = self.loop.envs_per_rank // per_task
        first = (iteration * self.trainer.world_size + self.global_rank) * tasks
        seeds = [self.loop.seed * 1_000_003 + first + i // per_task for i in range(self.loop.envs_per_rank)]
        groups = [i // per_task for i in range(self.loop.envs_per_rank)]
        with self.sampling_mode():
            return self.collector.collect(self.policy, seeds, groups, self.sharding.synced_generate, self.any_rank)

    def _backward(self, loss: torch.Tensor, last: bool) -> None:
        self.sharding.before_backward(self, last)
        with self.sharding.backward_context(self, last):
            self.manual_backward(loss)

    def _step(self) -> dict[str, float]:
        """Clip and step on the gradients the minibatch's micro-batches accumulated, then clear them."""
        opt, sched = self.optimizers(), self.lr_schedulers()
        norm = self.sharding.clip_grad_norm(self.policy, self.optim.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        return {"train/lr": sched.get_last_lr()[0], **({"train/grad_norm": norm} if norm is not None else {})}

    @contextlib.contextmanager
    def sampling_mode(self):
        """Eval mode (no dropout: old logprobs are the eval-mode policy's) inside the strategy's
        generation context (ZeRO-3 gathers), with the adapter merged when asked. The policy stays
        in eval mode after: the update sets train mode itself."""
        self.policy.eval()
        merged = merged_for_inference(self.policy.lm) if self.loop.merge_adapter else contextlib.nullcontext()
        with self.sharding.generation_context(self.policy), merged:
            yield

    # ---- across ranks ------------------------------------------------------------------
    def any_rank(self, flag: bool) -> bool:
        """True when the flag is set on any rank (keeps sharded generation in lockstep)."""
        if not (dist.is_available() and dist.is_initialized()):
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def max_over_ranks(self, n: int) -> int:
        return max_over_ranks(n, self.device)

    def mean_over_ranks(self, x: torch.Tensor) -> torch.Tensor:
        if not (dist.is_available() and dist.is_initialized()):
            return x
        t = x.detach().float().reshape(1).to(self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t[0] / dist.get_world_size()

    # ---- transcripts and checkpoint state ----------------------------------------------
    def _log_transcripts(self, iteration: int, episodes: list[Episode]) -> None:
        """Every ``transcripts_every`` iterations: the first episodes as TensorBoard text, and as a
        page to read in a browser (runs/<run>/transcripts/iter_N.html)."""
        every = self.loop.transcripts_every
        if not every or (iteration + 1) % every or self.global_rank != 0:  # iterations 5, 10, ... as checkpoints
            return
        shown = episodes[: self.loop.transcripts_count]
        add_text = getattr(getattr(self.logger, "experiment", None), "add_text", None)
        for k, ep in enumerate(shown if add_text else []):
            add_text(f"transcripts/{k}", format_transcript(ep), iteration + 1)
        page = Path(self.trainer.default_root_dir) / "transcripts" / f"iter_{iteration + 1:06d}.html"
        write_page(page, {f"iteration {iteration + 1}": shown}, f"lorarl training: iteration {iteration + 1}")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = trainable_only(self, checkpoint["state_dict"])
        checkpoint["lorarl"] = {"advantage_state": asdict(self.advantage_state), "loop": asdict(self.loop),
                                "ppo": asdict(self.spec)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("lorarl", {})
        self.advantage_state = ppo.AdvantageState(**saved.get("advantage_state", {"baseline": saved.get("baseline", 0.0)}))

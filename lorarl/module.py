"""The LightningModule: one training "epoch" is one RL iteration.

Iteration = collect a batch of online episodes -> check sampling/training logprobs agree ->
advantages -> K PPO epochs of minibatch updates (manual optimization, one optimizer step per
minibatch). Making each Lightning epoch one iteration lets Lightning's own checkpoint/resume
machinery restore exactly at an iteration boundary.

Environment state never lives here: the collector owns the envs; the module owns the policy,
the optimizer and the few numbers that must survive a resume (the REINFORCE baseline).
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Optional

import lightning as L
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from lorarl import advantages as A
from lorarl import losses
from lorarl.lora import is_lora
from lorarl.ops import masked_mean, masked_whiten
from lorarl.policy import Policy
from lorarl.rewards import OUTCOMES
from lorarl.rollout import Episode, RolloutCollector, episodes_to_batch
from lorarl.sharding import ShardingPlan
from lorarl.types import RolloutBatch


@dataclass
class PPOSpec:
    advantage: str = "gae"  # gae (critic) | grpo (group-relative) | reinforce (running-mean baseline)
    ppo_epochs: int = 2  # passes over each rollout batch
    minibatch_size: int = 8  # episodes per optimizer step
    clip_eps: float = 0.2
    dual_clip: Optional[float] = None  # e.g. 3.0; bounds the loss of negative-advantage tokens
    entropy_coef: float = 0.0
    kl_coef: float = 0.0  # weight of KL(policy || base) in the loss
    kl_estimator: str = "k3"  # k1 | k2 | k3
    value_coef: float = 0.5
    value_clip: Optional[float] = 0.2
    gamma: float = 1.0
    lam: float = 0.95
    normalize_advantages: bool = True  # whiten GAE advantages over the batch's action tokens
    grpo_scale_by_std: bool = True
    baseline_momentum: float = 0.9  # REINFORCE running-mean baseline


@dataclass
class OptimSpec:
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0  # optimizer steps of linear warm-up, then constant
    max_grad_norm: Optional[float] = 1.0


@dataclass
class LoopSpec:
    iterations: int = 20
    envs_per_rank: int = 16  # episodes per iteration on each rank
    group_size: int = 1  # episodes per task (GRPO needs > 1)
    seed: int = 0
    logprob_tolerance: float = 1e-3  # max |logp_train - logp_sample| before failing the run
    transcripts_every: int = 5  # iterations between transcript logs (0: never)
    transcripts_count: int = 2


class _Iterations(Dataset):
    """One item per epoch: the loop is driven by rollouts, not by a dataset."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> int:
        return i


class RLModule(L.LightningModule):
    def __init__(
        self,
        policy: Policy,
        collector: RolloutCollector,
        ppo: PPOSpec,
        optim: OptimSpec,
        loop: LoopSpec,
        sharding: ShardingPlan | None = None,
    ):
        super().__init__()
        self.policy, self.collector = policy, collector
        self.ppo, self.optim, self.loop = ppo, optim, loop
        self.sharding = sharding or ShardingPlan()
        self.automatic_optimization = False
        self.strict_loading = False  # checkpoints hold trainable weights only
        self.baseline = 0.0
        self.last_stats: dict[str, float] = {}
        self.last_episodes: list[Episode] = []

    # ---- setup -------------------------------------------------------------------------
    def configure_model(self) -> None:
        self.sharding.apply(self.policy, getattr(self, "device_mesh", None))

    def configure_optimizers(self):
        params = [p for p in self.policy.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.optim.lr, weight_decay=self.optim.weight_decay)
        warm = max(1, self.optim.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warm))
        return [opt], [{"scheduler": sched, "interval": "step"}]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Iterations(), batch_size=None)

    # ---- one iteration -----------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        iteration = self.current_epoch
        self._seed_iteration(iteration)
        t0 = time.perf_counter()
        episodes = self._collect(iteration)
        rollout_s = time.perf_counter() - t0
        data = episodes_to_batch(episodes, self.collector.tok.pad_token_id).to(self.device)
        prepared = self._prepare(data)
        t1 = time.perf_counter()
        train_stats, train_tokens = self._update(data, prepared)
        train_s = time.perf_counter() - t1
        stats = {**self._rollout_stats(episodes), **prepared["stats"], **train_stats}
        stats["perf/rollout_tokens_per_s"] = data.num_action_tokens / max(rollout_s, 1e-9)
        stats["perf/train_tokens_per_s"] = train_tokens / max(train_s, 1e-9)
        stats["iteration"] = float(iteration)
        self.log_dict(stats, on_step=True, on_epoch=False, sync_dist=True, batch_size=len(episodes))
        self.log("reward", stats["rollout/reward_mean"], prog_bar=True, sync_dist=True, logger=False, batch_size=len(episodes))
        self.log("success", stats["rollout/success_rate"], prog_bar=True, sync_dist=True, logger=False, batch_size=len(episodes))
        self.last_stats, self.last_episodes = stats, episodes
        self._log_transcripts(iteration, episodes)

    def _seed_iteration(self, iteration: int) -> None:
        # Sampling depends only on (seed, iteration, rank): a resumed run replays exactly.
        torch.manual_seed(self.loop.seed * 1_000_003 + iteration * 1009 + self.global_rank)

    def _collect(self, iteration: int) -> list[Episode]:
        tasks = self.loop.envs_per_rank // self.loop.group_size
        first = (iteration * self.trainer.world_size + self.global_rank) * tasks
        seeds = [self.loop.seed * 1_000_003 + first + i // self.loop.group_size for i in range(self.loop.envs_per_rank)]
        groups = [i // self.loop.group_size for i in range(self.loop.envs_per_rank)]
        with self.sampling_mode():
            return self.collector.collect(self.policy, seeds, groups, self.sharding.synced_generate, self._any_rank)

    @contextlib.contextmanager
    def sampling_mode(self):
        """Eval mode (no dropout: old logprobs are the eval-mode policy's) inside the strategy's
        generation context (ZeRO-3 gathers), back to train mode after."""
        self.policy.eval()
        try:
            with self.sharding.generation_context(self.policy):
                yield
        finally:
            self.policy.train()

    def _any_rank(self, flag: bool) -> bool:
        if not (dist.is_available() and dist.is_initialized()):
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    @torch.no_grad()
    def _prepare(self, data: RolloutBatch) -> dict:
        """Recompute logprobs (consistency check), values and reference logprobs, then advantages."""
        self.policy.eval()
        with_values = self.ppo.advantage == "gae"
        has_ref = is_lora(self.policy.lm) or self.policy.reference is not None
        logp, values, ref = [], [], []
        temp = self.collector.sampling.temperature
        for idx in torch.arange(len(data), device=self.device).split(self.ppo.minibatch_size):
            ids, attn = data.input_ids[idx], data.attention_mask[idx]
            out = self.policy(ids, attn, temp, with_values)
            logp.append(out.logprobs)
            values.append(out.values if with_values else torch.zeros_like(out.logprobs))
            ref.append(self.policy.reference_logprobs(ids, attn, temp) if has_ref else out.logprobs)
        self.policy.train()
        logp, values, ref = torch.cat(logp), torch.cat(values), torch.cat(ref)
        mask = data.action_mask
        deviation = float(((logp - data.old_logprobs).abs() * mask).max()) if mask.any() else 0.0
        if deviation > self.loop.logprob_tolerance:
            raise RuntimeError(
                f"policy logprobs recomputed before the update differ from sampling-time logprobs by "
                f"{deviation:.3g} > logprob_tolerance={self.loop.logprob_tolerance}: generation and "
                "training see different weights or inputs"
            )
        adv, returns = self._advantages(data, values)
        stats = {"check/logprob_max_abs_dev": deviation}
        if has_ref:
            kl = losses.kl_divergence(data.old_logprobs, ref, self.ppo.kl_estimator)
            stats[f"rollout/kl_to_base_{self.ppo.kl_estimator}"] = float(masked_mean(kl, mask))
        if with_values:
            stats["train/explained_variance"] = float(losses.explained_variance(values, returns, mask))
        return {"advantages": adv, "returns": returns, "values": values, "ref_logprobs": ref, "stats": stats}

    def _advantages(self, data: RolloutBatch, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = data.action_mask
        if self.ppo.advantage == "gae":
            token_r = A.terminal_rewards(data.rewards, mask)
            adv, returns = A.gae(token_r, values, mask, self.ppo.gamma, self.ppo.lam)
            return (masked_whiten(adv, mask) if self.ppo.normalize_advantages else adv), returns
        if self.ppo.advantage == "grpo":
            per_episode = A.group_relative(data.rewards, data.group_ids, self.ppo.grpo_scale_by_std)
        elif self.ppo.advantage == "reinforce":
            per_episode = A.reinforce_baseline(data.rewards, self.baseline)
            self.baseline = A.update_running_mean(self.baseline, data.rewards, self.ppo.baseline_momentum)
        else:
            raise ValueError(f"unknown advantage estimator {self.ppo.advantage!r}")
        return A.broadcast_to_tokens(per_episode, mask), torch.zeros_like(values)

    def _update(self, data: RolloutBatch, prep: dict) -> tuple[dict[str, float], int]:
        opt, sched = self.optimizers(), self.lr_schedulers()
        sums: Counter = Counter()
        steps, tokens = 0, 0
        for _ in range(self.ppo.ppo_epochs):
            perm = torch.randperm(len(data), device=self.device)
            for idx in perm.split(self.ppo.minibatch_size):
                mb = data.select(idx)
                width = mb.input_ids.shape[1]
                loss, st = self._minibatch_loss(mb, {k: prep[k][idx, :width] for k in ("advantages", "returns", "values", "ref_logprobs")})
                opt.zero_grad(set_to_none=True)
                self.manual_backward(loss)
                st["train/grad_norm"] = self.sharding.clip_grad_norm(self.policy, self.optim.max_grad_norm)
                opt.step()
                sched.step()
                sums.update({k: float(v) for k, v in st.items()})
                steps += 1
                tokens += int(mb.attention_mask.sum())
        stats = {k: v / steps for k, v in sums.items()}
        stats["train/lr"] = sched.get_last_lr()[0]
        return stats, tokens

    def _minibatch_loss(self, mb: RolloutBatch, p: dict) -> tuple[torch.Tensor, dict]:
        ppo, mask = self.ppo, mb.action_mask
        with_values = ppo.advantage == "gae"
        out = self.policy(mb.input_ids, mb.attention_mask, self.collector.sampling.temperature, with_values)
        loss, st = losses.clipped_policy_loss(out.logprobs, mb.old_logprobs, p["advantages"], mask, ppo.clip_eps, ppo.dual_clip)
        stats = {"train/policy_loss": loss.detach(), "train/clip_frac": st["clip_frac"], "train/approx_kl_k3": st["approx_kl"]}
        ent_loss, est = losses.entropy_bonus(out.entropy, mask)
        stats["train/entropy"] = est["entropy"]
        total = loss + ppo.entropy_coef * ent_loss
        if ppo.kl_coef > 0:
            kl, _ = losses.kl_loss(out.logprobs, p["ref_logprobs"], mask, ppo.kl_estimator)
            total = total + ppo.kl_coef * kl
        if with_values:
            vl, _ = losses.value_loss(out.values, p["values"], p["returns"], mask, ppo.value_clip)
            total = total + ppo.value_coef * vl
            stats["train/value_loss"] = vl.detach()
        stats["train/loss"] = total.detach()
        return total, stats

    # ---- metrics -------------------------------------------------------------------------
    def _rollout_stats(self, episodes: list[Episode]) -> dict[str, float]:
        n = len(episodes)
        outcomes = Counter(e.outcome for e in episodes)
        stats = {
            "rollout/reward_mean": sum(e.reward for e in episodes) / n,
            "rollout/success_rate": outcomes["correct"] / n,
            "rollout/episode_turns": sum(e.turns for e in episodes) / n,
            "rollout/episode_tokens": sum(len(e.token_ids) for e in episodes) / n,
            "rollout/response_tokens": sum(sum(e.action_mask) for e in episodes) / n,
        }
        stats.update({f"outcome/{o}": outcomes[o] / n for o in OUTCOMES})
        return stats

    def _log_transcripts(self, iteration: int, episodes: list[Episode]) -> None:
        every, logger = self.loop.transcripts_every, self.logger
        if not every or iteration % every or self.global_rank != 0 or logger is None:
            return
        add_text = getattr(logger.experiment, "add_text", None)
        if add_text is None:
            return
        for k, ep in enumerate(episodes[: self.loop.transcripts_count]):
            add_text(f"transcripts/{k}", format_transcript(ep), self.global_step)

    # ---- checkpoint state ----------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        checkpoint["lorarl"] = {"baseline": self.baseline, "loop": asdict(self.loop), "ppo": asdict(self.ppo)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.baseline = checkpoint.get("lorarl", {}).get("baseline", 0.0)


def format_transcript(ep: Episode) -> str:
    """Markdown view of an episode for TensorBoard's text tab."""
    head = f"**task** seed={ep.seed} type={ep.task_type} · **outcome** {ep.outcome} · **reward** {ep.reward:.3f}\n\n"
    body = "\n\n".join(f"**{m['role']}**:\n\n    " + m["content"].replace("\n", "\n    ") for m in ep.messages)
    return head + body

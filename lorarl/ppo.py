"""One PPO iteration on a batch of collected episodes, read top to bottom:

    targets, stats = prepare(policy, batch, spec, ...)   # old values, reference logprobs, advantages
    for epoch in range(spec.ppo_epochs):                 # ``update``
        for minibatch in shuffled(batch):
            loss, stats = minibatch_loss(policy, minibatch, targets, spec, temperature)
            step(loss)                                   # backward, clip, optimizer and lr step

The advantage estimator is picked from ``ESTIMATORS`` by name; whether a critic is trained follows
from that choice alone (``uses_critic``). The RL math itself is in ``advantages`` and ``losses``
(pure tensor functions); this module wires them to the policy. Lightning is not imported here:
the caller passes ``step`` (backward/clip/step) and ``mean_over_ranks``.

Departures from the PPO paper, all standard for LLM agents: one scalar reward per episode on its
last action token; GAE over action tokens only (``advantages`` explains); losses are token means
over the whole minibatch; an optional KL penalty to the base model (the adapter disabled).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Optional

import torch

from lorarl import advantages as A
from lorarl import losses
from lorarl.ops import masked_mean, masked_whiten
from lorarl.types import RolloutBatch


@dataclass
class PPOSpec:
    """The update's settings; defaults live in conf/algorithm/ppo.yaml."""

    advantage: str  # a key of ESTIMATORS
    group_size: int  # episodes per task (GRPO needs > 1)
    ppo_epochs: int  # passes over each rollout batch
    minibatch_size: int  # episodes per optimizer step
    clip_eps: float  # ratio clip range
    dual_clip: Optional[float]  # e.g. 3.0: bound the loss of negative-advantage tokens
    entropy_coef: float
    kl_coef: float  # weight of KL(policy || base)
    kl_estimator: str  # k1 | k2 | k3
    value_coef: float
    value_clip: Optional[float]
    gamma: float
    lam: float
    normalize_advantages: bool  # whiten GAE advantages over the batch's action tokens
    grpo_scale_by_std: bool
    baseline_momentum: float  # REINFORCE running-mean baseline

    @classmethod
    def of(cls, config) -> "PPOSpec":
        """The PPO fields of a config object that has them (the schema's AlgorithmConfig)."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})

    @property
    def uses_critic(self) -> bool:
        return ESTIMATORS[self.advantage].critic


@dataclass
class OptimSpec:
    lr: float
    weight_decay: float
    warmup_steps: int  # optimizer steps of linear warm-up, then constant
    max_grad_norm: Optional[float]


@dataclass
class Targets:
    """What the update regresses toward, fixed before the first minibatch. All [B, T], zero off
    action tokens; ``values`` and ``returns`` are zeros when no critic is trained."""

    advantages: torch.Tensor
    returns: torch.Tensor
    values: torch.Tensor  # critic estimates at collection time (value clipping is around these)
    ref_logprobs: torch.Tensor  # log p of the base model (adapter disabled); the policy's own without one
    # log p of the policy before the update, recomputed by the training forward over the whole
    # batch in a fixed order: PPO's ratio is taken against these, not against sampling's, which
    # depend (in the last bits) on which episodes happened to be generated together.
    logprobs: torch.Tensor

    def rows(self, index: torch.Tensor, width: int) -> "Targets":
        return Targets(*(getattr(self, f.name)[index, :width] for f in fields(self)))


@dataclass
class AdvantageState:
    """What an estimator carries between iterations (saved in checkpoints)."""

    baseline: float = 0.0  # REINFORCE's running mean of episode rewards


# ---- advantage estimators --------------------------------------------------------------------

MeanOverRanks = Callable[[torch.Tensor], torch.Tensor]


def _gae(batch: RolloutBatch, values, spec: PPOSpec, state: AdvantageState, mean_over_ranks: MeanOverRanks):
    mask = batch.action_mask
    adv, returns = A.gae(A.terminal_rewards(batch.rewards, mask), values, mask, spec.gamma, spec.lam)
    return (masked_whiten(adv, mask) if spec.normalize_advantages else adv), returns


def _grpo(batch: RolloutBatch, values, spec: PPOSpec, state: AdvantageState, mean_over_ranks: MeanOverRanks):
    per_episode = A.group_relative(batch.rewards, batch.group_ids, spec.grpo_scale_by_std)
    return A.broadcast_to_tokens(per_episode, batch.action_mask), torch.zeros_like(values)


def _reinforce(batch: RolloutBatch, values, spec: PPOSpec, state: AdvantageState, mean_over_ranks: MeanOverRanks):
    per_episode = A.reinforce_baseline(batch.rewards, state.baseline)
    # Every rank updates the baseline with the mean over all ranks: they stay equal, and a resumed
    # run (which restores rank 0's) continues exactly.
    state.baseline = A.update_running_mean(state.baseline, mean_over_ranks(batch.rewards.mean()), spec.baseline_momentum)
    return A.broadcast_to_tokens(per_episode, batch.action_mask), torch.zeros_like(values)


@dataclass(frozen=True)
class Estimator:
    fn: Callable
    critic: bool  # trains a value head


ESTIMATORS = {
    "gae": Estimator(_gae, critic=True),
    "grpo": Estimator(_grpo, critic=False),
    "reinforce": Estimator(_reinforce, critic=False),
}


# ---- the iteration ------------------------------------------------------------------------------

@torch.no_grad()
def prepare(policy, batch: RolloutBatch, spec: PPOSpec, state: AdvantageState, temperature: float,
            tolerance: float, mean_over_ranks: MeanOverRanks = lambda x: x) -> tuple[Targets, dict[str, float]]:
    """Recompute logprobs (they must match sampling's), values and reference logprobs; advantages."""
    critic, has_ref = spec.uses_critic, policy.has_reference
    logp, values, ref = [], [], []
    for idx in torch.arange(len(batch), device=batch.input_ids.device).split(spec.minibatch_size):
        ids, attn = batch.input_ids[idx], batch.attention_mask[idx]
        out = policy(ids, attn, temperature, critic)
        logp.append(out.logprobs)
        values.append(out.values if critic else torch.zeros_like(out.logprobs))
        ref.append(policy.reference_logprobs(ids, attn, temperature) if has_ref else out.logprobs)
    logp, values, ref = torch.cat(logp), torch.cat(values), torch.cat(ref)
    mask = batch.action_mask
    deviation = float(((logp - batch.old_logprobs).abs() * mask).max()) if mask.any() else 0.0
    if deviation > tolerance:
        raise RuntimeError(
            f"policy logprobs recomputed before the update differ from sampling-time logprobs by "
            f"{deviation:.3g} > logprob_tolerance={tolerance}: generation and training see different "
            "weights or inputs")
    adv, returns = ESTIMATORS[spec.advantage].fn(batch, values, spec, state, mean_over_ranks)
    stats = {"check/logprob_max_abs_dev": deviation, "train/advantage_mean": float(masked_mean(adv, mask))}
    if has_ref:
        kl = losses.kl_divergence(logp, ref, spec.kl_estimator)
        stats[f"rollout/kl_to_base_{spec.kl_estimator}"] = float(masked_mean(kl, mask))
    if critic:
        stats["train/explained_variance"] = float(losses.explained_variance(values, returns, mask))
    return Targets(adv, returns, values, ref, logp), stats


def minibatch_loss(policy, mb: RolloutBatch, t: Targets, spec: PPOSpec, temperature: float):
    """Clipped surrogate + entropy bonus (+ KL to base) (+ value loss); (loss, stats)."""
    mask = mb.action_mask
    out = policy(mb.input_ids, mb.attention_mask, temperature, spec.uses_critic)
    loss, st = losses.clipped_policy_loss(out.logprobs, t.logprobs, t.advantages, mask, spec.clip_eps, spec.dual_clip)
    ent_loss, est = losses.entropy_bonus(out.entropy, mask)
    total = loss + spec.entropy_coef * ent_loss
    stats = {"train/policy_loss": loss.detach(), "train/clip_frac": st["clip_frac"], "train/approx_kl_k3": st["approx_kl"],
             "train/ratio_mean": st["ratio_mean"], "train/entropy": est["entropy"]}
    if spec.kl_coef > 0:
        kl, kst = losses.kl_loss(out.logprobs, t.ref_logprobs, mask, spec.kl_estimator)
        total = total + spec.kl_coef * kl
        stats[f"train/kl_to_base_{spec.kl_estimator}"] = kst["kl_to_base"]
    if spec.uses_critic:
        vl, vst = losses.value_loss(out.values, t.values, t.returns, mask, spec.value_clip)
        total = total + spec.value_coef * vl
        stats.update({"train/value_loss": vl.detach(), "train/value_mean": vst["value_mean"]})
    stats["train/loss"] = total.detach()
    return total, stats


def update(policy, batch: RolloutBatch, targets: Targets, spec: PPOSpec, temperature: float,
           step: Callable[[torch.Tensor], dict[str, float]]) -> tuple[dict[str, float], int]:
    """``ppo_epochs`` shuffled passes of minibatch updates. ``step(loss)`` runs backward, clipping
    and the optimizer; it returns stats of its own (the gradient norm). Returns (mean stats,
    tokens processed)."""
    sums: Counter = Counter()
    steps = tokens = 0
    for _ in range(spec.ppo_epochs):
        perm = torch.randperm(len(batch), device=batch.input_ids.device)
        for idx in perm.split(spec.minibatch_size):
            mb = batch.select(idx)
            loss, stats = minibatch_loss(policy, mb, targets.rows(idx, mb.input_ids.shape[1]), spec, temperature)
            stats.update(step(loss))
            sums.update({k: float(v) for k, v in stats.items()})
            steps += 1
            tokens += int(mb.attention_mask.sum())
    return {k: v / steps for k, v in sums.items()}, tokens

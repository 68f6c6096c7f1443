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

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Optional

import torch

from lorarl import advantages as A
from lorarl import losses
from lorarl.ops import masked_mean, masked_whiten
from lorarl.specs import PPOSpec
from lorarl.types import RolloutBatch

log = logging.getLogger(__name__)


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
    # depend (in the last bits) on which episodes happened to be generated together. None: the
    # update's own forward gives them (``one_pass``).
    logprobs: Optional[torch.Tensor]

    def rows(self, index: torch.Tensor, width: int) -> "Targets":
        return Targets(*(None if (t := getattr(self, f.name)) is None else t[index, :width] for f in fields(self)))


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


# By name (``specs.ADVANTAGES`` lists the same names and which of them train a critic).
ESTIMATORS = {"gae": _gae, "grpo": _grpo, "reinforce": _reinforce}


# ---- the iteration ------------------------------------------------------------------------------

def one_pass(spec: PPOSpec, batch_size: int, policy) -> bool:
    """Whether every episode is trained on exactly once, in the first and only optimizer step
    (one epoch, one minibatch, no critic, no dropout): the policy before that step is the one its
    own forward sees, so that forward gives the old logprobs (the ratio starts at exactly 1, as in
    TRL's single-iteration GRPO) and the check, and no separate forward is needed."""
    return (spec.ppo_epochs == 1 and spec.minibatch_size >= batch_size and not spec.uses_critic
            and not has_dropout(policy))


def has_dropout(model: torch.nn.Module) -> bool:
    """Any dropout that train mode would switch on (remembered on the model: it does not change)."""
    found = getattr(model, "_lorarl_has_dropout", None)
    if found is None:
        found = any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()) or any(
            getattr(getattr(m, "config", None), "attention_dropout", 0) or 0 for m in model.modules())
        model.__dict__["_lorarl_has_dropout"] = found
    return found


STRAY_SHARE = 0.005  # tokens over the tolerance that are read as rounding: one in 200 (at least one)
STRAY_CEILING = 10.0  # ... and only while within this many times the tolerance


def check_logprobs(recomputed: torch.Tensor, sampled: torch.Tensor, mask: torch.Tensor, tolerance: float) -> float:
    """The largest deviation of the training forward's logprobs from sampling's. Raises when
    generation and training see different weights or inputs: more action tokens over
    ``tolerance`` than a stray one in 200, or any token over ``STRAY_CEILING`` times it. A
    stray token a little over is float rounding that a near-tie amplified (in fp32 about one
    iteration in a few hundred on the tiny model: one token at 2e-3 while the rest stay under
    2e-5); it is logged, not fatal. The error says where, since one far-off token and a whole
    episode off tell different stories."""
    if not mask.any():
        return 0.0
    gap = (recomputed - sampled).abs() * mask
    deviation, over = float(gap.max()), int((gap > tolerance).sum())
    if not over:
        return deviation
    row, col = divmod(int(gap.argmax()), gap.shape[1])
    where = (f"largest at row {row}, token {col}: sampled {float(sampled[row, col]):.4f}, recomputed "
             f"{float(recomputed[row, col]):.4f}; {over} of {int(mask.sum())} action tokens over")
    if over > max(1, int(STRAY_SHARE * int(mask.sum()))) or deviation > STRAY_CEILING * tolerance:
        raise RuntimeError(
            f"policy logprobs recomputed before the update differ from sampling-time logprobs by "
            f"{deviation:.3g} > logprob_tolerance={tolerance}: generation and training see different "
            f"weights or inputs ({where})")
    log.warning("logprob check: a stray token off by %.3g > logprob_tolerance=%g (%s): float rounding, "
                "not a weight or input mismatch; training goes on", deviation, tolerance, where)
    return deviation


@torch.no_grad()
def prepare(policy, batch: RolloutBatch, spec: PPOSpec, state: AdvantageState, temperature: float,
            tolerance: float, mean_over_ranks: MeanOverRanks = lambda x: x) -> tuple[Targets, dict[str, float]]:
    """One forward over the batch, in a fixed order, at its action tokens only: the old logprobs
    the update's ratio is taken against, the critic's values, and, for free, the check that they
    reproduce sampling's logprobs (``one_pass``: the update's own forward does all that). The
    reference (base model) forward runs only where the loss needs it (kl_coef > 0); otherwise
    the logged KL is measured on the first ``kl_metric_episodes`` episodes. Then advantages."""
    critic, mask, single = spec.uses_critic, batch.action_mask, one_pass(spec, len(batch), policy)
    logp, values, ref = [], [], []
    for idx in torch.arange(len(batch), device=batch.input_ids.device).split(spec.minibatch_size):
        ids, attn, act = batch.input_ids[idx], batch.attention_mask[idx], mask[idx]
        if not single:
            out = policy(ids, attn, temperature, critic, positions=act)
            logp.append(out.logprobs)
            values.append(out.values if critic else torch.zeros_like(out.logprobs))
        if spec.kl_coef > 0:
            ref.append(policy.reference_logprobs(ids, attn, temperature, positions=act))
    stats = {}
    if single:
        logp, values = None, torch.zeros_like(batch.old_logprobs)
    else:
        logp, values = torch.cat(logp), torch.cat(values)
        stats["check/logprob_max_abs_dev"] = check_logprobs(logp, batch.old_logprobs, mask, tolerance)
    adv, returns = ESTIMATORS[spec.advantage](batch, values, spec, state, mean_over_ranks)
    stats["train/advantage_mean"] = float(masked_mean(adv, mask))
    policy_logp = batch.old_logprobs if logp is None else logp  # equal within the checked tolerance
    kl_key = f"rollout/kl_to_base_{spec.kl_estimator}"
    ref = torch.cat(ref) if ref else None
    if ref is not None:
        stats[kl_key] = float(masked_mean(losses.kl_divergence(policy_logp, ref, spec.kl_estimator), mask))
    elif spec.kl_metric_episodes and policy.has_reference:
        k = min(spec.kl_metric_episodes, len(batch))
        ids, attn, act = batch.input_ids[:k], batch.attention_mask[:k], mask[:k]
        sample_ref = policy.reference_logprobs(ids, attn, temperature, positions=act)
        stats[kl_key] = float(masked_mean(losses.kl_divergence(policy_logp[:k], sample_ref, spec.kl_estimator), act))
    if critic:
        stats["train/explained_variance"] = float(losses.explained_variance(values, returns, mask))
    return Targets(adv, returns, values, policy_logp if ref is None else ref, logp), stats


def minibatch_loss(policy, mb: RolloutBatch, t: Targets, spec: PPOSpec, temperature: float, tolerance: float = float("inf")):
    """Clipped surrogate + entropy bonus (+ KL to base) (+ value loss); (loss, stats). Without old
    logprobs in ``t`` (``one_pass``) this forward's own are the old ones, checked first."""
    mask = mb.action_mask
    out = policy(mb.input_ids, mb.attention_mask, temperature, spec.uses_critic, positions=mask,
                 entropy_grad=spec.entropy_coef != 0)
    old, checked = t.logprobs, {}
    if old is None:
        old = out.logprobs.detach()
        checked = {"check/logprob_max_abs_dev": check_logprobs(old, mb.old_logprobs, mask, tolerance)}
    loss, st = losses.clipped_policy_loss(out.logprobs, old, t.advantages, mask, spec.clip_eps, spec.dual_clip)
    ent_loss, est = losses.entropy_bonus(out.entropy, mask)
    total = loss + spec.entropy_coef * ent_loss if spec.entropy_coef else loss
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
    return total, {**stats, **checked}


def update(policy, batch: RolloutBatch, targets: Targets, spec: PPOSpec, temperature: float,
           step: Callable[[torch.Tensor], dict[str, float]], tolerance: float = float("inf")) -> tuple[dict[str, float], int]:
    """``ppo_epochs`` shuffled passes of minibatch updates. ``step(loss)`` runs backward, clipping
    and the optimizer; it returns stats of its own (the gradient norm). Returns (mean stats,
    tokens processed)."""
    sums: Counter = Counter()
    steps = tokens = 0
    for _ in range(spec.ppo_epochs):
        perm = torch.randperm(len(batch), device=batch.input_ids.device)
        for idx in perm.split(spec.minibatch_size):
            mb = batch.select(idx)
            loss, stats = minibatch_loss(policy, mb, targets.rows(idx, mb.input_ids.shape[1]), spec, temperature, tolerance)
            stats.update(step(loss))
            sums.update({k: float(v) for k, v in stats.items()})
            steps += 1
            tokens += int(mb.attention_mask.sum())
    return {k: v / steps for k, v in sums.items()}, tokens

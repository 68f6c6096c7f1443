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
from lorarl.packing import CostModel, MicroBatch, filler, micro_batches
from lorarl.specs import PPOSpec
from lorarl.types import RolloutBatch

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


def informative_rows(batch: RolloutBatch, pad_to: Callable[[int], int] = lambda n: n) -> tuple[torch.Tensor, int]:
    """(indices, how many are informative) of the episodes an update learns from when uniform
    groups are skipped: those of groups whose rewards differ, topped up with others (in order) to
    ``pad_to(count)``: ranks must take as many optimizer steps as each other (``pad_to`` is the
    maximum over ranks), and a top-up episode's advantage is 0."""
    keep = A.informative(batch.rewards, batch.group_ids)
    count = int(keep.sum())
    order = torch.cat([keep.nonzero()[:, 0], (~keep).nonzero()[:, 0]])
    return order[: min(pad_to(count), len(keep))], count


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


@dataclass
class Batching:
    """How the training forwards split their episodes (``lorarl.packing``)."""

    budget: int  # tokens per forward/backward, padding included
    cost: CostModel
    pad_id: int
    share_prefixes: bool = True
    # Sharded strategies run a collective in every forward (FSDP2) or backward (DDP): every rank
    # must run as many micro-batches as the busiest one. Returns the maximum over ranks.
    max_over_ranks: Callable[[int], int] = lambda n: n

    def split(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> list[MicroBatch | None]:
        """Micro-batches of these episodes, padded with None (a no-op forward) to the ranks' maximum."""
        mbs = micro_batches(ids, attention_mask, self.budget, self.cost, self.pad_id, self.share_prefixes)
        return [*mbs, *[None] * (self.max_over_ranks(len(mbs)) - len(mbs))]


@torch.no_grad()
def prepare(policy, batch: RolloutBatch, spec: PPOSpec, state: AdvantageState, temperature: float,
            batching: Batching, check=None, mean_over_ranks: MeanOverRanks = lambda x: x
            ) -> tuple[Targets, dict[str, float]]:
    """Forwards over the batch, in micro-batches, at its action tokens only: the old logprobs the
    update's ratio is taken against, the critic's values, and, for free, the logprob ``check``
    (``one_pass``: the update's own forward does all that). The reference (base model) forward
    runs only where the loss needs it (kl_coef > 0); otherwise the logged KL is measured on the
    first ``kl_metric_episodes`` episodes. Then advantages."""
    critic, mask, single = spec.uses_critic, batch.action_mask, one_pass(spec, len(batch), policy)
    stats: dict[str, float] = {}
    logp = values = ref = None
    if not single or spec.kl_coef > 0:
        logp, values, ref = _forwards(policy, batch, batching, temperature, critic, not single, spec.kl_coef > 0)
    if single:
        logp, values = None, torch.zeros_like(batch.old_logprobs)
    else:
        values = values if critic else torch.zeros_like(logp)
        stats.update(check(logp, batch.old_logprobs, mask) if check else {})
    adv, returns = ESTIMATORS[spec.advantage](batch, values, spec, state, mean_over_ranks)
    stats["train/advantage_mean"] = float(masked_mean(adv, mask))
    policy_logp = batch.old_logprobs if logp is None else logp  # equal within the checked tolerance
    kl_key = f"rollout/kl_to_base_{spec.kl_estimator}"
    if ref is not None:
        stats[kl_key] = float(masked_mean(losses.kl_divergence(policy_logp, ref, spec.kl_estimator), mask))
    elif spec.kl_metric_episodes and policy.has_reference:
        k = torch.arange(min(spec.kl_metric_episodes, len(batch)), device=mask.device)
        sample = batch.select(k)
        _, _, sample_ref = _forwards(policy, sample, batching, temperature, False, False, True)
        stats[kl_key] = float(masked_mean(losses.kl_divergence(policy_logp[k, :sample_ref.shape[1]], sample_ref,
                                                               spec.kl_estimator), sample.action_mask))
    if critic:
        stats["train/explained_variance"] = float(losses.explained_variance(values, returns, mask))
    return Targets(adv, returns, values, policy_logp if ref is None else ref, logp), stats


def _forwards(policy, batch: RolloutBatch, batching: Batching, temperature: float, critic: bool, own: bool,
              reference: bool):
    """(policy log p, values, reference log p) at the batch's action tokens, each [B, T] or None."""
    ids, mask = batch.input_ids, batch.action_mask
    logp = torch.zeros_like(batch.old_logprobs) if own else None
    values = torch.zeros_like(batch.old_logprobs) if own and critic else None
    ref = torch.zeros_like(batch.old_logprobs) if reference else None
    for mb in batching.split(ids, batch.attention_mask):
        rows = mb.episodes if mb is not None else None
        mb, wanted = (mb, mask[rows]) if mb is not None else filler(ids)
        sub_ids = ids[rows] if rows is not None else mb.input_ids
        if own:
            out = policy.packed(mb, wanted, sub_ids, temperature, critic, entropy_grad=False)
            if rows is not None:
                logp[rows] = out.logprobs
                if critic:
                    values[rows] = out.values
        if reference:
            out = policy.packed(mb, wanted, sub_ids, temperature, reference=True)
            if rows is not None:
                ref[rows] = out.logprobs
    return logp, values, ref


def micro_loss(policy, mb: MicroBatch, ids: torch.Tensor, mask: torch.Tensor, t: Targets, spec: PPOSpec,
               temperature: float):
    """Clipped surrogate + entropy bonus (+ KL to base) (+ value loss) over the episodes of one
    micro-batch (``ids``, ``mask``, ``t``: their rows), as token means: (loss, stats, log p)."""
    out = policy.packed(mb, mask, ids, temperature, spec.uses_critic, entropy_grad=spec.entropy_coef != 0)
    old = t.logprobs if t.logprobs is not None else out.logprobs.detach()
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
    return total, stats, out.logprobs.detach()


def minibatch_update(policy, mb: RolloutBatch, t: Targets, spec: PPOSpec, temperature: float, batching: Batching,
                     backward: Callable[[torch.Tensor, bool], None], check=None) -> dict[str, float]:
    """One optimizer step's gradients: the minibatch's loss (token means over all its action
    tokens) as a sum over micro-batches, each weighted by its share of the action tokens and
    backpropagated at once (its activations freed before the next). The gradient is the one big
    forward's, whatever the split. Without old logprobs in ``t`` (``one_pass``) the micro-batches'
    own are the old ones: they are checked (``check``) before the step. Returns token-weighted stats."""
    total = max(mb.num_action_tokens, 1)
    sums: Counter = Counter()
    own = torch.zeros_like(mb.old_logprobs) if t.logprobs is None else None
    micros = batching.split(mb.input_ids, mb.attention_mask)
    for k, micro in enumerate(micros):
        last = k == len(micros) - 1
        if micro is None:  # another rank has more micro-batches: a forward and backward that change nothing
            pad_mb, wanted = filler(mb.input_ids)
            out = policy.packed(pad_mb, wanted, pad_mb.input_ids, temperature, spec.uses_critic)
            zero = out.logprobs.sum() * 0.0 + (out.values.sum() * 0.0 if out.values is not None else 0.0)
            backward(zero, last)
            continue
        rows = micro.episodes
        mask = mb.action_mask[rows]
        loss, stats, logp = micro_loss(policy, micro, mb.input_ids[rows], mask, t.rows(rows, mb.input_ids.shape[1]),
                                       spec, temperature)
        weight = int(mask.sum()) / total
        backward(loss * weight, last)
        sums.update({k: float(v) * weight for k, v in stats.items()})
        if own is not None:
            own[rows] = logp
    if own is not None and check:
        sums.update(check(own, mb.old_logprobs, mb.action_mask))
    return dict(sums)


def update(policy, batch: RolloutBatch, targets: Targets, spec: PPOSpec, temperature: float, batching: Batching,
           backward: Callable[[torch.Tensor, bool], None], step: Callable[[], dict[str, float]],
           check=None, replay: Optional[Callable] = None) -> tuple[dict[str, float], int]:
    """``ppo_epochs`` shuffled passes of minibatch updates. ``backward(loss, last)`` backpropagates
    a micro-batch (``last``: the minibatch's last); ``step()`` clips and steps the optimizer and returns stats of its own (the
    gradient norm). ``replay(policy, batching, backward)`` (``sft.Replay``) adds a supervised loss's
    gradients to each step, before the minibatch's own (so that the last backward, where DDP
    all-reduces, is still the minibatch's last). Returns (mean stats, tokens processed)."""
    sums: Counter = Counter()
    steps = tokens = 0
    for _ in range(spec.ppo_epochs):
        perm = torch.randperm(len(batch), device=batch.input_ids.device)
        for idx in perm.split(spec.minibatch_size):
            mb = batch.select(idx)
            extra = replay(policy, batching, lambda loss: backward(loss, False)) if replay else {}
            stats = minibatch_update(policy, mb, targets.rows(idx, mb.input_ids.shape[1]), spec, temperature,
                                     batching, backward, check)
            stats.update(extra)
            stats.update(step())
            sums.update({k: float(v) for k, v in stats.items()})
            steps += 1
            tokens += int(mb.attention_mask.sum())
    return {k: v / steps for k, v in sums.items()}, tokens

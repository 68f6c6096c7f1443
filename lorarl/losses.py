"""Loss terms of the PPO update: pure functions, tensors in, (loss, stats) out.

Losses are token-level means over ``action_mask`` across the whole minibatch (every generated
token weighs the same, as in DAPO/verl "token-mean"), not per-sequence means.
"""

from __future__ import annotations

import torch

from lorarl.ops import masked_mean


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    action_mask: torch.Tensor,
    clip_eps: float,
    dual_clip: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate, optionally with dual clip (Ye et al. 2020) for negative advantages.

    stats: clip_frac (share of tokens where the clipped branch was taken), approx_kl (k3
    estimate of KL(old || new) from the same samples), ratio_mean.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss_tok = torch.maximum(unclipped, clipped)  # pessimistic bound of the surrogate
    if dual_clip is not None:
        # For A < 0 the loss is bounded by -c * A so a huge ratio cannot blow up the update.
        loss_tok = torch.where(advantages < 0, torch.minimum(loss_tok, -dual_clip * advantages), loss_tok)
    stats = {
        "clip_frac": masked_mean((clipped > unclipped).float(), action_mask).detach(),
        "approx_kl": masked_mean(torch.exp(-log_ratio) - 1 + log_ratio, action_mask).detach(),  # k3
        "ratio_mean": masked_mean(ratio, action_mask).detach(),
    }
    return masked_mean(loss_tok, action_mask), stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    action_mask: torch.Tensor,
    clip_eps: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """0.5 * (V - R)^2, with PPO's optional value clipping around the rollout-time values."""
    err = (values - returns) ** 2
    if clip_eps is not None:
        v_clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
        err = torch.maximum(err, (v_clipped - returns) ** 2)
    stats = {"value_mean": masked_mean(values, action_mask).detach()}
    return 0.5 * masked_mean(err, action_mask), stats


def kl_divergence(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from samples of the policy (Schulman 2020).

    k1 = log p - log q (unbiased, high variance, can be negative); k2 = 0.5 (log p - log q)^2;
    k3 = q/p - 1 - log(q/p) (unbiased, always >= 0; GRPO's choice).
    """
    log_r = ref_logprobs - logprobs  # log q/p
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return 0.5 * log_r**2
    if estimator == "k3":
        return torch.exp(log_r) - 1 - log_r
    raise ValueError(f"unknown KL estimator {estimator!r}; expected k1, k2 or k3")


def kl_loss(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, action_mask: torch.Tensor, estimator: str
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    kl = masked_mean(kl_divergence(logprobs, ref_logprobs, estimator), action_mask)
    return kl, {"kl_to_base": kl.detach()}


def entropy_bonus(entropy: torch.Tensor, action_mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Negative mean entropy: adding coef * this loss rewards keeping the policy stochastic."""
    ent = masked_mean(entropy, action_mask)
    return -ent, {"entropy": ent.detach()}


def explained_variance(values: torch.Tensor, returns: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
    """1 - Var(R - V) / Var(R) over action tokens: 1 is a perfect critic, <= 0 is useless. When the
    returns do not vary (every episode got the same reward) there is nothing to explain: 0."""
    var_r = masked_mean((returns - masked_mean(returns, action_mask)) ** 2, action_mask)
    resid = returns - values
    var_res = masked_mean((resid - masked_mean(resid, action_mask)) ** 2, action_mask)
    if var_r < 1e-8:
        return torch.zeros((), dtype=var_r.dtype, device=var_r.device)
    return 1 - var_res / var_r

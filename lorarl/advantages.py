"""Advantage estimators: pure functions of tensors.

All return per-token advantages ``[B, T]`` that are zero wherever ``action_mask`` is False.
Rewards are episodic (one scalar per episode), placed on the last action token, as in
multi-turn agent RL where the environment only judges the finished episode.

Departure from token-level PPO papers: GAE runs over *action tokens only*. Observation tokens
(env text) are skipped, so the value of the next action token bootstraps the current one across
a turn boundary, and the discount applies per generated token.
"""

from __future__ import annotations

import torch


def terminal_rewards(rewards: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
    """[B] episode rewards -> [B, T] with each reward on its episode's last action token."""
    positions = torch.arange(action_mask.shape[1], device=action_mask.device)
    last = torch.where(action_mask, positions, -1).max(dim=1).values  # -1: no action token
    out = torch.zeros(action_mask.shape, dtype=rewards.dtype, device=rewards.device)
    has_action = last >= 0
    out[has_action, last[has_action]] = rewards[has_action]
    return out


def gae(
    token_rewards: torch.Tensor,
    values: torch.Tensor,
    action_mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over action tokens; returns (advantages, returns).

    delta_t = r_t + gamma * V(next action token) - V_t ; A_t = delta_t + gamma * lam * A_next.
    The value after the last action token is 0 (episode over).
    """
    B, T = values.shape
    adv = torch.zeros_like(values)
    next_value = torch.zeros(B, dtype=values.dtype, device=values.device)
    next_adv = torch.zeros_like(next_value)
    for t in reversed(range(T)):
        m = action_mask[:, t]
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]  # one-step TD error
        a_t = delta + gamma * lam * next_adv  # discounted sum of TD errors
        adv[:, t] = torch.where(m, a_t, 0.0)
        next_value = torch.where(m, values[:, t], next_value)  # skip observation tokens
        next_adv = torch.where(m, a_t, next_adv)
    returns = (adv + values) * action_mask  # regression target of the critic
    return adv, returns


def group_relative(
    rewards: torch.Tensor, group_ids: torch.Tensor, scale_by_std: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """GRPO advantage per episode: (R - mean of its group) / (std of its group + eps).

    Groups are episodes sampled for the same task; a group of identical rewards gets 0.
    std is the unbiased sample std, as in the GRPO paper; a group of size 1 gets advantage 0.
    """
    uniq, inv = torch.unique(group_ids, return_inverse=True)
    n = torch.zeros(len(uniq), dtype=rewards.dtype, device=rewards.device).index_add_(0, inv, torch.ones_like(rewards))
    total = torch.zeros_like(n).index_add_(0, inv, rewards)
    mean = total / n
    centered = rewards - mean[inv]
    if not scale_by_std:
        return centered
    sq = torch.zeros_like(n).index_add_(0, inv, centered**2)
    std = torch.sqrt(sq / (n - 1).clamp(min=1))
    return centered / (std[inv] + eps)


def informative(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """bool [B]: episodes whose group's rewards are not all equal. The others get a GRPO
    advantage of exactly 0: their policy gradient is zero, whatever the update does."""
    uniq, inv = torch.unique(group_ids, return_inverse=True)
    lo = torch.full((len(uniq),), float("inf"), dtype=rewards.dtype, device=rewards.device).scatter_reduce(
        0, inv, rewards, "amin")
    hi = torch.full_like(lo, float("-inf")).scatter_reduce(0, inv, rewards, "amax")
    return (hi > lo)[inv]


def reinforce_baseline(rewards: torch.Tensor, baseline: float) -> torch.Tensor:
    """REINFORCE advantage per episode: R - b, with b a running mean of past rewards."""
    return rewards - baseline


def update_running_mean(baseline: float, rewards: torch.Tensor, momentum: float) -> float:
    """Exponential moving average b <- m * b + (1 - m) * mean(R), updated after the batch is used."""
    return momentum * baseline + (1.0 - momentum) * float(rewards.mean())


def broadcast_to_tokens(episode_values: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
    """[B] per-episode advantage -> [B, T] on every action token of the episode."""
    return episode_values[:, None].to(torch.float32) * action_mask

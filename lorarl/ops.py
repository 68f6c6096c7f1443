"""Small tensor helpers shared by the RL math and the policy.

Convention: every ``*_mask`` is a bool tensor where True means "this token counts".
Per-token quantities are aligned with ``input_ids``: position t holds the value for token t
(e.g. log p(x_t | x_<t)); position 0 has no prediction and holds 0.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over positions where mask is True; 0 when nothing counts (avoids NaN)."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mean = masked_mean(x, mask)
    return masked_mean((x - mean) ** 2, mask)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero-mean unit-variance over counted positions; uncounted positions become 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counting only real tokens, so left- and right-padded rows agree with generate()."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def shift_to_tokens(per_prediction: torch.Tensor) -> torch.Tensor:
    """[B, T-1] values for predictions of tokens 1..T-1 -> [B, T] aligned with tokens (0 at t=0)."""
    return torch.nn.functional.pad(per_prediction, (1, 0), value=0.0)


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(x_t | x_<t) for every token, aligned with input_ids ([B, T], 0 at t=0).

    Uses the same temperature as sampling so the ratio to sampling-time logprobs starts at 1.
    """
    logp = torch.log_softmax(logits[:, :-1].float() / temperature, dim=-1)
    picked = logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return shift_to_tokens(picked)


def token_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of the next-token distribution that produced each token ([B, T], 0 at t=0)."""
    logp = torch.log_softmax(logits[:, :-1].float() / temperature, dim=-1)
    return shift_to_tokens(-(logp.exp() * logp).sum(-1))

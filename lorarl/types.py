"""The typed batch that flows from rollout collection to the PPO update."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class RolloutBatch:
    """B episodes, right-padded to T tokens. Every ``*_mask`` is True where a token counts.

    input_ids:      long  [B, T]  prompt + sampled actions + env observations, in order
    attention_mask: bool  [B, T]  real tokens (False on right padding)
    action_mask:    bool  [B, T]  tokens sampled by the policy: the only ones trained on (none in an
                                  episode the env failed, outcome env_error)
    old_logprobs:   float [B, T]  log p(x_t | x_<t) recorded at sampling time (0 off actions); the
                                  training forward must reproduce them (the logprob check)
    rewards:        float [B]     episode return from the env outcome table
    group_ids:      long  [B]     task index: episodes of one task share it (GRPO groups); an
                                  env_error episode has a negative group of its own
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    action_mask: torch.Tensor
    old_logprobs: torch.Tensor
    rewards: torch.Tensor
    group_ids: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> "RolloutBatch":
        return RolloutBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def select(self, index: torch.Tensor) -> "RolloutBatch":
        """Rows ``index``, trimmed to the longest real row so minibatches carry no dead columns."""
        rows = {f.name: getattr(self, f.name)[index] for f in fields(self)}
        width = int(rows["attention_mask"].sum(-1).max())
        for name in ("input_ids", "attention_mask", "action_mask", "old_logprobs"):
            rows[name] = rows[name][:, :width]
        return RolloutBatch(**rows)

    @property
    def num_action_tokens(self) -> int:
        return int(self.action_mask.sum())

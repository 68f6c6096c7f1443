"""Episode reward from the environment's outcome label.

AgentBench-style envs judge a finished episode with an outcome (correct, incorrect, ...). The
trainer maps that label to a scalar here, so a reward scheme is a config choice and the same env
serves every scheme. Envs may also return shaped per-step rewards; they are added with a weight.
"""

from __future__ import annotations

from dataclasses import dataclass

OUTCOMES = ("correct", "incorrect", "invalid_action", "task_limit_reached", "context_limit", "env_error")


@dataclass
class RewardTable:
    """Reward per outcome (presets in conf/reward/). env_error episodes are not trained on
    (``rollout.Episode.trainable``); their value shows only in the logged mean reward."""

    correct: float
    incorrect: float
    task_limit_reached: float  # round limit hit; also used when the context is full
    invalid_action: float  # reply the env could not parse
    env_error: float  # the env failed, not the agent
    env_reward_weight: float  # weight of the env's own summed step rewards

    def __call__(self, outcome: str, env_return: float) -> float:
        if outcome not in OUTCOMES:
            raise ValueError(f"env reported unknown outcome {outcome!r}; expected one of {OUTCOMES}")
        key = "task_limit_reached" if outcome == "context_limit" else outcome
        return getattr(self, key) + self.env_reward_weight * env_return

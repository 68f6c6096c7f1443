"""Make the Gymnasium envs a run or an evaluation plays on (config errors become one line), and
the collector that plays them."""

from __future__ import annotations

import gymnasium as gym

import envs  # noqa: F401  registers lorarl/* (a library user need not import it first)
from lorarl.rollout import RolloutCollector
from lorarl.specs import SamplingSpec
from lorarl.schema import ConfigError, EnvConfig


def build_envs(env: EnvConfig, count: int) -> list[gym.Env]:
    try:
        return [gym.make(env.id, **env.kwargs) for _ in range(count)]
    except gym.error.Error as e:
        known = ", ".join(k for k in gym.registry if k.startswith("lorarl/"))
        raise ConfigError(f"env.id={env.id!r}: {e} (lorarl envs: {known})") from None
    except (TypeError, ValueError, KeyError, OSError, RuntimeError) as e:  # bad kwargs, task file, no sandbox
        raise ConfigError(f"env {env.id}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def make_collector(env: EnvConfig, played: list[gym.Env], tokenizer, sampling: SamplingSpec, rewards) -> RolloutCollector:
    """A collector over ``envs`` with the env config's prompt, time budgets and stepping threads."""
    return RolloutCollector(played, tokenizer, sampling, rewards, env.system_prompt, env.episode_timeout_s,
                            env.step_workers, env.straggler_timeout_s)

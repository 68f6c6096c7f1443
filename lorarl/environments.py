"""Make the Gymnasium envs a run or an evaluation plays on (config errors become one line)."""

from __future__ import annotations

import gymnasium as gym

from lorarl.schema import ConfigError, EnvConfig


def build_envs(env: EnvConfig, count: int) -> list[gym.Env]:
    try:
        return [gym.make(env.id, **env.kwargs) for _ in range(count)]
    except gym.error.Error as e:
        known = ", ".join(k for k in gym.registry if k.startswith("lorarl/"))
        raise ConfigError(f"env.id={env.id!r}: {e} (lorarl envs: {known})") from None
    except (TypeError, ValueError, KeyError, OSError, RuntimeError) as e:  # bad kwargs, task file, no sandbox
        raise ConfigError(f"env {env.id}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None

"""A test env: TargetWord whose steps take a random time (from an unseeded RNG, so it differs in
every run and process), registered as ``jitter/TargetWord-v0``. Training runs name it as
``env.id=jitter:jitter/TargetWord-v0`` (Gymnasium imports this module first)."""

import random
import time

import gymnasium as gym
from gymnasium.envs.registration import register, registry

from envs.target_word import TargetWordEnv

_clock = random.SystemRandom()


class Jittered(gym.Wrapper):
    def __init__(self, max_delay_s: float = 0.05, **kwargs):
        super().__init__(TargetWordEnv(**kwargs))
        self.max_delay_s = max_delay_s

    def reset(self, **kwargs):
        time.sleep(_clock.uniform(0, self.max_delay_s))
        return self.env.reset(**kwargs)

    def step(self, action):
        time.sleep(_clock.uniform(0, self.max_delay_s))
        return self.env.step(action)


if "jitter/TargetWord-v0" not in registry:
    register(id="jitter/TargetWord-v0", entry_point=Jittered)

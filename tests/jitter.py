"""A test env: TargetWord whose steps take a random time (from an unseeded RNG, so it differs in
every run and process), registered as ``jitter/TargetWord-v0``. Training runs name it as
``env.id=jitter:jitter/TargetWord-v0`` (Gymnasium imports this module first).

``gate_file``: after ``gate_after_resets`` episodes, each env waits at reset until that file
exists, so a test can interrupt a run at a known point however fast or loaded the machine."""

import os
import random
import time

import gymnasium as gym
from gymnasium.envs.registration import register, registry

from envs.target_word import TargetWordEnv

_clock = random.SystemRandom()


class Jittered(gym.Wrapper):
    def __init__(self, max_delay_s: float = 0.05, gate_file: str = "", gate_after_resets: int = 0, **kwargs):
        super().__init__(TargetWordEnv(**kwargs))
        self.max_delay_s = max_delay_s
        self.gate_file, self.gate_after_resets, self.resets = gate_file, gate_after_resets, 0

    def reset(self, **kwargs):
        self.resets += 1
        while self.gate_file and self.resets > self.gate_after_resets and not os.path.exists(self.gate_file):
            time.sleep(0.05)
        time.sleep(_clock.uniform(0, self.max_delay_s))
        return self.env.reset(**kwargs)

    def step(self, action):
        time.sleep(_clock.uniform(0, self.max_delay_s))
        return self.env.step(action)


if "jitter/TargetWord-v0" not in registry:
    register(id="jitter/TargetWord-v0", entry_point=Jittered)

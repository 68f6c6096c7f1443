"""A test env: TargetWord whose steps take a random time (from an unseeded RNG, so it differs in
every run and process), registered as ``jitter/TargetWord-v0``. Training runs name it as
``env.id=jitter:jitter/TargetWord-v0`` (Gymnasium imports this module first).

``gate_file``: after ``gate_after_resets`` resets in the process (all its envs together), a
reset waits until that file exists, so a test can interrupt a run at a known point however fast
or loaded the machine."""

import os
import random
import threading
import time

import gymnasium as gym
from gymnasium.envs.registration import register, registry

from envs.target_word import TargetWordEnv

_clock = random.SystemRandom()
_lock, _resets = threading.Lock(), [0]  # resets in this process, all envs together


class Jittered(gym.Wrapper):
    def __init__(self, max_delay_s: float = 0.05, gate_file: str = "", gate_after_resets: int = 0, **kwargs):
        super().__init__(TargetWordEnv(**kwargs))
        self.max_delay_s = max_delay_s
        self.gate_file, self.gate_after_resets = gate_file, gate_after_resets

    def reset(self, **kwargs):
        with _lock:
            _resets[0] += 1
            n = _resets[0]
        while self.gate_file and n > self.gate_after_resets and not os.path.exists(self.gate_file):
            time.sleep(0.05)
        time.sleep(_clock.uniform(0, self.max_delay_s))
        return self.env.reset(**kwargs)

    def step(self, action):
        time.sleep(_clock.uniform(0, self.max_delay_s))
        return self.env.step(action)


if "jitter/TargetWord-v0" not in registry:
    register(id="jitter/TargetWord-v0", entry_point=Jittered)

"""Gymnasium wrappers for testing and benchmarking the envs' callers (no torch)."""

from __future__ import annotations

import time

import gymnasium as gym


class Delayed(gym.Wrapper):
    """The wrapped env, with every step taking ``seconds`` longer: a slow shell command or query,
    to test and measure how a collector copes with a slow env."""

    def __init__(self, env: gym.Env, seconds: float):
        super().__init__(env)
        self.seconds = seconds

    def step(self, action):
        time.sleep(self.seconds)
        return self.env.step(action)

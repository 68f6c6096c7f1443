"""TargetWord: reply with the word you were shown. A toy env that exists to prove learning.

Description:
    Each episode shows one word drawn from a small vocabulary; the agent must reply with exactly
    that word. A wrong reply is answered with a reminder until ``max_turns`` replies were made.
Actions:
    Any text (``spaces.Text``); leading/trailing whitespace is ignored.
Observations:
    The instruction text, then "Wrong, ..." reminders.
Rewards:
    0 on intermediate turns. On the last turn, a dense score in [0, 1]: each position of the
    target earns credit 1 - |code(reply[i]) - code(target[i])| / 26 (at least 0), summed and
    divided by max(len(reply), len(target)); 1 only for an exact match. Graded credit for "near"
    characters gives a random-weight model a signal from its first iterations.
Episode end:
    terminated on an exact match (outcome "correct"); truncated after ``max_turns`` wrong replies
    (outcome "incorrect"). ``info["outcome"]`` and ``info["task_type"]`` (the word) are set.
Arguments:
    words: vocabulary to draw targets from; max_turns: replies allowed per episode.
"""

from __future__ import annotations

import gymnasium as gym

from envs.text_space import text_space


def similarity(reply: str, target: str) -> float:
    credit = sum(max(0.0, 1.0 - abs(ord(a) - ord(b)) / 26) for a, b in zip(reply, target))
    return credit / max(len(reply), len(target), 1)


class TargetWordEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, words: tuple[str, ...] | list[str] = ("yes", "no", "go", "up"), max_turns: int = 2):
        if not words or not all(isinstance(w, str) and w for w in words):
            raise ValueError(f"words must be non-empty strings, got {list(words)!r}")
        self.words = list(words)
        self.max_turns = max_turns
        self.observation_space = text_space()
        self.action_space = text_space()
        self.target, self._turn = "", 0  # the word of the current episode

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.target = self.words[int(self.np_random.integers(len(self.words)))]
        self._turn = 0
        return f"Reply with exactly this word: {self.target}", {"task_type": self.target}

    def step(self, action: str):
        self._turn += 1
        reply = str(action).strip()
        info = {"task_type": self.target, "rounds": self._turn}
        if reply == self.target:
            return "Correct.", 1.0, True, False, {**info, "outcome": "correct"}
        if self._turn >= self.max_turns:
            return "Wrong.", similarity(reply, self.target), False, True, {**info, "outcome": "incorrect"}
        return f"Wrong, reply with exactly: {self.target}", 0.0, False, False, info

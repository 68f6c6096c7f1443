"""An oracle agent for each registered env: ``make_oracle(env)`` after ``env.reset`` gives a
function ``observation -> reply`` that solves the episode through the env's own protocol (or
raises ``NoSolution`` when the task carries nothing to execute). Used by the tests and to write
SFT transcripts (``scripts/make_transcripts.py``). No torch, no lorarl."""

from __future__ import annotations

from collections.abc import Callable

from envs.db_bench.oracle import Oracle as DBOracle
from envs.os_interaction.oracle import NoSolution
from envs.os_interaction.oracle import Oracle as OSOracle

__all__ = ["NoSolution", "make_oracle"]

_ORACLES: dict[str, Callable] = {
    "lorarl/DBBench-v0": lambda env: DBOracle(env.task).reply,
    "lorarl/OSInteraction-v0": lambda env: OSOracle(env.task).reply,
    "lorarl/TargetWord-v0": lambda env: (lambda _obs, word=env.target: word),
}


def make_oracle(env) -> Callable[[str], str]:
    key = env.spec.id if getattr(env, "spec", None) else None
    if key not in _ORACLES:
        raise NoSolution(f"no oracle for env {key!r}; known: {', '.join(_ORACLES)}")
    return _ORACLES[key](env.unwrapped)

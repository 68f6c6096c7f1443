"""The generator's task families and which one draws a skill.

``generator.py`` is the first family (files under /root, one phrasing per skill); ``wide.py`` the
AgentBench-shaped one. ``skills=None`` draws from the first family only, with the same draws as
before the second existed, so studies and pinned results keep their tasks; ``wide`` and ``all``
name the families in a config.
"""

from __future__ import annotations

import random

from envs import task_env
from envs.os_interaction import generator, wide
from envs.os_interaction.tasks import OSTask

SKILLS = {**generator.SKILLS, **wide.SKILLS}
WIDE_SKILLS = tuple(wide.SKILLS)
GROUPS = {"wide": WIDE_SKILLS, "all": tuple(SKILLS)}
USER_SKILLS = generator.USER_SKILLS + wide.USER_SKILLS  # they add users: root on the host only


def expand_skills(skills: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """``skills=wide`` or ``[all, ...]``, as the config writes them, into the skills they name."""
    return task_env.expand_skills(skills, GROUPS)


def generate(seed: int, skills: tuple[str, ...] | None = None) -> OSTask:
    rng = random.Random(seed)
    names = sorted(skills) if skills else sorted(generator.SKILLS)
    return SKILLS[rng.choice(names)](rng)

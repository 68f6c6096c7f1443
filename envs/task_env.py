"""What the task envs (db_bench, os_interaction) share: text spaces, picking a file task, the step
skeleton (round counting, environment failures), and ending an episode with an AgentBench
outcome label."""

from __future__ import annotations

import warnings

import gymnasium as gym

from envs.text_space import text_space


SOURCES = ("generator", "agentbench", "lifelong")
# Far past any reply a policy generates (max_new_tokens), and small enough that parsing one (a
# 16k-element answer list) costs milliseconds and a few MB.
MAX_REPLY_CHARS = 32768
PROMPT_FORMATS = ("text", "chat")


class EnvFailure(RuntimeError):
    """The environment itself broke (its database or sandbox died): the episode ends "env_error"."""


def skill_names(skills) -> tuple[str, ...] | None:
    """Generator skills as given: one name (``skills=count``) or a list of them."""
    if skills is None:
        return None
    return (skills,) if isinstance(skills, str) else tuple(skills)


def expand_skills(skills: tuple[str, ...] | None, groups: dict[str, tuple[str, ...]]) -> tuple[str, ...] | None:
    """Skill names as a config writes them, a family's name (``wide``, ``all``) standing for its skills."""
    if skills is None:
        return None
    return tuple(dict.fromkeys(s for name in skills for s in groups.get(name, (name,))))


def check_task_args(source: str, path, skills, known_skills, prompt_format: str = "text") -> None:
    """Constructor arguments both envs take: a task source, its file(s), generator skills."""
    if source not in SOURCES:
        raise ValueError(f"source={source!r}: expected generator, agentbench or lifelong")
    if source != "generator" and not path:
        raise ValueError(f"source={source!r} needs path= to a task file")
    if source == "generator" and path:
        raise ValueError(f"path={path!r} is given, but source='generator' draws generated tasks and would ignore it: "
                         "set source=agentbench or source=lifelong")
    unknown = set(skills or ()) - set(known_skills)
    if unknown:
        raise ValueError(f"unknown skills {sorted(unknown)}; known: {', '.join(known_skills)}")
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"prompt_format={prompt_format!r}: expected text or chat")


def required(entry, path: str, where: str):
    """entry["a"]["b"] for path "a.b" of a task file's entry, or a ValueError naming the task and
    the missing field (one line for the user, never a KeyError trace)."""
    value = entry
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise ValueError(f"{where}: missing field {path!r}")
        value = value[key]
    return value


def positive(name: str, value, integer: bool = False) -> None:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or value <= 0:
        raise ValueError(f"{name}={value!r}: must be a positive {'integer' if integer else 'number'}")


class TaskEnv(gym.Env):
    """Subclasses set ``self.tasks`` (file tasks; empty for a generator) and implement
    ``_step(text)`` (one reply: act on it or end the episode), ``_info()`` (the per-step info) and
    ``_release()`` (free the episode's database or sandbox). ``_settle(outcome)`` may turn the
    outcome of an ending episode into another (db_bench judges a modified table however the
    episode ended, as AgentBench does).

    Prompt formats: "text" puts everything the agent is told first in the observation; "chat"
    follows AgentBench's conversation, where the instructions (and the one-shot example) are
    earlier turns: ``info["history"]`` holds them as chat messages and the observation is the
    last user turn."""

    metadata = {"render_modes": []}

    def __init__(self):
        self.observation_space = text_space()
        self.action_space = text_space()
        self.tasks: list = []
        self.playable: list[int] = []  # indexes of the tasks that are not refused
        self.task_index = -1
        self.rounds = 0  # replies in the current episode
        self.setup_error: str | None = None  # the episode cannot be played (-> env_error)

    @property
    def num_tasks(self) -> int | None:
        return len(self.tasks) if self.tasks else None

    @property
    def refused(self) -> dict[int, str]:
        """File tasks that cannot be judged here, by index, with the reason (never drawn)."""
        return {i: t.refused for i, t in enumerate(self.tasks) if getattr(t, "refused", None)}

    def _use_tasks(self, tasks: list, where) -> None:
        """Play ``tasks`` (loaded from ``where``); a warning names how many are refused and why."""
        self.tasks = tasks
        self.playable = [i for i, t in enumerate(tasks) if not getattr(t, "refused", None)]
        if tasks and not self.playable:
            raise ValueError(f"{where}: every task is refused, e.g. task 0: {tasks[0].refused}")
        if refused := self.refused:
            warnings.warn(f"{len(refused)} of {len(tasks)} tasks in {where} are refused (never drawn; "
                          f"env.unwrapped.refused has each reason), e.g. task {min(refused)}: {refused[min(refused)]}",
                          stacklevel=3)

    def _pick(self, options: dict) -> int:
        """``options["task_index"]`` picks file task i (a refused one plays as env_error, with the
        reason); otherwise the seeded RNG draws one that is not refused (-1: generator)."""
        if not self.tasks:
            return -1
        if "task_index" in options:
            return int(options["task_index"]) % len(self.tasks)
        return self.playable[int(self.np_random.integers(len(self.playable)))]

    def step(self, action: str):
        self.rounds += 1
        if self.setup_error:
            return self._end(f"The environment failed: {self.setup_error}", "env_error", error=self.setup_error)
        action = str(action)
        if len(action) > MAX_REPLY_CHARS:  # parsing (an answer list, a command) stays bounded in time and memory
            return self._end(f"Invalid reply: {len(action)} characters, more than the {MAX_REPLY_CHARS} a reply may have.",
                             "invalid_action")
        try:
            return self._step(action)
        except EnvFailure as e:
            return self._end(f"The environment failed: {e}", "env_error", error=str(e))

    def _continue(self, observation: str):
        return observation, 0.0, False, False, self._info()

    def _end(self, observation: str, outcome: str, truncated: bool = False, **extra):
        """Reward 1 only for "correct"; trainers map ``info["outcome"]`` to their own table."""
        if outcome != "env_error":
            try:
                outcome = self._settle(outcome)
            except EnvFailure as e:
                outcome, extra = "env_error", {**extra, "error": str(e)}
        info = {**self._info(), "outcome": outcome, **extra}
        try:
            expected = self._expected()
        except Exception:  # noqa: BLE001  a line for readers: never worth failing an episode over
            expected = None
        if expected is not None:  # said once the episode is over (info never reaches the policy)
            info["expected"] = expected
        self._release()
        return observation, float(outcome == "correct"), not truncated, truncated, info

    def _settle(self, outcome: str) -> str:
        return outcome

    def _expected(self) -> str | None:
        """What would have been correct, in a line, for people reading the transcript."""
        return None

    def _step(self, text: str):
        raise NotImplementedError

    def _info(self) -> dict:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._release()

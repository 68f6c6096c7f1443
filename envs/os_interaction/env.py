"""OSInteraction-v0: operate a Linux shell to answer questions and change the machine
(AgentBench os_interaction protocol), in a throwaway sandbox per episode.

Description:
    Each episode starts a fresh sandbox (``sandbox.py``: user, mount, pid and net namespaces, an
    overlay root on a size-capped tmpfs, rlimits), runs the task's init scripts in it, then gives the
    agent one persistent bash shell (``cd`` and variables carry over between turns) in namespaces of
    its own, where the task's ``start`` program runs first, as AgentBench runs it. Checks run as a
    separate judge the agent can neither see nor reach (``_executor.py``). The sandbox and
    everything written in it are gone when the episode ends.
Actions:
    Text. "Act: bash" with ```bash blocks (all run, joined by blank lines), "Act: answer(...)" or
    "Act: finish"; the last Act line decides.
Observations:
    First the protocol instructions (with AgentBench's one-shot example unless ``one_shot=False``)
    and the problem, in one text ("text") or as AgentBench's chat turns in ``info["history"]``
    ("chat"); then "The output of the OS:\n\n..." with stdout and stderr interleaved, ANSI escapes
    removed, truncated to ``max_observation_chars`` with a marker. A command that runs past
    ``command_timeout_s``, prints more than ``limits.output_bytes`` or exits the shell is killed
    with the shell and its jobs (not the task's start program); the observation says so and the
    next command gets a new shell.
Rewards:
    1.0 when the episode ends "correct", else 0.0. Trainers map ``info["outcome"]`` to their own
    reward table.
Episode end:
    terminated on answer/finish ("correct" or "incorrect", judged by the task's match or check
    scripts), on a reply without a valid action ("invalid_action"), or when the sandbox fails or a
    task's init script fails ("env_error", with ``info["error"]``); truncated after ``max_rounds``
    replies ("task_limit_reached"). A check that could not even start counts as failed, with
    ``info["judge_error"]``. ``info`` also carries task_type, skills, rounds, source, task_index.
Arguments:
    source: "generator" (default; seeded single-skill tasks), "agentbench" (os_interaction JSON or
    JSONL: a file, a directory, a glob or a list; scripts from ``script_dir``, default AgentBench's
    layout) or "lifelong" (LifelongAgentBench JSON); skills: generator skills to draw from;
    (``wide``: the AgentBench-shaped family of ``wide.py``; ``all``: both; None: the first family,
    ``generator.py``); max_rounds (AgentBench: 8); max_observation_chars (800); command_timeout_s (30);
    judge_timeout_s (120: each init and check script); limits: ``SandboxLimits`` fields;
    unsafe: run commands directly on this machine when it cannot create a sandbox (never the
    default; no isolation, and no protection of the judge either; generated tasks then live in a
    temporary home instead of /root, without the user skills, and the problem text names that
    directory); one_shot; prompt_format ("text" or "chat"). ``reset(options={"task_index": i})``
    picks file task i.
"""

from __future__ import annotations

import os
import time
import warnings

from envs.os_interaction import families, generator
from envs.os_interaction.protocol import chat_turns, clean_output, first_observation, os_observation, parse_reply, truncate
from envs.os_interaction.sandbox import Sandbox, SandboxDied, SandboxLimits, SandboxUnavailable, max_open_files, probe
from envs.os_interaction.strengthen import with_references
from envs.os_interaction.tasks import (OSTask, descriptor_refusal, load_agentbench, load_lifelong, match_answer,
                                       needs_answer, reads_answer)
from envs.task_env import TaskEnv, check_task_args, positive, skill_names

START_SETTLE_S = 1.0  # after the start program, before the pristine task's example and references run
SHELL_RESET = "A new shell starts with your next command: files are kept, variables and the working directory are reset."


class OSInteractionEnv(TaskEnv):
    def __init__(self, source: str = "generator", path: str | list[str] | None = None, script_dir: str | None = None,
                 skills: list[str] | None = None, max_rounds: int = 8, max_observation_chars: int = 800,
                 command_timeout_s: float = 30.0, judge_timeout_s: float = 120.0, limits: dict | None = None,
                 unsafe: bool = False, one_shot: bool = True, prompt_format: str = "text"):
        named = skill_names(skills)
        check_task_args(source, path, named, tuple(families.SKILLS) + tuple(families.GROUPS), prompt_format)
        positive("max_rounds", max_rounds, integer=True)
        positive("max_observation_chars", max_observation_chars, integer=True)
        positive("command_timeout_s", command_timeout_s)
        positive("judge_timeout_s", judge_timeout_s)
        limits = SandboxLimits(**(limits or {}))
        if not unsafe and (reason := probe()):
            raise SandboxUnavailable(f"OSInteraction cannot create its sandbox: {reason}. To run commands directly "
                                     "on this machine without isolation, pass unsafe=True (env.kwargs.unsafe=true)")
        super().__init__()
        self.source, self.skills = source, _usable_skills(named, unsafe)
        tasks = (load_agentbench(path, script_dir) if source == "agentbench"
                 else load_lifelong(path) if source == "lifelong" else [])
        for task in tasks:
            task.refused = task.refused or descriptor_refusal(task, max_open_files(limits))
        self._use_tasks(tasks, path)
        self.max_rounds, self.max_chars, self.timeout_s = max_rounds, max_observation_chars, command_timeout_s
        self.judge_timeout_s, self.limits, self.unsafe = judge_timeout_s, limits, unsafe
        self.one_shot, self.prompt_format = one_shot, prompt_format
        self.box: Sandbox | None = None
        self.task: OSTask | None = None
        self.judge_error: str | None = None
        self.truth: str | None = None  # the example's output on the pristine task (the expected answer)
        self.reference_values: list[str] = []  # the task's references' outputs on the pristine task
        self._lazy: dict[int, bool] = {}  # file task index -> its checks pass on the task as given

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.task_index = self._pick(options or {})
        self.task = self.tasks[self.task_index] if self.tasks else families.generate(
            int(self.np_random.integers(2**31)), self.skills)
        self.rounds, self.judge_error = 0, None
        self.setup_error = self._setup()
        if self.prompt_format == "chat":
            history, question = chat_turns(self.task.description, self.one_shot)
            return question, {**self._info(), "history": history}
        return first_observation(self.task.description, self.one_shot), self._info()

    def _setup(self) -> str | None:
        """Start the sandbox and run the task's setup as AgentBench does (init scripts on their own,
        a failing one aborts the sample; then ``start`` in the agent's shell); keep the task as the
        agent receives it and compute the expected answer there. The reason when any of that fails
        (-> env_error: none of it is the agent's doing)."""
        self._release()
        self.truth, self.reference_values = None, []
        if self.task.refused:
            return f"this task is refused: {self.task.refused}"
        try:
            self.box = Sandbox(self.limits, self.unsafe).start()
            if self.unsafe and not self.tasks:  # generated tasks write under /root: keep them in the temp home
                self.task = generator.relocate(self.task, self.box.home)
            for lang, code in self.task.init:
                r = self.box.run(lang, code, timeout=self.judge_timeout_s)
                if r.exit_code != 0:
                    return f"task setup exited {r.exit_code}: {(r.output + r.stderr)[-300:]}"
            self.box.seal()
            examples = None in (self.task.check or [])
            if self.task.start:
                # Job control on for the start program only: its background jobs get process groups of
                # their own, so a later command's timeout (which kills the shell's group) spares them.
                self.box.shell(f"set -m\n{self.task.start[1]}\nset +m", self.timeout_s)
                if examples or self.task.references:
                    # AgentBench runs the example when judging, after the agent's turns; here it runs at
                    # once, and on a loaded machine the start program's background jobs may not have
                    # exec'd yet (ps showed no program: a CI run failed so). They get a moment first.
                    time.sleep(START_SETTLE_S)
            # The shell that ran the start program goes (its jobs stay) when the example runs, so the
            # example sees the processes the agent's first command sees.
            self.box.snapshot(close_shell=examples)
            if examples and (error := self._expected_answer()):
                return error
            if error := self._references():
                return error
            return self._lazy_verdict()
        except (SandboxUnavailable, SandboxDied) as e:
            return str(e)

    def _expected_answer(self) -> str | None:
        """AgentBench runs the example when judging, on whatever the agent left; here it runs once,
        before the agent acts, on the pristine task: deleting or rewriting what a question is about
        cannot change the expected answer."""
        r = self.box.run(*self.task.example, timeout=self.judge_timeout_s, view="pristine", shell=True)
        if r.exit_code != 0:
            why = "timed out" if r.timed_out else f"exited {r.exit_code}"
            return f"the task's example (which gives the expected answer) {why}: {(r.stderr or r.output)[-300:]}"
        self.truth = r.output
        return None

    def _references(self) -> str | None:
        """What strengthened checks compare with, computed on the pristine task (``strengthen``)."""
        self.reference_values = []
        for code in self.task.references:
            r = self.box.run("bash", code, timeout=self.judge_timeout_s, view="pristine")
            if r.exit_code != 0:
                return f"a reference script of the task's checks exited {r.exit_code}: {(r.stderr or r.output)[-300:]}"
            self.reference_values.append(r.output)
        return None

    def _lazy_verdict(self) -> str | None:
        """A file task whose checks pass on the task as given would reward doing nothing: it is
        refused (once per task; the generator's skills are built and tested not to)."""
        if not self.tasks or not self.task.check:
            return None
        if self.task_index not in self._lazy:
            self._lazy[self.task_index] = self._chain("None", lambda script: "pristine")
        if self._lazy[self.task_index]:
            return "doing nothing passes this task's checks: it cannot tell work from no work"
        return None

    def _step(self, text: str):
        kind, payload = parse_reply(text)
        if kind == "invalid":
            return self._end(f"Invalid reply: {payload}.", "invalid_action")
        if kind in ("answer", "finish"):
            return self._end("Answer received.", "correct" if self._judge(payload) else "incorrect")
        observation = self._run(payload)
        if self.rounds >= self.max_rounds:
            return self._end(observation, "task_limit_reached", truncated=True)
        return self._continue(observation)

    def _run(self, code: str) -> str:
        r = self.box.shell(code, self.timeout_s)
        note = ""
        if r.timed_out:
            note = f"[The command did not finish within {self.timeout_s:g} seconds and was killed. {SHELL_RESET}]"
        elif r.output_limited:
            note = f"[The command printed more than {self.limits.output_bytes} bytes and was killed. {SHELL_RESET}]"
        elif r.shell_ended and r.shell_restarted:
            note = "[A new shell was started for this command and ended at once: is /bin/bash still there?]"
        elif r.shell_ended:
            note = f"[The shell exited. {SHELL_RESET}]"
        return os_observation(truncate(clean_output(r.output), self.max_chars), note)

    def _judge(self, answer: str | None) -> bool:
        """AgentBench's rule: match the answer, or run the check chain (each script gets the answer
        and the outputs of the scripts before it; all must exit 0; a null entry stands for the
        example, whose output was computed at reset). The agent's processes are stopped first.
        A check that reads the answer runs on the task as the agent received it; one that tests
        the agent's effect runs on what the agent left (``_executor.py`` has both views). A check
        that cannot even start counts as failed, with the reason in ``info["judge_error"]``."""
        task = self.task
        if task.match is not None:
            return match_answer(task.match, answer)
        self.box.freeze()
        return self._chain(str(answer), lambda script: "pristine" if reads_answer(script) else "judge")

    def _chain(self, answer: str, view) -> bool:
        if not answer.strip() and needs_answer(self.task):
            return False  # an empty answer compares with nothing (AgentBench's in.py would pass it)
        params = [answer]  # as AgentBench: "None" after Act: finish
        for script in self.task.check:
            if script is None:
                params.append(self.truth)
                continue
            lang, code = script
            r = self.box.run(lang, with_references(code, self.reference_values), args=params,
                             timeout=self.judge_timeout_s, view=view(script))
            if r.exit_code in (None, 125) and r.stderr.startswith("judge setup failed"):
                self.judge_error = r.stderr
            if r.exit_code != 0:
                return False
            params.append(r.output)
        return True

    def _expected(self) -> str | None:
        task = self.task
        if task is None:
            return None
        if task.match is not None:
            return f"answer {task.match['answer']!r}" if "answer" in task.match else f"an answer matching /{task.match['regex']}/"
        # a null check entry compares with the example's output, computed at reset: that is the answer
        shown = f"answer {self.truth.strip()!r}; " if self.truth is not None and None in task.check else ""
        scripts = (f"{c[0]}: {c[1].strip().splitlines()[0][:120]}" if c and c[1].strip() else "the example"
                   for c in task.check)
        return f"{shown}checks: {' | '.join(scripts)}"

    def _info(self) -> dict:
        info = {"task_type": self.task.task_type, "skills": list(self.task.labels), "rounds": self.rounds,
                "source": self.task.source, "task_index": self.task_index}
        if self.judge_error:
            info["judge_error"] = self.judge_error
        return info

    def _release(self) -> None:
        if self.box is not None:
            self.box.close()
            self.box = None


def _usable_skills(named: tuple[str, ...] | None, unsafe: bool) -> tuple[str, ...] | None:
    """The skills to draw from (None: the first family). Tasks that add users need the sandbox's full
    uid range, which only root on the host gets: they are left out unless named one by one. The
    AgentBench-shaped family writes to system directories and starts programs: never on the host."""
    skills = families.expand_skills(named)
    if unsafe and (wide := [s for s in skills or () if s in families.WIDE_SKILLS]):
        raise ValueError(f"skills {', '.join(wide)} need the sandbox (they write to /usr, /var and /home, add users "
                         "and start programs): unsafe mode runs commands on this machine itself")
    if os.geteuid() == 0 and not unsafe:
        return skills
    direct = set(named or ()) - set(families.GROUPS)
    left_out = [s for s in skills or generator.SKILLS if s in families.USER_SKILLS and s not in direct]
    if left_out:
        warnings.warn(f"not root: generator skills {', '.join(left_out)} are left out (they add users)", stacklevel=3)
    return tuple(s for s in skills or generator.SKILLS if s not in left_out)

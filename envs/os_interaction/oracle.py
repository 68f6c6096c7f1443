"""Oracle agents: solve a task through the env's own text protocol, one per task source.

- generator and lifelong: run the task's solution commands; answer with what the last one printed
  (question tasks) or finish (change tasks).
- agentbench: run the ``example`` script in the shell and answer with its output when the answer
  is judged (a ``match``, a ``None`` check entry that compares with the example, or a check that
  reads its arguments), or finish when the checks inspect the machine (e.g. a command the example
  installs). A task with a
  ``match`` answer and no example has no solution to run: the oracle refuses it rather than echo
  the expected answer, which would prove nothing.
"""

from __future__ import annotations

import shlex

from envs.os_interaction.tasks import OSTask, needs_answer

_OUTPUT = "The output of the OS:\n\n"


def bash(code: str) -> str:
    return f"Think: I run the reference commands.\n\nAct: bash\n\n```bash\n{code}\n```"


def answer(text: str) -> str:
    return f"Think: I have the answer.\n\nAct: answer({text})"


FINISH = "Think: The task is done.\n\nAct: finish"


def last_output(observation: str) -> str:
    return observation[len(_OUTPUT):].strip() if observation.startswith(_OUTPUT) else ""


def _as_bash(script: tuple[str, str]) -> str:
    lang, code = script
    return code if lang == "bash" else f"python3 -c {shlex.quote(code)}"


class NoSolution(ValueError):
    """The task carries nothing the oracle could execute."""


class Oracle:
    """``reply(observation)`` gives the next message; create one per episode."""

    def __init__(self, task: OSTask):
        if task.solution:
            self.commands = list(task.solution)
        elif task.example:
            self.commands = [_as_bash(task.example)]
        else:
            raise NoSolution(f"the task has no solution or example to run: {task.description[:60]!r}")
        self.answers = task.match is not None or needs_answer(task)
        self.step = 0

    def reply(self, observation: str) -> str:
        self.step += 1
        if self.step <= len(self.commands):
            return bash(self.commands[self.step - 1])
        return answer(last_output(observation)) if self.answers else FINISH

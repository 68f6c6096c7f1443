"""How a task is judged, decided once per episode before the agent acts.

Questions are judged by their label. A modification is judged by the table the episode leaves:
  1. the reference statement (AgentBench's ``label[0]``) runs on a copy of the fresh table; the
     final table must equal that copy, row for row. Where AgentBench's ``answer_md5`` exists it is
     recomputed on the copy, and the note says whether SQLite reproduced it.
  2. when the reference statement fails on SQLite, ``answer_md5`` alone decides (AgentBench's own
     rule: the MySQL digest of the final table).
  3. with neither, the task cannot be judged: every episode on it ends "env_error", with the reason.
A task whose reference leaves the table as it was (or whose expected answer is empty) would reward
an agent that does nothing: it is refused the same way, never silently passed.
"""

from __future__ import annotations

from dataclasses import dataclass

from envs.db_bench.database import Database
from envs.db_bench.tasks import Task, mysql_to_sqlite


@dataclass(frozen=True)
class Reference:
    note: str  # how this task is judged, or why it cannot be (shown in info["reference"])
    digest: str | None = None  # "sha" or "md5": which digest of the final table is compared
    expected: str | None = None
    error: str | None = None  # set: the task cannot be judged

    def matches(self, state: dict) -> bool:
        return self.error is None and self.expected is not None and state.get(self.digest) == self.expected


def reference(db: Database, task: Task) -> Reference:
    if task.kind == "select":
        if not task.label:
            return Reference("label", error="the expected answer is empty: answering [] without any work would pass")
        return Reference("label")
    initial = db.state()
    gold = db.reference(mysql_to_sqlite(task.gold_sql)) if task.gold_sql else {"error": "no reference statement"}
    if "error" not in gold:
        ref = Reference(_sql_note(gold, task), "sha", gold["sha"])
        unchanged = gold["sha"] == initial["sha"]
    elif task.answer_md5:
        ref = Reference(f"answer_md5 only (the reference statement fails on SQLite: {gold['error']})", "md5",
                        task.answer_md5)
        unchanged = initial["md5"] == task.answer_md5
    else:
        return Reference("none", error=f"cannot judge: the reference statement fails on SQLite ({gold['error']}) "
                                       "and the task has no answer_md5")
    if unchanged:
        return Reference(ref.note, error="the reference modification leaves the table unchanged: doing nothing would pass")
    return ref


def _sql_note(gold: dict, task: Task) -> str:
    if not task.answer_md5:
        return "reference statement"
    if gold["md5"] == task.answer_md5:
        return "reference statement; AgentBench's answer_md5 reproduced"
    return "reference statement; AgentBench's answer_md5 not reproduced on SQLite"

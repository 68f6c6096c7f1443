"""Oracle agent: replays a task's gold SQL and answer through the env's own protocol."""

from __future__ import annotations

from envs.db_bench.protocol import mysql_to_sqlite
from envs.db_bench.tasks import Task


def oracle_replies(task: Task) -> list[str]:
    replies = []
    if task.gold_sql:
        sql = " ".join(mysql_to_sqlite(task.gold_sql).split("\n"))
        replies.append(f"I run the reference query.\nAction: Operation\n```sql\n{sql}\n```")
    answer = repr(list(task.label)) if task.kind == "select" else "[]"
    replies.append(f"Done.\nAction: Answer\nFinal Answer: {answer}")
    return replies

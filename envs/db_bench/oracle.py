"""Oracle agent: solves a task by running its reference SQL through the env and answering with
what the database returned. It never reads the label, so it proves a task solvable only when the
env's own judging accepts an answer that came out of the database.

AgentBench's reference queries are often not valid SQL (WikiSQL-style column names with spaces
left unquoted, keywords glued to names, ``FROM table`` as a placeholder); the oracle runs the query
as written and, when the database refuses it, a repaired version (``repair_sql``). A task whose
executed reference does not give its label stays unsolved: that is a fact about the data, and the
tests name those tasks instead of hiding them.
"""

from __future__ import annotations

import ast
import re

from envs.db_bench.tasks import Task, flatten_rows, mysql_to_sqlite, quote_ident

_KEYWORDS = re.compile(r"(?<=[\w\]\"'`)])(FROM|WHERE|LIMIT|ORDER BY|GROUP BY)\b")
_LITERAL = re.compile(r"('(?:[^']|'')*')")


def operation(sql: str) -> str:
    return f"I run the reference query.\nAction: Operation\n```sql\n{sql}\n```"


def final_answer(values: list) -> str:
    return f"Done.\nAction: Answer\nFinal Answer: {values!r}"


def repair_sql(sql: str, task: Task) -> str:
    """Quote column names that contain spaces or dashes where they appear bare, split keywords
    glued to names ("AverageFROM"), and put the table's name where the query says ``table``."""
    parts = _LITERAL.split(mysql_to_sqlite(sql))  # odd indexes are string literals: left alone
    names = sorted((c for c, _ in task.columns if not re.fullmatch(r"\w+", c)), key=len, reverse=True)
    for i in range(0, len(parts), 2):
        text = _KEYWORDS.sub(r" \1", parts[i])
        # Replacements are functions: a name from the data ("Oblast\\Age") is text, never a template.
        for name in names:
            quoted = quote_ident(name)
            text = re.sub(rf"(?<![\"`\[\w]){re.escape(name)}(?![\"`\]\w])", lambda _m, q=quoted: q, text)
        table = f"FROM {quote_ident(task.table_name)}"
        parts[i] = re.sub(r"\bFROM\s+table\b", lambda _m: table, text)
    return "".join(parts)


class Oracle:
    """``reply(observation)`` gives the next message; create one per episode."""

    def __init__(self, task: Task):
        self.task = task
        sql = mysql_to_sqlite(task.gold_sql or "")
        self.candidates = [s for s in dict.fromkeys([sql, repair_sql(sql, task)]) if s.strip()]
        self.tried = 0

    def reply(self, observation: str) -> str:
        if self.tried and not observation.startswith("Error:") or self.tried == len(self.candidates):
            return final_answer(self._values(observation) if self.task.kind == "select" else [])
        self.tried += 1
        return operation(self.candidates[self.tried - 1])

    @staticmethod
    def _values(observation: str) -> list:
        try:
            return flatten_rows(ast.literal_eval(observation))
        except (ValueError, SyntaxError):
            return []  # an error or a truncated result: nothing to answer with

"""DBBench tasks: one table, a question, and how to judge the answer.

Sources: AgentBench dbbench JSONL, LifelongAgentBench-style JSON, and the procedural generator
(``generator.py``). All become ``Task``s; the env never sees which source a task came from.

AgentBench's two kinds of entries:
  questions (type "other", "counting", "aggregation-SUM", ...): ``label`` is the list of expected
      values; ``sql.query`` is a reference query (often not valid SQL: WikiSQL-style unquoted
      column names), used only by the oracle.
  modifications (type INSERT, UPDATE, DELETE): ``label[0]`` is the reference statement and
      ``answer_md5`` the MySQL digest of the table it leaves (``_worker.mysql_md5``).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from envs.task_env import required

MODIFY = ("INSERT", "UPDATE", "DELETE")
ANSWER_RULES = ("agentbench", "tolerant")


@dataclass
class Task:
    description: str  # the question
    table_name: str
    columns: list[tuple[str, str]]  # (name, SQL type)
    rows: list[list]
    task_type: str  # e.g. "aggregation-SUM", "INSERT", or a generator skill
    kind: str  # "select" (answer judged) or "modify" (table judged)
    label: list | None = None  # expected answer values (select)
    gold_sql: str | None = None  # reference SQL: the query behind the label, or the modification
    skills: list[str] = field(default_factory=list)
    source: str = ""
    add_description: str = ""  # AgentBench's second line: the table's name and headers
    answer_md5: str | None = None  # AgentBench's MySQL digest of the expected table (modify)
    mysql_text: bool = False  # AgentBench made every column TEXT, compared as MySQL does

    @property
    def prompt(self) -> str:
        return f"{self.description}\n{self.add_description}" if self.add_description else self.description


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_literal(value: str) -> str:
    """A string literal as SQL writes it: apostrophes doubled (``'O''Neil'``)."""
    return "'" + value.replace("'", "''") + "'"


def mysql_to_sqlite(sql: str) -> str:
    """AgentBench's reference SQL is MySQL: turn its backslash-escaped quotes into SQLite's ''."""
    return sql.replace("\\'", "''")


def flatten_rows(rows) -> list:
    out = []
    for r in rows:
        out.extend(r if isinstance(r, (list, tuple)) else [r])
    return out


# ---- judging an answer -----------------------------------------------------------------------

def answer_values(text: str) -> list:
    """AgentBench's reading of ``Final Answer:<text>``: ``list(eval(text))``, else ``[text]``.
    ``ast.literal_eval`` stands in for eval (agent text is never executed); it agrees on every
    literal, and whatever is not a literal is kept as the raw text, as AgentBench's fallback does."""
    try:
        return list(ast.literal_eval(text.strip()))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return [text]


def answers_match(text: str, label: list, rule: str = "agentbench") -> bool:
    """``agentbench``: AgentBench v0.2's rule exactly. One value each: float equality, or else
    string equality (no strip); several: equal as Python sets (so 3 != "3"); unhashable: wrong.
    ``tolerant``: values stripped, numbers equal within 1e-2, numeric strings equal to numbers,
    several values compared as sets of normalised strings."""
    answer = answer_values(text)
    if rule == "tolerant":
        if len(answer) == 1 and len(label) == 1:
            a, b = _as_float(answer[0]), _as_float(label[0])
            return abs(a - b) <= 1e-2 if a is not None and b is not None else str(answer[0]).strip() == str(label[0]).strip()
        return {_norm(v) for v in answer} == {_norm(v) for v in label}
    if len(answer) == 1 and len(label) == 1:
        try:
            return float(answer[0]) == float(label[0])
        except (ValueError, TypeError, OverflowError):
            return answer[0] == label[0]
    try:
        return set(answer) == set(label)
    except TypeError:
        return False


def _as_float(v):
    try:
        return float(str(v).replace(",", "")) if not isinstance(v, bool) else None
    except ValueError:
        return None


def _norm(v) -> str:
    f = _as_float(v)
    return repr(round(f, 2)) if f is not None else str(v).strip()


# ---- loaders ----------------------------------------------------------------------------------

_MD5 = re.compile(r"[0-9a-f]{32}")


def load_agentbench(path: str | Path) -> list[Task]:
    tasks = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            e = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not JSON ({err.msg})") from None
        info = required(e, "table.table_info", where)
        typ = (e.get("type") or ["other"])[0]
        modify = typ in MODIFY
        label = required(e, "label", where)
        if not isinstance(label, list):
            raise ValueError(f"{where}: 'label' must be a list")
        md5 = _MD5.search(str(e.get("answer_md5") or ""))
        tasks.append(Task(
            description=required(e, "description", where),
            add_description=e.get("add_description") or "",
            table_name=required(e, "table.table_name", where),
            # AgentBench creates every column as TEXT whatever the file says.
            columns=[(required(c, "name", where), "TEXT") for c in required(info, "columns", where)],
            rows=required(info, "rows", where),
            task_type=typ,
            kind="modify" if modify else "select",
            label=None if modify else label,
            gold_sql=(label[0] if label else None) if modify else (e.get("sql") or {}).get("query"),
            answer_md5=md5.group(0) if modify and md5 else None,
            skills=[typ],
            source="agentbench",
            mysql_text=True,
        ))
    return tasks


def load_lifelong(path: str | Path) -> list[Task]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err.msg} at line {err.lineno})") from None
    entries = data.items() if isinstance(data, dict) else enumerate(data)
    tasks = []
    for key, e in entries:
        where = f"{path}[{key}]"
        info, ans = required(e, "table_info", where), required(e, "answer_info", where)
        modify = ans.get("direct") is None and bool(ans.get("sql"))
        if ans.get("direct") is None and not modify:
            raise ValueError(f"{where}: answer_info needs 'direct' (a question) or 'sql' (a modification)")
        skills = list(e.get("skill_list") or [])
        tasks.append(Task(
            description=required(e, "instruction", where),
            table_name=required(info, "name", where),
            columns=[(required(c, "name", where), c.get("type", "TEXT")) for c in required(info, "column_info_list", where)],
            rows=required(info, "row_list", where),
            task_type=skills[0] if skills else ("modify" if modify else "select"),
            kind="modify" if modify else "select",
            label=None if modify else flatten_rows(required(ans, "direct", where)),
            gold_sql=ans.get("sql"),
            skills=skills,
            source="lifelong",
        ))
    return tasks

"""DBBench tasks: one table, a question, and how to judge the answer.

Sources: AgentBench dbbench JSONL, LifelongAgentBench-style JSON, and the procedural generator
(``generator.py``). All become ``Task``s; the env never sees which source a task came from.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path

MODIFY = ("INSERT", "UPDATE", "DELETE")


@dataclass
class Task:
    description: str  # the question, including the table's name and headers
    table_name: str
    columns: list[tuple[str, str]]  # (name, SQL type)
    rows: list[list]
    task_type: str  # e.g. "aggregation-SUM", "INSERT", or a generator skill
    kind: str  # "select" (answer judged) or "modify" (table judged)
    label: list | None = None  # expected answer values (select)
    gold_sql: str | None = None  # reference SQL (modify tasks: defines the expected table)
    skills: list[str] = field(default_factory=list)
    source: str = ""


def parse_answer(text: str) -> list | None:
    """Final Answer text -> list of values, with ast.literal_eval (never eval); None if unparseable."""
    text = text.strip()
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _as_float(v):
    try:
        return float(str(v).replace(",", "")) if not isinstance(v, bool) else None
    except ValueError:
        return None


def _norm(v) -> str:
    f = _as_float(v)
    if f is not None:
        return repr(round(f, 2))
    return str(v).strip()


def answers_match(answer: list, label: list) -> bool:
    """AgentBench's rule: one value each -> numeric equality (to 1e-2) or string equality;
    several -> equal as sets (order-free, numbers compared to 2 decimals)."""
    if len(answer) == 1 and len(label) == 1:
        a, b = _as_float(answer[0]), _as_float(label[0])
        if a is not None and b is not None:
            return abs(a - b) <= 1e-2
        return str(answer[0]).strip() == str(label[0]).strip()
    return {_norm(v) for v in answer} == {_norm(v) for v in label}


def flatten_rows(rows) -> list:
    out = []
    for r in rows:
        out.extend(r if isinstance(r, (list, tuple)) else [r])
    return out


def load_agentbench(path: str | Path) -> list[Task]:
    tasks = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        e = json.loads(line)
        info = e["table"]["table_info"]
        typ = (e.get("type") or ["other"])[0]
        desc = e["description"] + ("\n" + e["add_description"] if e.get("add_description") else "")
        tasks.append(Task(
            description=desc,
            table_name=e["table"]["table_name"],
            columns=[(c["name"], c.get("type", "TEXT")) for c in info["columns"]],
            rows=info["rows"],
            task_type=typ,
            kind="modify" if typ in MODIFY else "select",
            label=None if typ in MODIFY else list(e.get("label") or []),
            gold_sql=(e.get("sql") or {}).get("query"),
            skills=[typ],
            source="agentbench",
        ))
    return tasks


def load_lifelong(path: str | Path) -> list[Task]:
    data = json.loads(Path(path).read_text())
    entries = data.values() if isinstance(data, dict) else data
    tasks = []
    for e in entries:
        info, ans = e["table_info"], e["answer_info"]
        modify = ans.get("direct") is None and bool(ans.get("sql"))
        skills = list(e.get("skill_list") or [])
        tasks.append(Task(
            description=e["instruction"],
            table_name=info["name"],
            columns=[(c["name"], c.get("type", "TEXT")) for c in info["column_info_list"]],
            rows=info["row_list"],
            task_type=skills[0] if skills else ("modify" if modify else "select"),
            kind="modify" if modify else "select",
            label=None if modify else flatten_rows(ans["direct"]),
            gold_sql=ans.get("sql"),
            skills=skills,
            source="lifelong",
        ))
    return tasks

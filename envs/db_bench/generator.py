"""Procedural single-skill SQL tasks: unlimited, seeded, every one solvable.

Each task uses one skill over a small random table; its gold SQL defines the answer (select
skills) or the expected table (insert/update/delete). Ambiguous draws (ties for a maximum,
empty results) are redrawn with the same RNG, so a seed always gives the same task.
"""

from __future__ import annotations

import random

from envs.db_bench.database import Database, quote_ident
from envs.db_bench.tasks import Task, flatten_rows

SKILLS = ("select", "where", "order_by", "limit", "count", "sum", "avg", "min", "max",
          "group_by", "having", "subquery", "insert", "update", "delete")

_NAMES = ["Alice", "Bob", "Carol", "David", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory",
          "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Uma", "Victor", "Walter", "Xena", "Yusuf", "Zoe"]
# (table, entity, category column, its values, two numeric columns with value ranges)
_SCHEMAS = [
    ("employees", "employee", "department", ["Sales", "Engineering", "HR", "Finance"], [("salary", 3000, 9000), ("age", 22, 60)]),
    ("products", "product", "category", ["Books", "Toys", "Garden", "Food"], [("price", 5, 500), ("stock", 0, 300)]),
    ("students", "student", "city", ["Paris", "Lima", "Oslo", "Kyoto"], [("score", 40, 100), ("age", 17, 30)]),
]


def generate(seed: int, skills: tuple[str, ...] | list[str] | None = None) -> Task:
    rng = random.Random(seed)
    skill = rng.choice(list(skills or SKILLS))
    for _ in range(100):
        task = _draw(rng, skill)
        if task is not None:
            return task
    raise RuntimeError(f"could not draw an unambiguous {skill} task for seed {seed}")


def _draw(rng: random.Random, skill: str) -> Task | None:
    table, entity, cat, cat_values, nums = rng.choice(_SCHEMAS)
    (n1, lo1, hi1), (n2, lo2, hi2) = nums
    n = rng.randint(5, 10)
    names = rng.sample(_NAMES, n)
    v1 = rng.sample(range(lo1, hi1), n)  # distinct: maxima and orderings are unambiguous
    rows = [[names[i], rng.choice(cat_values), v1[i], rng.randint(lo2, hi2)] for i in range(n)]
    columns = [("name", "TEXT"), (cat, "TEXT"), (n1, "INTEGER"), (n2, "INTEGER")]
    t = quote_ident(table)
    row = rng.choice(rows)
    c = row[1]
    mid = sorted(v1)[n // 2]
    k = rng.randint(2, 3)
    new_name = rng.choice([x for x in _NAMES if x not in names] or ["Newcomer"])
    agg = {"sum": ("SUM", "total"), "avg": ("AVG", "average"), "min": ("MIN", "lowest"), "max": ("MAX", "highest")}
    q = {
        "select": (f"What is the {n2} of the {entity} named {row[0]}?", f"SELECT {n2} FROM {t} WHERE name = '{row[0]}'"),
        "where": (f"List the names of all {entity}s whose {n1} is greater than {mid}.", f"SELECT name FROM {t} WHERE {n1} > {mid}"),
        "order_by": (f"Which {entity} has the highest {n1}? Answer with the name.", f"SELECT name FROM {t} ORDER BY {n1} DESC LIMIT 1"),
        "limit": (f"List the names of the {k} {entity}s with the lowest {n1}.", f"SELECT name FROM {t} ORDER BY {n1} ASC LIMIT {k}"),
        "count": (f"How many {entity}s have {cat} '{c}'?", f"SELECT COUNT(*) FROM {t} WHERE {cat} = '{c}'"),
        "group_by": (f"Which {cat} has the largest total {n1}?", f"SELECT {cat} FROM {t} GROUP BY {cat} ORDER BY SUM({n1}) DESC LIMIT 1"),
        "having": (f"Which {cat} values have at least {k} {entity}s?", f"SELECT {cat} FROM {t} GROUP BY {cat} HAVING COUNT(*) >= {k}"),
        "subquery": (f"List the names of {entity}s whose {n1} is above the average {n1}.",
                     f"SELECT name FROM {t} WHERE {n1} > (SELECT AVG({n1}) FROM {t})"),
        "insert": (f"Add a new {entity} named {new_name} with {cat} '{c}', {n1} {mid + 1} and {n2} {lo2}.",
                   f"INSERT INTO {t} (name, {cat}, {n1}, {n2}) VALUES ('{new_name}', '{c}', {mid + 1}, {lo2})"),
        "update": (f"Change the {n2} of the {entity} named {row[0]} to {row[3] + 1}.",
                   f"UPDATE {t} SET {n2} = {row[3] + 1} WHERE name = '{row[0]}'"),
        "delete": (f"Delete every {entity} whose {n1} is below {mid}.", f"DELETE FROM {t} WHERE {n1} < {mid}"),
    }
    if skill in agg:
        fn, word = agg[skill]
        q[skill] = (f"What is the {word} {n1} of {entity}s with {cat} '{c}'?", f"SELECT {fn}({n1}) FROM {t} WHERE {cat} = '{c}'")
    question, sql = q[skill]
    kind = "modify" if skill in ("insert", "update", "delete") else "select"
    label = None
    if kind == "select":
        label = _run(table, columns, rows, sql)
        if not label or (skill == "group_by" and _tied_top(table, columns, rows, cat, n1)):
            return None
        if skill == "avg":
            label = [round(label[0], 2)]
    header = f"The name of this table is {table}, and the headers of this table are {','.join(x for x, _ in columns)}."
    return Task(f"{question}\n{header}", table, columns, rows, skill, kind, label, sql, [skill], "generator")


def _run(table, columns, rows, sql) -> list:
    db = Database()
    try:
        db.create_table(table, columns, rows)
        return flatten_rows(db.execute(sql))
    finally:
        db.close()


def _tied_top(table, columns, rows, cat, num) -> bool:
    totals = _run(table, columns, rows, f"SELECT SUM({num}) FROM {quote_ident(table)} GROUP BY {cat} ORDER BY 1 DESC LIMIT 2")
    return len(totals) == 2 and totals[0] == totals[1]

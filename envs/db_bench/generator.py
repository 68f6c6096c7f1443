"""Procedural single-skill SQL tasks: unlimited, seeded, every one solvable.

Each task uses one skill over a small random table. Question answers are computed here, in
Python, from the rows; the gold SQL is what the oracle runs through the env, so a generator bug
(SQL that disagrees with the Python answer) fails the oracle test. Modification tasks are judged
by the table the gold SQL leaves. Ambiguous draws (ties, empty answers, averages that round
differently in SQL and Python) are redrawn with the same RNG, so a seed always gives one task.
"""

from __future__ import annotations

import random
from decimal import ROUND_HALF_UP, Decimal

from envs.db_bench.tasks import Task, quote_ident

SKILLS = ("select", "where", "order_by", "limit", "count", "sum", "avg", "min", "max",
          "group_by", "having", "subquery", "insert", "update", "delete")

_NAMES = ["Alice", "Bob", "Carol", "David", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory",
          "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Uma", "Victor", "Walter", "Xena", "Yusuf", "Zoe"]
# (table, entity, category column, its values, two numeric columns with value ranges). Each table
# uses 4 of its 12 category values, drawn per task, so that no category name is a likely answer.
_SCHEMAS = [
    ("employees", "employee", "department", ["Sales", "Engineering", "HR", "Finance", "Legal", "Marketing", "Support",
                                             "Research", "Design", "Operations", "Security", "Logistics"],
     [("salary", 3000, 9000), ("age", 22, 60)]),
    ("products", "product", "category", ["Books", "Toys", "Garden", "Food", "Music", "Sports", "Games", "Tools",
                                         "Beauty", "Office", "Pets", "Shoes"],
     [("price", 5, 500), ("stock", 0, 300)]),
    ("students", "student", "city", ["Paris", "Lima", "Oslo", "Kyoto", "Cairo", "Quito", "Seoul", "Dakar", "Perth",
                                     "Hanoi", "Porto", "Delhi"],
     [("score", 40, 100), ("age", 17, 30)]),
]
MAX_COUNT = 12  # `count` answers are uniform over 0..MAX_COUNT: a constant guess wins 1 task in 13


def generate(seed: int, skills: tuple[str, ...] | list[str] | None = None) -> Task:
    rng = random.Random(seed)
    skill = rng.choice(list(skills or SKILLS))
    for _ in range(100):
        task = _draw(rng, skill)
        if task is not None:
            return task
    raise RuntimeError(f"could not draw an unambiguous {skill} task for seed {seed}")


def _round2(x: float) -> float | None:
    """SQLite's ROUND(x, 2) rounds half away from zero, Python's round() to even: skip ties."""
    exact = Decimal(repr(x)) * 100
    if exact % 1 == Decimal("0.5"):
        return None
    return float((Decimal(repr(x))).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _draw(rng: random.Random, skill: str) -> Task | None:
    table, entity, cat, all_values, nums = rng.choice(_SCHEMAS)
    (n1, lo1, hi1), (n2, lo2, hi2) = nums
    cat_values = rng.sample(all_values, 4)
    if skill == "count":  # the answer is drawn first, uniform (0 included: a value no row has)
        target, c = rng.randint(0, MAX_COUNT), rng.choice(cat_values)
        n = target + rng.randint(2, 6)
        cats = [c] * target + [rng.choice([v for v in cat_values if v != c]) for _ in range(n - target)]
        rng.shuffle(cats)
    else:
        n = rng.randint(5, 10)
        cats = [rng.choice(cat_values) for _ in range(n)]
    names = rng.sample(_NAMES, n)
    v1 = rng.sample(range(lo1, hi1), n)  # distinct: maxima and orderings are unambiguous
    rows = [[names[i], cats[i], v1[i], rng.randint(lo2, hi2)] for i in range(n)]
    columns = [("name", "TEXT"), (cat, "TEXT"), (n1, "INTEGER"), (n2, "INTEGER")]
    t = quote_ident(table)
    row = rng.choice(rows)
    c = c if skill == "count" else row[1]
    in_c = [r for r in rows if r[1] == c]
    mid = sorted(v1)[n // 2]
    k = rng.randint(2, 3)
    new_name = rng.choice([x for x in _NAMES if x not in names] or ["Newcomer"])
    by_v1 = sorted(rows, key=lambda r: r[2])
    totals = {g: sum(r[2] for r in rows if r[1] == g) for g in {r[1] for r in rows}}
    top = sorted(totals.values(), reverse=True)
    counts = {g: sum(r[1] == g for r in rows) for g in totals}
    mean = sum(v1) / n
    # skill: (question, gold SQL, answer computed in Python; None = ambiguous, redraw), built for
    # the drawn skill only (a `count` category may have no rows: no average of it)
    q = {
        "select": lambda: (f"What is the {n2} of the {entity} named {row[0]}?", f"SELECT {n2} FROM {t} WHERE name = '{row[0]}'",
                           [row[3]]),
        "where": lambda: (f"List the names of all {entity}s whose {n1} is greater than {mid}.",
                          f"SELECT name FROM {t} WHERE {n1} > {mid}", [r[0] for r in rows if r[2] > mid]),
        "order_by": lambda: (f"Which {entity} has the highest {n1}? Answer with the name.",
                             f"SELECT name FROM {t} ORDER BY {n1} DESC LIMIT 1", [by_v1[-1][0]]),
        "limit": lambda: (f"List the names of the {k} {entity}s with the lowest {n1}.",
                          f"SELECT name FROM {t} ORDER BY {n1} ASC LIMIT {k}", [r[0] for r in by_v1[:k]]),
        "count": lambda: (f"How many {entity}s have {cat} '{c}'?", f"SELECT COUNT(*) FROM {t} WHERE {cat} = '{c}'", [len(in_c)]),
        "sum": lambda: (f"What is the total {n1} of {entity}s with {cat} '{c}'?",
                        f"SELECT SUM({n1}) FROM {t} WHERE {cat} = '{c}'", [sum(r[2] for r in in_c)]),
        "avg": lambda: (f"What is the average {n1} of {entity}s with {cat} '{c}', rounded to 2 decimal places?",
                        f"SELECT ROUND(AVG({n1}), 2) FROM {t} WHERE {cat} = '{c}'",
                        [_round2(sum(r[2] for r in in_c) / len(in_c))]),
        "min": lambda: (f"What is the lowest {n1} of {entity}s with {cat} '{c}'?",
                        f"SELECT MIN({n1}) FROM {t} WHERE {cat} = '{c}'", [min(r[2] for r in in_c)]),
        "max": lambda: (f"What is the highest {n1} of {entity}s with {cat} '{c}'?",
                        f"SELECT MAX({n1}) FROM {t} WHERE {cat} = '{c}'", [max(r[2] for r in in_c)]),
        "group_by": lambda: (f"Which {cat} has the largest total {n1}?",
                             f"SELECT {cat} FROM {t} GROUP BY {cat} ORDER BY SUM({n1}) DESC LIMIT 1",
                             [max(totals, key=totals.get)] if len(top) == 1 or top[0] != top[1] else [None]),
        "having": lambda: (f"Which {cat} values have at least {k} {entity}s?",
                           f"SELECT {cat} FROM {t} GROUP BY {cat} HAVING COUNT(*) >= {k}", [g for g in counts if counts[g] >= k]),
        "subquery": lambda: (f"List the names of {entity}s whose {n1} is above the average {n1}.",
                             f"SELECT name FROM {t} WHERE {n1} > (SELECT AVG({n1}) FROM {t})", [r[0] for r in rows if r[2] > mean]),
        "insert": lambda: (f"Add a new {entity} named {new_name} with {cat} '{c}', {n1} {mid + 1} and {n2} {lo2}.",
                           f"INSERT INTO {t} (name, {cat}, {n1}, {n2}) VALUES ('{new_name}', '{c}', {mid + 1}, {lo2})", None),
        "update": lambda: (f"Change the {n2} of the {entity} named {row[0]} to {row[3] + 1}.",
                           f"UPDATE {t} SET {n2} = {row[3] + 1} WHERE name = '{row[0]}'", None),
        "delete": lambda: (f"Delete every {entity} whose {n1} is below {mid}.", f"DELETE FROM {t} WHERE {n1} < {mid}", None),
    }
    question, sql, label = q[skill]()
    kind = "modify" if label is None else "select"
    if kind == "select" and (not label or None in label):
        return None
    header = f"The name of this table is {table}, and the headers of this table are {','.join(x for x, _ in columns)}."
    return Task(question, table, columns, rows, skill, kind, label, sql, [skill], "generator", add_description=header)

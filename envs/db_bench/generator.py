"""Procedural single-skill SQL tasks: unlimited, seeded, every one solvable.

Each task uses one skill over a small random table. Question answers are computed here, in
Python, from the rows; the gold SQL is what the oracle runs through the env, so a generator bug
(SQL that disagrees with the Python answer) fails the oracle test. Modification tasks are judged
by the table the gold SQL leaves. Ambiguous draws (ties, empty answers, averages that round
differently in SQL and Python) are redrawn with the same RNG, so a seed always gives one task.

``names`` picks how tables, columns and people are named. "plain": one lowercase word each
(``employees``, ``salary``): a query needs no quoting. "wiki": as AgentBench's tables (taken from
Wikipedia) name them: several words, capitals and punctuation in table and column names
(``"Staff List (Head Office)"``, ``"Salary ($)"``), which SQL must quote with double quotes, and
people and categories whose names hold an apostrophe (``'Dara O''Neil'``, ``'Children''s Books'``),
which a string literal must double.
A model trained on plain tasks only writes ``FROM staff_list`` and ``'O'Neil'``: syntax errors
on most of AgentBench's questions. "mixed": each task draws one of the two.
"""

from __future__ import annotations

import random
from decimal import ROUND_HALF_UP, Decimal
from functools import partial

from envs import task_env
from envs.db_bench import wide
from envs.db_bench.tasks import Task, quote_ident, sql_literal

# The first family: one 4-column table shape, named by ``names``. ``skills=None`` draws from these
# only, so studies and pinned results keep their tasks.
SKILLS = ("select", "where", "order_by", "limit", "count", "sum", "avg", "min", "max",
          "group_by", "having", "subquery", "insert", "update", "delete")
# The AgentBench-shaped family (``wide.py``): wide all-TEXT tables; named as Wikipedia names
# tables whatever ``names`` says.
WIDE_SKILLS = wide.SKILLS
ALL_SKILLS = SKILLS + WIDE_SKILLS
GROUPS = {"wide": WIDE_SKILLS, "all": ALL_SKILLS}  # names a config may give for a family of skills


def expand_skills(skills: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """``skills=wide`` or ``[all, ...]``, as the config writes them, into the skills they name."""
    return task_env.expand_skills(skills, GROUPS)


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
# "wiki" names, per schema: table names, per column (name, category, numeric 1, numeric 2) the
# names it may carry, and category values (some with an apostrophe); plus full names of people.
_WIKI = {
    "employees": (["Staff List (Head Office)", "Employee Records 2019", "Company Staff, Berlin Branch"],
                  [["Employee Name", "Full name"], ["Department", "Dept."], ["Salary ($)", "Monthly Salary"],
                   ["Age (years)", "Age at Hire"]],
                  ["Sales", "Engineering", "HR", "Finance", "Legal", "Director's Office", "Support", "Research",
                   "Workers' Council", "Operations", "R&D", "Logistics"]),
    "products": (["Product Catalogue", "Store Inventory 2021", "Online Shop - Items"],
                 [["Product Name", "Item"], ["Category", "Product Line"], ["Price (USD)", "Unit Price"],
                  ["Units in Stock", "Stock Level"]],
                 ["Children's Books", "Toys", "Garden", "Food", "Music", "Men's Shoes", "Games", "Tools",
                  "Women's Clothing", "Office", "Pets", "Home & Kitchen"]),
    "students": (["Student Exam Results", "Class of 2020", "Exchange Students (Spring)"],
                 [["Student Name", "Full name"], ["Home City", "City of Origin"], ["Final Score", "Exam Score (%)"],
                  ["Age", "Age (years)"]],
                 ["Paris", "L'Aquila", "Oslo", "St. John's", "Cairo", "Quito", "Seoul", "N'Djamena", "Perth",
                  "Hanoi", "Porto", "New Delhi"]),
}
_SURNAMES = ["Martin", "O'Neil", "Garcia", "D'Souza", "Smith", "O'Brien", "Nakamura", "Dubois", "Kowalski",
             "N'Diaye", "Rossi", "Jensen"]
NAMES = ("plain", "wiki", "mixed")
MAX_COUNT = 12  # `count` answers are uniform over 0..MAX_COUNT: a constant guess wins 1 task in 13


def check_names(names: str) -> None:
    if names not in NAMES:
        raise ValueError(f"names={names!r}: expected one of {', '.join(NAMES)}")


def generate(seed: int, skills: tuple[str, ...] | list[str] | None = None, names: str = "plain") -> Task:
    check_names(names)
    rng = random.Random(seed)
    skill = rng.choice(list(skills or SKILLS))
    if skill in WIDE_SKILLS:
        draw = wide.draw
    else:
        wiki = names == "wiki" or (names == "mixed" and rng.random() < 0.5)  # plain draws nothing more: its tasks stay
        draw = partial(_draw, wiki=wiki)
    for _ in range(100):
        task = draw(rng, skill)
        if task is not None:
            return task
    raise RuntimeError(f"could not draw an unambiguous {skill} task for seed {seed}")


def _round2(x: float) -> float | None:
    """SQLite's ROUND(x, 2) rounds half away from zero, Python's round() to even: skip ties."""
    exact = Decimal(repr(x)) * 100
    if exact % 1 == Decimal("0.5"):
        return None
    return float((Decimal(repr(x))).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _draw(rng: random.Random, skill: str, wiki: bool = False) -> Task | None:
    table, entity, cat, all_values, nums = rng.choice(_SCHEMAS)
    (n1, lo1, hi1), (n2, lo2, hi2) = nums
    people, name_col, ident = _NAMES, "name", str  # plain: bare one-word columns
    if wiki:
        titles, variants, all_values = _WIKI[table]
        table = rng.choice(titles)
        name_col, cat, n1, n2 = (rng.choice(v) for v in variants)
        people, ident = [f"{first} {rng.choice(_SURNAMES)}" for first in _NAMES], quote_ident
    cat_values = rng.sample(all_values, 4)
    if skill == "count":  # the answer is drawn first, uniform (0 included: a value no row has)
        target, c = rng.randint(0, MAX_COUNT), rng.choice(cat_values)
        n = target + rng.randint(2, 6)
        cats = [c] * target + [rng.choice([v for v in cat_values if v != c]) for _ in range(n - target)]
        rng.shuffle(cats)
    else:
        n = rng.randint(5, 10)
        cats = [rng.choice(cat_values) for _ in range(n)]
    names = rng.sample(people, n)
    v1 = rng.sample(range(lo1, hi1), n)  # distinct: maxima and orderings are unambiguous
    rows = [[names[i], cats[i], v1[i], rng.randint(lo2, hi2)] for i in range(n)]
    columns = [(name_col, "TEXT"), (cat, "TEXT"), (n1, "INTEGER"), (n2, "INTEGER")]
    t = quote_ident(table)
    nm, ct, c1, c2 = (ident(x) for x in (name_col, cat, n1, n2))  # as SQL must write them
    row = rng.choice(rows)
    c = c if skill == "count" else row[1]
    in_c = [r for r in rows if r[1] == c]
    mid = sorted(v1)[n // 2]
    k = rng.randint(2, 3)
    new_name = rng.choice([x for x in people if x not in names] or ["Newcomer"])
    by_v1 = sorted(rows, key=lambda r: r[2])
    # sorted: a set's order of strings changes with each process's hash seed (the label's order with it)
    totals = {g: sum(r[2] for r in rows if r[1] == g) for g in sorted({r[1] for r in rows})}
    top = sorted(totals.values(), reverse=True)
    counts = {g: sum(r[1] == g for r in rows) for g in totals}
    mean = sum(v1) / n
    # skill: (question, gold SQL, answer computed in Python; None = ambiguous, redraw), built for
    # the drawn skill only (a `count` category may have no rows: no average of it)
    q = {
        "select": lambda: (f"What is the {n2} of the {entity} named {row[0]}?",
                           f"SELECT {c2} FROM {t} WHERE {nm} = {sql_literal(row[0])}", [row[3]]),
        "where": lambda: (f"List the names of all {entity}s whose {n1} is greater than {mid}.",
                          f"SELECT {nm} FROM {t} WHERE {c1} > {mid}", [r[0] for r in rows if r[2] > mid]),
        "order_by": lambda: (f"Which {entity} has the highest {n1}? Answer with the name.",
                             f"SELECT {nm} FROM {t} ORDER BY {c1} DESC LIMIT 1", [by_v1[-1][0]]),
        "limit": lambda: (f"List the names of the {k} {entity}s with the lowest {n1}.",
                          f"SELECT {nm} FROM {t} ORDER BY {c1} ASC LIMIT {k}", [r[0] for r in by_v1[:k]]),
        "count": lambda: (f"How many {entity}s have {cat} '{c}'?", f"SELECT COUNT(*) FROM {t} WHERE {ct} = {sql_literal(c)}",
                          [len(in_c)]),
        "sum": lambda: (f"What is the total {n1} of {entity}s with {cat} '{c}'?",
                        f"SELECT SUM({c1}) FROM {t} WHERE {ct} = {sql_literal(c)}", [sum(r[2] for r in in_c)]),
        "avg": lambda: (f"What is the average {n1} of {entity}s with {cat} '{c}', rounded to 2 decimal places?",
                        f"SELECT ROUND(AVG({c1}), 2) FROM {t} WHERE {ct} = {sql_literal(c)}",
                        [_round2(sum(r[2] for r in in_c) / len(in_c))]),
        "min": lambda: (f"What is the lowest {n1} of {entity}s with {cat} '{c}'?",
                        f"SELECT MIN({c1}) FROM {t} WHERE {ct} = {sql_literal(c)}", [min(r[2] for r in in_c)]),
        "max": lambda: (f"What is the highest {n1} of {entity}s with {cat} '{c}'?",
                        f"SELECT MAX({c1}) FROM {t} WHERE {ct} = {sql_literal(c)}", [max(r[2] for r in in_c)]),
        "group_by": lambda: (f"Which {cat} has the largest total {n1}?",
                             f"SELECT {ct} FROM {t} GROUP BY {ct} ORDER BY SUM({c1}) DESC LIMIT 1",
                             [max(totals, key=totals.get)] if len(top) == 1 or top[0] != top[1] else [None]),
        "having": lambda: (f"Which {cat} values have at least {k} {entity}s?",
                           f"SELECT {ct} FROM {t} GROUP BY {ct} HAVING COUNT(*) >= {k}", [g for g in counts if counts[g] >= k]),
        "subquery": lambda: (f"List the names of {entity}s whose {n1} is above the average {n1}.",
                             f"SELECT {nm} FROM {t} WHERE {c1} > (SELECT AVG({c1}) FROM {t})", [r[0] for r in rows if r[2] > mean]),
        "insert": lambda: (f"Add a new {entity} named {new_name} with {cat} '{c}', {n1} {mid + 1} and {n2} {lo2}.",
                           f"INSERT INTO {t} ({nm}, {ct}, {c1}, {c2}) VALUES ({sql_literal(new_name)}, {sql_literal(c)}, {mid + 1}, {lo2})",
                           None),
        "update": lambda: (f"Change the {n2} of the {entity} named {row[0]} to {row[3] + 1}.",
                           f"UPDATE {t} SET {c2} = {row[3] + 1} WHERE {nm} = {sql_literal(row[0])}", None),
        "delete": lambda: (f"Delete every {entity} whose {n1} is below {mid}.", f"DELETE FROM {t} WHERE {c1} < {mid}", None),
    }
    question, sql, label = q[skill]()
    kind = "modify" if label is None else "select"
    if kind == "select" and (not label or None in label):
        return None
    header = f"The name of this table is {table}, and the headers of this table are {','.join(x for x, _ in columns)}."
    return Task(question, table, columns, rows, skill, kind, label, sql, [skill], "generator", add_description=header)

"""AgentBench-shaped SQL tasks: wide all-TEXT tables named as Wikipedia names them, questions and
modifications phrased as AgentBench phrases them.

The generator's first family (``generator.py``) has one table shape of 4 columns and one phrasing
per skill; a model trained on it scored 1-2 of AgentBench's 60 db dev tasks, and 40 of those 60
are INSERTs and UPDATEs over 3-9 columns named ``Episode #``, ``Tonnage (GRT)``, ``H / A`` or
``School/Club Team``, with every value stored as TEXT. This family draws such tables (themes
below: sports standings, shipwrecks, chart histories, draft picks, ...; 4-9 columns; 6-12 rows)
and asks:

  lookup      What is the <column> when <column> is <value>?          (one row matches)
  lookup2     Which <column> has a <column> of <v1>, and a <column> of <v2>?
  count_rows  How many rows have <column> <value>?   (the count is drawn first, 0..9)
  insert_row  a new row, every column's value given (several phrasings, as AgentBench's)
  update_row  one or two columns of the row whose key is <value> set to new values
  delete_row  the rows whose <column> is <value> deleted

Answers are computed in Python from the rows; the gold SQL (identifiers in backticks, as
AgentBench's references write them; apostrophes doubled) is what the oracle runs through the
env, and modifications are judged by the table it leaves. Comparisons are MySQL's
(case-insensitive, ``mysql_text``) as on AgentBench's tasks, whose questions often spell values
in lowercase. Ambiguous draws (a lookup matching two rows, a modification that changes nothing)
return None and are redrawn by the caller with the same RNG.
"""

from __future__ import annotations

import random

from envs.db_bench.tasks import Task, sql_literal

SKILLS = ("lookup", "lookup2", "count_rows", "insert_row", "update_row", "delete_row")
MAX_COUNT = 9  # `count_rows` answers: 0..MAX_COUNT, up to the table's rows; no count wins more than 1 task in 9

_FIRST = ["Alice", "Bernhard", "Carla", "Derek", "Elena", "Felix", "Grace", "Henry", "Ines", "Jalani", "Karen",
          "Lilly", "Marco", "Naomi", "Oscar", "Paula", "Quentin", "Rosa", "Stefan", "Tiger", "Ursula", "Viktor",
          "Wanda", "Yusuf"]
_LAST = ["Langer", "O'Neil", "King", "Sidek", "Forrest", "D'Angelo", "Murdoch", "Kogure", "Osaka", "Smith",
         "Lee", "Nakamura", "Dubois", "O'Brien", "Kowalski", "Rossi", "Jensen", "van der Berg"]
_PLACES = ["San Diego", "Birmingham, England", "Tokyo, Japan", "Bratislava", "Auckland North", "Armadale",
           "Creswick", "Texas Stadium", "St. John's", "Porto", "Quito", "Perth", "L'Aquila", "Oslo", "Dover",
           "New Delhi", "Cairo", "Boonah"]
_COUNTRIES = ["Germany", "United States", "Netherlands", "Romania", "Japan", "Canada", "Iran", "Brazil", "Kenya",
              "Norway", "Côte d'Ivoire", "New Zealand", "Italy", "Chile"]
_CLUBS = ["FK Trakai", "Athlone Town", "Atlanta Falcons", "Ballarat FL", "Red Sox", "Porto", "Creswick",
          "Northeastern University", "Dallas Cowboys", "St. Patrick's Athletic", "Hearts", "Newport County",
          "Bohemians", "Derry City"]
_ADJ = ["Silent", "Golden", "Broken", "Midnight", "Crimson", "Lonely", "Electric", "Hidden", "Northern", "Wild",
        "Distant", "Paper"]
_NOUN = ["River", "Heart", "Highway", "Garden", "Summer", "Letters", "Harbour", "Mirror", "Kingdom", "Lights",
         "Shadows", "Station"]


def _person(rng): return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
def _title(rng): return f"{rng.choice(_ADJ)} {rng.choice(_NOUN)}"
def _year(rng): return str(rng.randint(1950, 2023))


def _date(rng):
    month = rng.choice(["January", "February", "March", "April", "May", "June", "July", "August", "September",
                        "October", "November", "December"])
    day, year = rng.randint(1, 28), rng.randint(1900, 2022)
    return f"{day} {month} {year}" if rng.random() < 0.5 else f"{month} {day}, {year}"


def _int(lo, hi): return lambda rng: str(rng.randint(lo, hi))
def _thousands(lo, hi): return lambda rng: f"{rng.randint(lo, hi):,}"
def _choice(*values): return lambda rng: rng.choice(values)
def _score(rng): return f"{rng.randint(0, 5)}–{rng.randint(0, 5)}"
def _result(rng): return f"{rng.choice('WL')} {rng.randint(10, 45)}–{rng.randint(3, 40)}"


_club, _country, _place, _first_name = (_choice(*names) for names in (_CLUBS, _COUNTRIES, _PLACES, _FIRST))
_PLAYER_POSITIONS = _choice("Quarterback", "Running back", "Wide receiver", "Linebacker", "Cornerback", "Kicker")
# (table names, what a row is, key column (index), columns: (name, value drawer)). A column whose
# drawer gives few values (a position, a fate) is what count_rows and delete_row filter on.
_THEMES = [
    (["Football Standings", "League Table 1998", "football_league_table"], "club", 1,
     [("Position", _int(1, 20)), ("Club", _club), ("Games played", _int(18, 30)),
      ("Wins", _int(0, 20)), ("Draws", _int(0, 10)), ("Losses", _int(0, 20)), ("Goals scored", _int(10, 70)),
      ("Goals conceded", _int(10, 70)), ("Points", _int(5, 60))]),
    (["Shipping Incidents", "shipwrecks", "Ships Sunk in 1917"], "ship", 1,
     [("Date", _date), ("Name", _title), ("Nationality", _country),
      ("Tonnage (GRT)", _thousands(500, 12000)), ("Fate", _choice("Sunk", "Damaged", "Captured", "Scuttled"))]),
    (["Golf Tournament Winners", "Golf Champions", "Masters Winners (1980-2005)"], "player", 0,
     [("Player", _person), ("Country", _country), ("Year(s) won", _year),
      ("Total", _int(265, 295)), ("To par", _choice("+2", "E", "-4", "-8", "-18", "+1"))]),
    (["Actress Filmography", "Filmography of Rosa O'Neil", "film_roles"], "film", 1,
     [("Year", _year), ("Title", _title), ("Role", _first_name),
      ("Notes", _choice("Lead role", "Cameo", "Voice", "TV film", "Uncredited"))]),
    (["Skyscraper Database", "Tallest buildings in Columbus", "skyscrapers_in_Columbus"], "building", 1,
     [("Rank", _int(1, 40)), ("Name", lambda r: f"{_title(r)} Tower"), ("Height ft / m", _int(300, 1200)),
      ("Floors", _int(20, 110)), ("Year", _year), ("City", _place)]),
    (["Elected Members of New Zealand Parliament", "Election Results (1987)", "members_of_parliament"], "member", 0,
     [("Name", _person), ("Electorate", _place),
      ("Party", _choice("Labour", "National", "Green", "Independent")), ("Date of birth", _date),
      ("Age", _int(25, 80))]),
    (["Music Chart History", "Singles Chart Number Ones", "chart_toppers_1978"], "single", 1,
     [("#", _int(1, 60)), ("Title", _title), ("Artist", _person), ("Highest pos. reached", _int(1, 40)),
      ("Weeks at No. 1", _int(1, 12))]),
    (["Race Results", "Formula Nippon Season 2004", "race_results"], "round", 1,
     [("Round", _int(1, 12)), ("Circuit", lambda r: f"{r.choice(_PLACES).split(',')[0]} Circuit"), ("Date", _date),
      ("Pole Position", _person), ("Fastest Lap", _person), ("Winning Driver", _person),
      ("Winning Team", _club)]),
    (["Football Draft Picks", "NFL Draft 1990", "draft_picks"], "player", 2,
     [("Round", _int(1, 12)), ("Pick", _int(1, 336)), ("Player", _person), ("Position", _PLAYER_POSITIONS),
      ("School/Club Team", _choice("USC", "Ohio State", "Miami (FL)", "Notre Dame", "Texas A&M"))]),
    (["Game Schedule", "game_results", "Dallas Cowboys 1986 Season"], "game", 0,
     [("Week", _int(1, 19)), ("Date", _date), ("Opponent", _club), ("Result", _result),
      ("Game site", _place), ("Attendance", _thousands(20000, 80000))]),
    (["Olympic Medals", "Medal Tally", "Olympic_medal_counts"], "nation", 1,
     [("Rank", _int(1, 30)), ("Nation", _country), ("Gold", _int(0, 9)),
      ("Silver", _int(0, 9)), ("Bronze", _int(0, 9)), ("Total", _int(0, 27))]),
    (["Primary Schools in Western Australia", "School Location Table", "schools_by_suburb"], "school", 0,
     [("Name", lambda r: f"{_title(r)} Primary School"), ("Suburb", _place),
      ("LGA", _place), ("Region", _choice("North", "South", "East", "Metropolitan")),
      ("Established", _year)]),
    (["Doctor Who Episodes", "Episode List (Series 4)", "episode_guide"], "episode", 0,
     [("Episode #", lambda r: f"S{r.randint(1, 40)}"), ("Original airdate (UK)", _date), ("Episode title", _title),
      ("Director", _person), ("Viewers (millions)", lambda r: f"{r.randint(3, 12)}.{r.randint(10, 99)}")]),
    (["Football Match Results", "European Cup 2007", "match_results"], "match", 0,
     [("Date", _date), ("Round", _choice("Group stage", "Round of 16 First leg", "Round of 16 Second leg",
                                         "Quarter-final")),
      ("Opponents", _club), ("H / A", _choice("H", "A")), ("Result F–A", _score),
      ("Attendance", _thousands(5000, 90000))]),
]


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _say(value: str, rng) -> str:
    """A value as a question states it: quoted or not, as AgentBench's questions vary."""
    return f"'{value}'" if rng.random() < 0.5 else value


def _listing(items: list[str]) -> str:
    return ", ".join(items[:-1]) + f", and {items[-1]}" if len(items) > 1 else items[0]


def _unique(rows, col) -> list[int]:
    """Rows whose value in column ``col`` no other row has (case-insensitively, as MySQL compares)."""
    values = [r[col].lower() for r in rows]
    return [i for i, v in enumerate(values) if values.count(v) == 1]


def _spread(rows) -> list[int]:
    """Columns whose values are all different in this table: the only ones a question asks for.
    A column of few values (``H / A``, a ship's fate) would make its most common value a guess
    that wins without a query, a reward RL would find."""
    return [c for c in range(len(rows[0])) if len(_unique(rows, c)) == len(rows)]


def _distinct(make, rng, n: int) -> list[str]:
    """Up to n values of one drawer, no two equal case-insensitively (a key column's values)."""
    seen: dict[str, str] = {}
    for _ in range(20 * n):
        v = make(rng)
        seen.setdefault(v.lower(), v)
        if len(seen) == n:
            break
    return list(seen.values())


def draw(rng: random.Random, skill: str) -> Task | None:
    tables, entity, key, spec = rng.choice(_THEMES)
    table = rng.choice(tables)
    names = [c for c, _ in spec]
    keys = _distinct(spec[key][1], rng, rng.randint(6, 12))
    rows = [[k if i == key else make(rng) for i, (_, make) in enumerate(spec)] for k in keys]
    built = _SKILLS[skill](rng, rows, spec, key, _q(table), table, entity)
    if built is None:
        return None
    question, sql, label = built
    if label is not None and rng.random() < 0.3:
        question = question.lower()  # as WikiSQL's questions; MySQL's comparison still matches the values
    header = f"The name of this table is {table}, and the headers of this table are {','.join(names)}."
    return Task(question, table, [(c, "TEXT") for c in names], rows, skill, "modify" if label is None else "select",
                label, sql, [skill], "generator", add_description=header, mysql_text=True)


def _lookup(rng, rows, spec, key, t, table, entity):
    names = [c for c, _ in spec]
    col = rng.randrange(len(names))
    unique = _unique(rows, col)
    if not unique:
        return None
    askable = [c for c in _spread(rows) if c != col]
    if not askable:
        return None
    row, ask = rows[rng.choice(unique)], rng.choice(askable)
    c, a, v = names[col], names[ask], row[col]
    question = rng.choice([f"What is the {a} when {c} is {_say(v, rng)}?",
                           f"Which {a} has a {c} of {_say(v, rng)}?",
                           f"What {a} has {c} {_say(v, rng)}?",
                           f"Name the {a} for the {entity} with {c} {_say(v, rng)}.",
                           f"In the {table} table, what is the {a} of the row whose {c} is {_say(v, rng)}?"])
    return question, f"SELECT {_q(a)} FROM {t} WHERE {_q(c)} = {sql_literal(v)}", [row[ask]]


def _lookup2(rng, rows, spec, key, t, table, entity):
    names = [c for c, _ in spec]
    ask = rng.choice(_spread(rows) or [None])
    if ask is None:
        return None
    c1, c2 = rng.sample([c for c in range(len(names)) if c != ask], 2)
    row = rng.choice(rows)
    match = [r for r in rows if r[c1].lower() == row[c1].lower() and r[c2].lower() == row[c2].lower()]
    if len(match) != 1:
        return None
    a, (n1, v1), (n2, v2) = names[ask], (names[c1], row[c1]), (names[c2], row[c2])
    question = rng.choice([f"Which {a} has a {n1} of {_say(v1, rng)}, and a {n2} of {_say(v2, rng)}?",
                           f"What is the {a} when the {n1} is {_say(v1, rng)} and the {n2} is {_say(v2, rng)}?",
                           f"{n1} of {_say(v1, rng)}, and a {n2} of {_say(v2, rng)} has what {a}?"])
    sql = f"SELECT {_q(a)} FROM {t} WHERE {_q(n1)} = {sql_literal(v1)} AND {_q(n2)} = {sql_literal(v2)}"
    return question, sql, [row[ask]]


def _count_rows(rng, rows, spec, key, t, table, entity):
    """The count is drawn first (0 included: a value no row has), then exactly that many rows get
    the value: no count is a likely guess."""
    target, col = rng.randint(0, MAX_COUNT), rng.choice([i for i in range(len(spec)) if i != key])
    (c, make), v = spec[col], spec[col][1](rng)
    if target > len(rows):
        return None
    for r in rows:
        for _ in range(20):
            if r[col].lower() != v.lower():
                break
            r[col] = make(rng)
        else:
            return None  # the column's drawer has no other value
    for i in rng.sample(range(len(rows)), target):
        rows[i][col] = v
    question = rng.choice([f"How many rows have a {c} of {_say(v, rng)}?",
                           f"What is the total number of {entity}s with {c} {_say(v, rng)}?",
                           f"How many {entity}s in the {table} table have {c} {_say(v, rng)}?"])
    return question, f"SELECT COUNT(*) FROM {t} WHERE {_q(c)} = {sql_literal(v)}", [target]


def _insert_row(rng, rows, spec, key, t, table, entity):
    names = [c for c, _ in spec]
    new = [make(rng) for _, make in spec]
    if any(r[key].lower() == new[key].lower() for r in rows):
        return None
    quoted, quoted_names = [f"'{v}'" for v in new], [f"'{c}'" for c in names]
    question = rng.choice([
        f"Insert a new row into the '{table}' table with the following values: "
        + _listing([f"{c} as {q}" for c, q in zip(names, quoted)]) + ".",
        f"Insert into table '{table}' with {len(names)} columns {_listing(quoted_names)}. The values "
        + _listing([f"for column '{c}' is {q}" for c, q in zip(names, quoted)]) + ".",
        f"Insert into the '{table}' table the values for {_listing(names)}, which are {_listing(quoted)}, respectively.",
        f"Add a new {entity} to {table} with " + _listing([f"{c} {q}" for c, q in zip(names, quoted)]) + ".",
    ])
    sql = f"INSERT INTO {t} ({', '.join(map(_q, names))}) VALUES ({', '.join(map(sql_literal, new))})"
    return question, sql, None


def _update_row(rng, rows, spec, key, t, table, entity):
    unique = _unique(rows, key)
    if not unique:
        return None
    row, k = rows[rng.choice(unique)], spec[key][0]
    cols = rng.sample([i for i in range(len(spec)) if i != key], rng.choice([1, 1, 2]))
    new = {i: spec[i][1](rng) for i in cols}
    if any(new[i] == row[i] for i in cols):
        return None
    sets = _listing([f"{spec[i][0]} to '{new[i]}'" for i in cols])
    becomes = _listing([f"{spec[i][0]} is '{new[i]}'" for i in cols])
    question = rng.choice([
        f"Update the {sets} for the {entity} whose {k} is {_say(row[key], rng)} in the {table} table.",
        f"In the '{table}' table, set the {sets} where the '{k}' column equals '{row[key]}'.",
        f"Change the {sets} for {row[key]} in {table}.",
        f"For the row with {k} {_say(row[key], rng)}, update {table} so that the {becomes}.",
    ])
    assign = ", ".join(f"{_q(spec[i][0])} = {sql_literal(new[i])}" for i in cols)
    return question, f"UPDATE {t} SET {assign} WHERE {_q(k)} = {sql_literal(row[key])}", None


def _delete_row(rng, rows, spec, key, t, table, entity):
    col = rng.randrange(len(spec))
    c, v = spec[col][0], rng.choice(rows)[col]
    if all(r[col].lower() == v.lower() for r in rows):
        return None  # deleting every row: an empty table, not a targeted deletion
    question = rng.choice([f"Delete the rows of {table} whose {c} is {_say(v, rng)}.",
                           f"Remove every {entity} with {c} {_say(v, rng)} from the '{table}' table.",
                           f"In the {table} table, delete all records where '{c}' equals '{v}'."])
    return question, f"DELETE FROM {t} WHERE {_q(c)} = {sql_literal(v)}", None


_SKILLS = {"lookup": _lookup, "lookup2": _lookup2, "count_rows": _count_rows, "insert_row": _insert_row,
           "update_row": _update_row, "delete_row": _delete_row}

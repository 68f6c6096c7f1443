"""AgentBench-shaped shell tasks: the kinds of question AgentBench's os_interaction asks, in its phrasings.

The generator's first family (``generator.py``) asks about files it writes under /root, one
phrasing per skill; a model trained on it solved none of AgentBench's 26 os dev tasks, whose
questions are other kinds: hidden or empty files and directories under /home, files modified in
the last day, names starting with a letter, disk use in human-readable form, users and groups of
the system, whether a command is installed, what a script without execute permission prints, log
lines of one person's action, and a background program's interval or file. This family draws such
tasks on fresh directories and files (names, counts and values drawn per task):

  count_hidden     How many hidden files are in <dir>? (not including subdirectories)
  count_name_start How many files whose name starts with a letter / a digit / ... exist in <dir>?
  count_empty      How many empty files are there in <dir> and all of its content?
  count_dirs       directories under <dir>: recursively, subdirectories only, or non-hidden ones
  count_recent     files modified in the last 24 hours / N days, or more than N days ago
  count_ext_tree   Recursively find how many files have the extension .<ext>
  log_count        lines of a log (stock trades, web requests, logins) with given fields; or a sum
  exec_output      what a script prints that has no execute permission
  installed        whether a command is installed ('installed' / 'not-yet'), or its full path
  disk_usage       disk space used by <dir>, human-readable (judged by size, as AgentBench does)
  system_query     CPUs, kernel limits, groups above or below a GID
  user_query       users and groups after the task adds some (counts, members, login shells)
  process_file     which file a background program writes every second
  process_interval how many seconds a background program waits between writes

The truth comes from the task: an answer computed here from what the set-up writes (``match``), or,
where it depends on the machine (users, CPUs, disk blocks), the reference command's output on the
pristine task, computed by the env before the agent acts (``check`` with a null entry, as
AgentBench's integer-match and size-match tasks). What the agent deletes or rewrites cannot change
either. The oracle's commands are the reference solutions, so a wrong answer computed here fails
the oracle test.

These tasks write outside /root (/home, /srv, /opt, /usr/local/bin, /var/log), add users and start
background programs: they need the sandbox, never ``unsafe`` mode.
"""

from __future__ import annotations

import random

from envs.os_interaction.generator import EXTS, NAMES, WORDS, q
from envs.os_interaction.tasks import OSTask

MAX_COUNT = 12  # counting answers drawn uniform over 1..MAX_COUNT where the task decides them (as generator.py)
_TOOL_SUFFIXES = ("ctl", "-cli", "d", "tool", "-agent", "x")  # made-up command names no distribution ships
INTEGER_MATCH = ("python", "from sys import argv\ntry:\n    exit(0 if int(argv[1].strip()) == int(argv[2].strip()) else 1)\n"
                           "except ValueError:\n    exit(1)\n")
# AgentBench's size-match, which also reads du's one-decimal sizes ("8.0K"): its own int() fails on those.
SIZE_MATCH = ("python", """from sys import argv
import re
UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
def size(text):
    m = re.fullmatch(r"\\s*([0-9]+(?:\\.[0-9]+)?)\\s*([KMGT]?)(?:i?B|yte|ytes)?\\s*", text, re.I)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * UNITS[m.group(2).upper()]
try:
    exit(0 if abs(size(argv[1]) - size(argv[2])) < 1e-9 * size(argv[2]) + 1e-9 else 1)
except ValueError:
    exit(1)
""")


def _dir(rng: random.Random) -> str:
    """A directory the task owns: /home and /root start empty in the sandbox, the others are new."""
    return rng.choice(["/home", "/root", f"/home/{rng.choice(WORDS)}", f"/root/{rng.choice(WORDS)}",
                       f"/srv/{rng.choice(WORDS)}", f"/opt/{rng.choice(WORDS)}"])


def _files(paths: dict[str, str]) -> list[str]:
    """Set-up commands writing ``{path: content}`` ('' = an empty file), parents made first."""
    parents = sorted({p.rsplit("/", 1)[0] for p in paths})
    return [f"mkdir -p {' '.join(q(d) for d in parents)}",
            *(f": > {q(p)}" if not text else f"printf '%s\\n' {q(text)} > {q(p)}" for p, text in paths.items())]


def _line(rng) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5)))


def _names(rng, n: int, taken: list[str] = ()) -> list[str]:
    """``n`` distinct file-name stems (words, or words with a number when more are needed), none the
    last part of a path in ``taken`` (a file where a directory of that name is would fail the set-up)."""
    used = {p.rsplit("/", 1)[-1] for p in taken}
    return rng.sample([s for s in (*WORDS, *(f"{w}{i}" for w in WORDS for i in range(2, 4))) if s not in used], n)


def _task(skill, description, init, answer, command, start=None) -> OSTask:
    return OSTask(description=description, init=[("bash", " && ".join(init) or "true")], start=start,
                  match={"answer": str(answer), "strip": True}, labels=[skill], source="generator", solution=[command])


def _measured(skill, description, init, command, check=INTEGER_MATCH) -> OSTask:
    """A question whose answer depends on the machine: the env runs ``command`` on the pristine task
    (the null check entry) and ``check`` compares the agent's answer with that output."""
    return OSTask(description=description, init=[("bash", " && ".join(init) or "true")], check=[None, check],
                  example=("bash", command), labels=[skill], source="generator", solution=[command])


def count_hidden(rng):
    d, n = _dir(rng), rng.randint(1, MAX_COUNT)
    stems = _names(rng, n + rng.randint(2, 8) + 3)
    hidden, visible, inner = stems[:n], stems[n:-3], stems[-3:]
    files = {f"{d}/.{s}{rng.choice(['', '', '.' + rng.choice(EXTS)])}": rng.choice(["", _line(rng)]) for s in hidden}
    files |= {f"{d}/{s}.{rng.choice(EXTS)}": _line(rng) for s in visible}
    # hidden files one level down and a hidden directory: neither is a hidden file *in* the directory
    files |= {f"{d}/{inner[0]}/.{inner[1]}": _line(rng), f"{d}/.{inner[2]}/{inner[1]}.txt": _line(rng)}
    description = rng.choice([f"How many hidden files are in {d}? (not including subdirectories)",
                              f"Count the hidden files directly inside {d} (names starting with a dot; do not look "
                              "into subdirectories)."])
    return _task("count_hidden", description, _files(files), n, f"find {d} -maxdepth 1 -type f -name '.*' | wc -l")


_STARTS = {  # what a question asks names to start with: (phrase, find pattern, which kinds of name count)
    "letter": ("a letter", "[[:alpha:]]*", ("lower", "upper")),
    "digit": ("a digit", "[[:digit:]]*", ("digit",)),
    "upper": ("an uppercase letter", "[[:upper:]]*", ("upper",)),
    "lower": ("a lowercase letter", "[[:lower:]]*", ("lower",)),
}


def count_name_start(rng):
    d, (phrase, pattern, counted) = _dir(rng), _STARTS[rng.choice(sorted(_STARTS))]
    n = rng.randint(1, MAX_COUNT)
    kinds = [rng.choice(counted) for _ in range(n)]
    kinds += [rng.choice([k for k in ("lower", "upper", "digit", "hidden", "underscore") if k not in counted])
              for _ in range(rng.randint(2, 8))]
    spell = {"lower": str, "upper": str.capitalize, "digit": lambda s: f"{rng.randint(0, 99)}{s}",
             "hidden": lambda s: f".{s}", "underscore": lambda s: f"_{s}"}
    files = {f"{d}/{spell[k](s)}": _line(rng) for k, s in zip(kinds, _names(rng, len(kinds)))}
    description = rng.choice([f"How many files whose name starts with {phrase} exist in {d}?",
                              f"In {d}, how many files have a name that begins with {phrase}?"])
    return _task("count_name_start", description, _files(files), n,
                 f"find {d} -maxdepth 1 -type f -name '{pattern}' | wc -l")


def _tree_dirs(rng, d, k: int) -> list[str]:
    """``k`` directories under ``d`` (some nested), as absolute paths."""
    dirs: list[str] = []
    for stem in _names(rng, k):
        parent = rng.choice([d, d, *dirs])
        dirs.append(f"{parent}/{stem}")
    return dirs


def count_empty(rng):
    d, n = _dir(rng), rng.randint(1, MAX_COUNT)
    dirs = [d, *_tree_dirs(rng, d, rng.randint(1, 3))]
    stems = _names(rng, n + rng.randint(2, 8), dirs)
    files = {f"{rng.choice(dirs)}/{s}{rng.choice(['', '.' + rng.choice(EXTS)])}": "" if i < n else _line(rng)
             for i, s in enumerate(stems)}
    empty_dir = f"{d}/{rng.choice(['cache', 'spool', 'empty'])}"  # an empty directory is not an empty file
    description = rng.choice([f"How many empty files are there in {d} and all of its content?",
                              f"How many empty files are in {d}, including its subdirectories?"])
    return _task("count_empty", description, [*_files(files), f"mkdir -p {empty_dir}"], n,
                 f"find {d} -type f -empty | wc -l")


def count_dirs(rng):
    d = _dir(rng)
    dirs = _tree_dirs(rng, d, rng.randint(1, MAX_COUNT))
    hidden = [f"{d}/.{s}" for s in _names(rng, rng.randint(0, 3))]
    files = {f"{rng.choice([d, *dirs])}/{s}.{rng.choice(EXTS)}": _line(rng) for s in _names(rng, rng.randint(1, 6))}
    init = [f"mkdir -p {' '.join(q(x) for x in dirs + hidden)}", *_files(files)]
    top = [x for x in dirs if x.count("/") == d.count("/") + 1]
    kind = rng.choice(["recursive", "below", "top"])
    if kind == "recursive":  # AgentBench's reference (find <dir> -type d | wc -l) counts the directory itself
        return _task("count_dirs", f"How many directories (recursively) are in the {d} directory?", init,
                     1 + len(dirs) + len(hidden), f"find {d} -type d | wc -l")
    if kind == "below":
        return _task("count_dirs", f"How many subdirectories does {d} contain at any depth (not counting {d} "
                     "itself)?", init, len(dirs) + len(hidden), f"find {d} -mindepth 1 -type d | wc -l")
    return _task("count_dirs", f"How many directories are in {d} (excluding hidden directories; not "
                 "recursively)?", init, len(top), f"find {d} -mindepth 1 -maxdepth 1 -type d ! -name '.*' | wc -l")


def count_recent(rng):
    d, n = _dir(rng), rng.randint(1, MAX_COUNT)
    days = rng.choice([1, 1, 2, 3, 5, 7])
    window = "24 hours" if days == 1 else f"{days} days"
    older = rng.random() < 0.3  # ask for the old files instead: the count drawn is theirs
    dirs = [d, *_tree_dirs(rng, d, rng.randint(0, 3))]
    stems = _names(rng, n + rng.randint(2, 8))
    files = {f"{rng.choice(dirs)}/{s}.{rng.choice(EXTS)}": _line(rng) for s in stems}
    # old files a clear margin past the window (the episode's minutes cannot move one across it)
    old = [p for i, p in enumerate(files) if (i < n) == older]
    init = [*_files(files), *(f"touch -d '{rng.randint(days + 2, 400)} days ago' {q(p)}" for p in old)]
    if older:
        return _task("count_recent", f"How many files in {d} (recursively) were last modified more than {days} "
                     "days ago?", init, n, f"find {d} -type f -mtime +{days} | wc -l")
    return _task("count_recent", f"How many files in {d} (recursively) were modified in the last {window}?", init, n,
                 f"find {d} -type f -mtime -{days} | wc -l")


def count_ext_tree(rng):
    d, ext, n = _dir(rng), rng.choice([*EXTS, *WORDS]), rng.randint(1, MAX_COUNT)
    dirs = [d, *_tree_dirs(rng, d, rng.randint(1, 3))]
    others = [e for e in (*EXTS, "bak", "cfg") if e != ext]
    stems = _names(rng, n + rng.randint(2, 10))
    files = {f"{rng.choice(dirs)}/{'.' * (rng.random() < 0.2)}{s}.{ext if i < n else rng.choice(others)}": _line(rng)
             for i, s in enumerate(stems)}
    decoy = f"{d}/{rng.choice(WORDS)}x.{ext}"  # a directory named like the files: not a file
    where = "" if d == "/root" and rng.random() < 0.5 else f" in {d}"  # the shell starts in /root, as AgentBench's
    description = rng.choice([f"Recursively find how many files{where} have the extension .{ext}",
                              f"How many files{where} (searching all subdirectories) have the extension .{ext}?"])
    return _task("count_ext_tree", description, [*_files(files), f"mkdir -p {q(decoy)}"], n,
                 f"find {d} -type f -name '*.{ext}' | wc -l")


def _stock_log(rng):
    people = [n.capitalize() for n in rng.sample(NAMES, rng.randint(2, 4))]
    rows = [(rng.choice(people), rng.choice(["Purchase", "Sell"]), rng.randint(0, 99), rng.randint(1, 999))
            for _ in range(rng.randint(20, 80))]
    path = rng.choice(["/usr/stock.log", "/var/log/stock.log", f"/root/{rng.choice(WORDS)}-trades.log"])
    who, action = rng.choice(people), rng.choice(["Purchase", "Sell"])
    verb = {"Purchase": "bought", "Sell": "sold"}[action]
    intro = (f"Stock logs are shown in {path}. The columns are name, action, stock index and count, separated "
             "by ' | '.")
    if rng.random() < 0.7:
        return (path, [" | ".join(map(str, r)) for r in rows], f"{intro} Tell me how many times {who} {verb} a stock.",
                sum(r[:2] == (who, action) for r in rows), f"grep '^{who} | {action} |' {path} | wc -l")
    return (path, [" | ".join(map(str, r)) for r in rows], f"{intro} What is the total count of stocks {who} {verb}?",
            sum(r[3] for r in rows if r[:2] == (who, action)),
            f"awk -F' [|] ' '$1 == \"{who}\" && $2 == \"{action}\" {{s += $4}} END {{print s + 0}}' {path}")


def _access_log(rng):
    pages = [f"/{w}" for w in rng.sample(WORDS, 5)]
    rows = [(f"10.0.{rng.randint(0, 9)}.{rng.randint(1, 254)}", rng.choice(["GET", "POST"]), rng.choice(pages),
             rng.choice([200, 200, 200, 301, 404, 500])) for _ in range(rng.randint(20, 80))]
    path = rng.choice(["/var/log/access.log", f"/var/log/{rng.choice(WORDS)}/access.log"])
    lines = [f'{ip} - - [06/Dec/2026:10:{i % 60:02d}:00 +0000] "{m} {p} HTTP/1.1" {s} {100 + i}'
             for i, (ip, m, p, s) in enumerate(rows)]
    if rng.random() < 0.5:
        status = rng.choice([404, 500, 301])
        return (path, lines, f"{path} is a web server access log. How many requests got the status code {status}?",
                sum(r[3] == status for r in rows), f"awk '$9 == {status}' {path} | wc -l")
    page = rng.choice(pages)
    return (path, lines, f"{path} is a web server access log. How many GET requests were made for the page {page}?",
            sum(r[1:3] == ("GET", page) for r in rows), f"grep -c '\"GET {page} HTTP' {path}")


def _login_log(rng):
    users = rng.sample(NAMES, rng.randint(2, 5))
    rows = [(rng.choice(users), rng.choice(["OK", "FAILED"])) for _ in range(rng.randint(15, 60))]
    path = rng.choice(["/var/log/logins.log", f"/root/{rng.choice(WORDS)}.log"])
    lines = [f"2026-12-{1 + i % 28:02d} 0{i % 10}:00:00 login user={u} result={r}" for i, (u, r) in enumerate(rows)]
    who, result = rng.choice(users), rng.choice(["OK", "FAILED"])
    what = {"OK": "successful", "FAILED": "failed"}[result]
    return (path, lines, f"{path} records logins, one per line. How many {what} logins did the user {who} have?",
            sum(r == (who, result) for r in rows), f"grep -c 'user={who} result={result}$' {path}")


def log_count(rng):
    path, lines, description, answer, command = rng.choice([_stock_log, _stock_log, _access_log, _login_log])(rng)
    return _task("log_count", description, _files({path: "\n".join(lines)}), answer, command)


def exec_output(rng):
    stem = rng.choice(WORDS)
    home_form = rng.random() < 0.5
    path = f"/root/{stem}" if home_form else f"{_dir(rng)}/{stem}.sh"
    shown = f"~/{stem}" if home_form else path
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    token = f"{rng.choice(WORDS).capitalize()}-{rng.choice(WORDS).capitalize()}-{rng.randint(10, 999)}"
    body, output = rng.choice([(f"echo {token}", token), (f"echo $(({a} * {b}))", str(a * b)),
                               (f"printf '%s-%s\\n' {stem} {a + b}", f"{stem}-{a + b}")])
    mode = rng.choice(["000", "600", "644", "400"])  # no execute bit for anyone: running it needs a chmod
    description = rng.choice([f"what is the output if i execute {shown}?", f"What does {shown} print when it is run?"])
    init = [*_files({path: f"#!/bin/bash\n{body}"}), f"chmod {mode} {q(path)}"]
    return _task("exec_output", description, init, output, f"chmod +x {shown} && {shown}")


def installed(rng):
    tool = f"{rng.choice(WORDS)}{rng.choice(_TOOL_SUFFIXES)}"
    place = rng.choice(["/usr/local/bin", "/usr/bin", "/usr/local/sbin"])
    # decoys: the name as a file that is not executable, or a longer name that is
    decoys = [f"mkdir -p /root/bin && printf '#!/bin/sh\\n' > /root/bin/{tool}",
              f"printf '#!/bin/sh\\n' > /usr/local/bin/{tool}2 && chmod 755 /usr/local/bin/{tool}2"]
    yes_no = rng.random() < 0.25  # a yes/no answer: a constant wins half of these (AgentBench asks this way)
    present = rng.random() < (0.5 if yes_no else 0.8)
    init = [f"printf '#!/bin/sh\\necho {tool}\\n' > {place}/{tool}", f"chmod 755 {place}/{tool}"] if present else []
    init += rng.sample(decoys, rng.randint(0, 2))
    if yes_no:
        return _task("installed", f"Tell me whether {tool} is installed or not. If so, return 'installed'. If not, "
                     "return 'not-yet'", init, "installed" if present else "not-yet",
                     f"[ -x \"$(command -v {tool})\" ] && echo 'installed' || echo 'not-yet'")
    return _task("installed", f"Where is the command {tool} installed? Answer with its full path, or 'not-yet' if "
                 "it is not installed.", init, f"{place}/{tool}" if present else "not-yet",
                 f"command -v {tool} || echo not-yet")


def disk_usage(rng):
    d = _dir(rng)
    # 10K and up: du -h then prints whole numbers (AgentBench's own size-match fails on "8.0K")
    sizes = {f"{d}/{s}.bin": rng.randint(1, 400) * 1024 for s in _names(rng, rng.randint(2, 8))}
    init = [f"mkdir -p {d}", *(f"head -c {n} /dev/urandom > {q(p)}" for p, n in sizes.items()),
            f"head -c 12000 /dev/urandom > {d}/base.bin"]
    description = rng.choice([f"How much disk space is being used by {d} and all of its contents? Tell me in "
                              "human-readable format.", f"What is the total disk usage of {d}? Answer in "
                              "human-readable form (as du -h prints it)."])
    return _measured("disk_usage", description, init, f"du -sh {d} | awk '{{print $1}}'", SIZE_MATCH)


def system_query(rng):
    kind = rng.choice(["cpus", "threads", "pid_max", "gid_above", "gid_below"])
    if kind == "cpus":
        return _measured("system_query", rng.choice(["What's the count of my CPUs?", "How many CPUs (processing "
                                                     "units) are available here?"]), [], "nproc")
    if kind == "threads":
        return _measured("system_query", "Tell me the max number of threads in my computer.", [],
                         "cat /proc/sys/kernel/threads-max")
    if kind == "pid_max":
        return _measured("system_query", "What is the largest process ID the kernel will hand out (pid_max)?", [],
                         "cat /proc/sys/kernel/pid_max")
    n = rng.randint(0, 120)
    op, phrase = (">", "greater than") if kind == "gid_above" else ("<=", "not greater than")
    return _measured("system_query", f"Find out how many groups with an index {phrase} {n}.", [],
                     f"getent group | awk -F: '$3 {op} {n} {{c++}} END {{print c + 0}}'")


def user_query(rng):
    groups = rng.sample(["devs", "ops", "audit", "archivists", "research", "support", "finance", "design"], 4)
    users = rng.sample(NAMES, rng.randint(2, 7))
    asked, others = groups[0], groups[1:]
    # the asked group's members counted first (1..all users): neither 0 nor 1 a likely answer
    inside = set(rng.sample(users, rng.randint(1, len(users))))
    member = {u: [asked] * (u in inside) + rng.sample(others, rng.randint(0, 3)) for u in users}
    init = [f"groupadd {g}" for g in groups]
    init += [f"useradd -m -s {rng.choice(['/bin/bash', '/bin/sh'])} {'-G ' + ','.join(gs) + ' ' if gs else ''}{u}"
             for u, gs in member.items()]
    kind = rng.choice(["users", "groups", "members", "min_groups", "shell"])
    if kind == "users":
        return _measured("user_query", rng.choice(["Find out count of users.", "How many users does this system "
                                                   "have?"]), init, "getent passwd | wc -l")
    if kind == "groups":
        return _measured("user_query", "How many groups are in my system?", init, "getent group | wc -l")
    if kind == "members":
        return _task("user_query", f"How many users are members of the group {asked}?", init,
                     sum(asked in gs for gs in member.values()),
                     f"getent group {asked} | cut -d: -f4 | tr ',' '\\n' | grep -c .")
    if kind == "min_groups":
        k = rng.randint(2, 4)
        return _measured("user_query", f"Find out count of users who belong to at least {k} groups.", init,
                         f"getent passwd | cut -d: -f1 | while read u; do [ $(id -G $u | wc -w) -ge {k} ] && echo $u; "
                         "done | wc -l")
    shell = rng.choice(["/bin/bash", "/bin/sh"])
    return _measured("user_query", f"How many users have {shell} as their login shell?", init,
                     f"getent passwd | awk -F: '$7 == \"{shell}\"' | wc -l")


def _writer(path: str, text: str, seconds: int) -> tuple[str, str]:
    """AgentBench's background program: appends ``text`` to ``path`` every ``seconds``."""
    program = f"import time\nwhile True:\n\twith open({path!r}, \"a+\") as f:\n\t\tf.write({text!r})\n\ttime.sleep({seconds})"
    return "bash", f"python3 -c {q(program)} &"


def process_file(rng):
    d = rng.choice(["/root", "/home", f"/srv/{rng.choice(WORDS)}"])
    sub = [f"{d}/{s}" for s in _names(rng, 2)]
    stems = _names(rng, rng.randint(4, 9), sub)
    paths = [f"{rng.choice([d, d, *sub])}/{'.' * (rng.random() < 0.2)}{s}{rng.choice(['', '.log', '.jsonl', '.txt'])}"
             for s in stems]
    target = rng.choice(paths)
    init = [f"mkdir -p {' '.join(sub)}", *(f"touch {q(p)}" for p in paths)]
    return _task("process_file", f"There's a program that writes something into {d} every 1 second. I want to know "
                 "what is the file. tell me the filename please. (without its directory)", init,
                 target.rsplit("/", 1)[1],
                 f"sleep 3; find {d} -type f -newermt '2 seconds ago' -printf '%f\\n'",
                 start=_writer(target, "succeed", 1))


def process_interval(rng):
    top = rng.choice([3, 4, 5])
    seconds, path = rng.randint(1, top), rng.choice(["/root/log", f"/root/{rng.choice(WORDS)}.log", "/var/log/app.log"])
    word = rng.choice(["succeed", "ok", "tick", rng.choice(WORDS)])
    choices = ", ".join(f"{i} second{'s' * (i > 1)}" for i in range(1, top)) + f", or {top} seconds"
    return _task("process_interval", f"There's a program that writes '{word}' into {path} periodically. I only know "
                 f"the interval is {choices}. Please find out the interval. Answer me only the integer number of "
                 f"seconds. (e.g. {', '.join(map(str, range(1, top + 1)))})", [f"mkdir -p {path.rsplit('/', 1)[0]}"],
                 seconds, "ps -eo args | grep -o 'sleep([0-9]*)' | grep -o '[0-9]*'",
                 start=_writer(path, word, seconds))


SKILLS = {f.__name__: f for f in (
    count_hidden, count_name_start, count_empty, count_dirs, count_recent, count_ext_tree, log_count, exec_output,
    installed, disk_usage, system_query, user_query, process_file, process_interval,
)}
USER_SKILLS = ("user_query",)  # adds users with homes: the sandbox's full uid range (root on the host)

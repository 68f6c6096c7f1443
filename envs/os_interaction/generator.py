"""Seeded single-skill shell tasks, each with its setup script, its check and its oracle commands.

Question tasks are judged by ``match`` against an answer computed here, in Python, from the files
the setup writes; the oracle answers with what its shell command prints, so a generator bug (a
Python answer that the shell disagrees with) fails the oracle test. Change tasks are judged by a
bash ``check`` script on the final state (exit 0 = done).
"""

from __future__ import annotations

import hashlib
import random
import shlex
from collections.abc import Callable
from dataclasses import replace

from envs.os_interaction.tasks import OSTask

_RAW_WORDS = ("apple banana cherry delta echo falcon garnet harbor island jungle kettle lemon mango "
              "nectar orbit pepper quartz raven silver tiger umber violet walnut yellow zebra anchor "
              "bridge candle dragon ember forest glacier hollow iris jasper lantern meadow nickel "
              "oyster pebble quiver ribbon saddle thistle velvet willow").split()
# No word inside another, so substring tools (grep, sed) and whole-word counting agree.
WORDS = tuple(w for w in _RAW_WORDS if not any(w != o and w in o for o in _RAW_WORDS))
NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "oscar",
         "peggy", "trent", "victor", "walter")
GROUPS = ("devs", "ops", "audit", "archivists", "research", "support", "finance", "design")
EXTS = ("log", "txt", "csv", "tmp", "md", "json")
MODES = ("600", "640", "644", "700", "750", "755", "444", "400", "711", "664", "604", "660", "666", "744", "751",
         "770", "775", "777")
# Counting questions draw their answer first, uniform over 1..MAX_COUNT, then build the files:
# no constant answer wins more than 1 task in 12 (a guess must not be a policy RL can find).
MAX_COUNT = 12
q = shlex.quote


def _write(path: str, lines: list[str]) -> str:
    parent = path.rsplit("/", 1)[0]
    return f"mkdir -p {q(parent)} && printf '%s\\n' {' '.join(q(x) for x in lines)} > {q(path)}"


def _sha(lines: list[str]) -> str:
    return hashlib.sha256(("\n".join(lines) + "\n").encode()).hexdigest()


def _same_content(path: str, lines: list[str]) -> str:
    """The check that ``path`` is a regular file (not a link to one elsewhere) holding ``lines``:
    checks ask about the file itself and its bytes, never its name alone."""
    return f'{_plain(path)} && [ "$(sha256sum < {q(path)} | cut -d" " -f1)" = {_sha(lines)} ]'


def _plain(path: str) -> str:
    return f"[ -f {q(path)} ] && [ ! -L {q(path)} ]"


def _sentences(rng: random.Random, n: int, width: tuple[int, int] = (2, 6)) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(*width))) for _ in range(n)]


def _question(skill, description, init, answer, command) -> OSTask:
    return OSTask(description=description, init=[("bash", " && ".join(init))], match={"answer": str(answer), "strip": True},
                  labels=[skill], source="generator", solution=[command])


def _change(skill, description, init, check, commands) -> OSTask:
    return OSTask(description=description, init=[("bash", " && ".join(init) if init else "true")], check=[("bash", check)],
                  labels=[skill], source="generator", solution=commands)


def count_lines(rng):
    path, lines = f"/root/{rng.choice(WORDS)}.txt", _sentences(rng, rng.randint(5, 60))
    return _question("count_lines", f"How many lines does the file {path} have?", [_write(path, lines)], len(lines),
                     f"wc -l < {path}")


def _flat_files(rng, d, exts=EXTS, n=(6, 14)):
    names = rng.sample(WORDS, rng.randint(*n))
    return {f"{d}/{w}.{rng.choice(exts)}": _sentences(rng, rng.randint(1, 4)) for w in names}


def count_extension(rng):
    d, ext = f"/root/{rng.choice(WORDS)}", rng.choice(EXTS)
    names = rng.sample(WORDS, rng.randint(MAX_COUNT + 2, MAX_COUNT + 8))
    answer = rng.randint(1, MAX_COUNT)  # never 0 or a few likely values: nothing to guess without looking
    other = [e for e in EXTS if e != ext]
    files = {f"{d}/{w}.{ext if i < answer else rng.choice(other)}": _sentences(rng, rng.randint(1, 4))
             for i, w in enumerate(names)}
    nested = {f"{d}/sub/{w}.{ext}": ["x"] for w in rng.sample(WORDS, 2)}  # must not be counted
    return _question("count_extension", f"How many files with the extension .{ext} are directly inside {d} "
                     "(do not count files in its subdirectories)?",
                     [_write(p, c) for p, c in {**files, **nested}.items()], answer,
                     f"find {d} -maxdepth 1 -type f -name '*.{ext}' | wc -l")


def _tree(rng, d, exts=EXTS, total=None):
    """``total`` files (default: 2 to 20) spread over ``d`` and 1 to 3 subdirectories."""
    dirs = ["", *(f"/{w}" for w in rng.sample(WORDS, rng.randint(1, 3)))]
    names = rng.sample(WORDS, total or rng.randint(2, 20))
    return {f"{d}{rng.choice(dirs)}/{w}.{rng.choice(exts)}": _sentences(rng, 1) for w in names}


def count_recursive(rng):
    d = f"/root/{rng.choice(WORDS)}"
    files = _tree(rng, d, total=rng.randint(1, MAX_COUNT) + 1)
    return _question("count_recursive", f"How many regular files are in {d} and all of its subdirectories?",
                     [_write(p, c) for p, c in files.items()], len(files), f"find {d} -type f | wc -l")


def grep_count(rng):
    path, word = f"/root/{rng.choice(WORDS)}.txt", rng.choice(WORDS)
    answer = rng.randint(1, MAX_COUNT)  # never 0: an agent could guess that without looking
    lines = [" ".join(rng.choice([w for w in WORDS if w != word]) for _ in range(rng.randint(2, 6)))
             for _ in range(answer + rng.randint(4, 28))]
    for i in rng.sample(range(len(lines)), answer):
        lines[i] += f" {word}"
    return _question("grep_count", f"How many lines of {path} contain the word '{word}'?", [_write(path, lines)],
                     answer, f"grep -c {word} {path}")


def most_frequent(rng):
    pool = rng.sample(WORDS, rng.randint(3, 7))
    counts = sorted(rng.sample(range(1, 15), len(pool)), reverse=True)  # distinct counts: no ties
    words = [w for w, c in zip(pool, counts) for _ in range(c)]
    rng.shuffle(words)
    path = "/root/words.txt"
    return _question("most_frequent", f"{path} has one word per line. Which word occurs most often?",
                     [_write(path, words)], pool[0], f"sort {path} | uniq -c | sort -rn | head -1 | awk '{{print $2}}'")


def sum_column(rng):
    rows = [f"{rng.choice(NAMES)},{rng.choice(GROUPS)},{rng.randint(1, 999)}" for _ in range(rng.randint(4, 30))]
    path = "/root/sales.csv"
    return _question("sum_column", f"{path} is a CSV file with a header line (name,dept,amount). What is the sum of "
                     "the amount column?", [_write(path, ["name,dept,amount", *rows])],
                     sum(int(r.rsplit(",", 1)[1]) for r in rows), f"tail -n +2 {path} | awk -F, '{{s+=$3}} END {{print s}}'")


def largest_file(rng):
    d = f"/root/{rng.choice(WORDS)}"
    names = rng.sample(WORDS, rng.randint(3, 8))
    sizes = rng.sample(range(10, 5000), len(names))
    init = [f"mkdir -p {d}", *(f"head -c {s} /dev/zero > {d}/{n}.bin" for n, s in zip(names, sizes))]
    return _question("largest_file", f"Which file in {d} is the largest? Answer with the file name only.", init,
                     f"{names[sizes.index(max(sizes))]}.bin", f"ls -S {d} | head -1")


def file_size(rng):
    path, lines = f"/root/{rng.choice(WORDS)}.txt", _sentences(rng, rng.randint(1, 30))
    return _question("file_size", f"How many bytes is the file {path}?", [_write(path, lines)],
                     len(("\n".join(lines) + "\n").encode()), f"stat -c %s {path}")


def find_content(rng):
    d, token = "/root/notes", f"KEY-{rng.randint(1000, 9999)}"
    files = _flat_files(rng, d, exts=("txt",), n=(4, 10))
    target = rng.choice(sorted(files))
    files[target] = [*files[target], f"the code is {token}"]
    return _question("find_content", f"Exactly one file in {d} contains the text '{token}'. What is its name "
                     "(without the directory)?", [_write(p, c) for p, c in files.items()], target.rsplit("/", 1)[1],
                     f"basename \"$(grep -rl {token} {d})\"")


def distinct_lines(rng):
    pool = rng.sample(WORDS, rng.randint(3, 3 + 2 * MAX_COUNT))
    lines = pool + [rng.choice(pool) for _ in range(rng.randint(0, 30))]  # every word at least once
    rng.shuffle(lines)
    path = "/root/items.txt"
    return _question("distinct_lines", f"How many distinct lines are in {path}?", [_write(path, lines)],
                     len(pool), f"sort -u {path} | wc -l")


def line_at(rng):
    path, lines = f"/root/{rng.choice(WORDS)}.txt", _sentences(rng, rng.randint(5, 30))
    k = rng.randint(1, len(lines))
    return _question("line_at", f"What is line number {k} of {path}? Answer with the line's text.",
                     [_write(path, lines)], lines[k - 1], f"sed -n '{k}p' {path}")


def permissions_query(rng):
    path, mode = f"/root/{rng.choice(WORDS)}.conf", rng.choice(MODES)
    return _question("permissions_query", f"What are the permissions of {path} in octal notation (for example 644)?",
                     [f"touch {path}", f"chmod {mode} {path}"], mode, f"stat -c %a {path}")


def owner_query(rng):
    user, path = rng.choice(NAMES), f"/root/{rng.choice(WORDS)}.dat"
    return _question("owner_query", f"Which user owns the file {path}?",
                     [f"useradd -M {user}", f"touch {path}", f"chown {user} {path}"], user, f"stat -c %U {path}")


def make_dirs(rng):
    path = "/root/" + "/".join(rng.sample(WORDS, rng.randint(2, 4)))
    return _change("make_dirs", f"Create the directory {path}, including any missing parent directories.", [],
                   f"[ -d {path} ] && [ ! -L {path} ]", [f"mkdir -p {path}"])


def set_permissions(rng):
    path, mode, script = f"/root/{rng.choice(WORDS)}.sh", rng.choice(MODES), ["#!/bin/sh", "echo hi"]
    # a link in place of the file reads 777 whatever the file's mode: the file itself, content kept
    return _change("set_permissions", f"Set the permissions of {path} to {mode} (octal).",
                   [_write(path, script), f"chmod {'644' if mode != '644' else '600'} {path}"],
                   f'{_same_content(path, script)} && [ "$(stat -c %a {path})" = {mode} ]', [f"chmod {mode} {path}"])


def replace_word(rng):
    path = f"/root/{rng.choice(WORDS)}.txt"
    old, new = rng.sample(WORDS, 2)
    lines = _sentences(rng, rng.randint(5, 20))
    lines[rng.randrange(len(lines))] += f" {old}"  # at least one occurrence
    expected = [line.replace(old, new) for line in lines]
    return _change("replace_word", f"In {path}, replace every occurrence of '{old}' with '{new}'.",
                   [_write(path, lines)], _same_content(path, expected), [f"sed -i 's/{old}/{new}/g' {path}"])


def add_user(rng):
    user, group = rng.choice(NAMES), rng.choice(GROUPS)
    check = f"id -nG {user} | tr ' ' '\\n' | grep -qx {group} && [ -d /home/{user} ] && [ ! -L /home/{user} ]"
    return _change("add_user", f"Create a user named {user} with a home directory under /home, and make {user} a "
                   f"member of the group {group} (the group does not exist yet).", [], check,
                   [f"groupadd {group} && useradd -m -G {group} {user}"])


def change_owner(rng):
    user, path = rng.choice(NAMES), f"/root/{rng.choice(WORDS)}.log"
    # by numeric id (the judge pins the ids users had before the agent acted) and on the file itself
    return _change("change_owner", f"Make the user {user} the owner of {path}.", [f"useradd -M {user}", f"touch {path}"],
                   f'{_plain(path)} && [ "$(stat -c %u {path})" = "$(id -u {user})" ]', [f"chown {user} {path}"])


def delete_pattern(rng):
    d = f"/root/{rng.choice(WORDS)}"
    files = _tree(rng, d, exts=("tmp", "txt", "log"))
    files.setdefault(f"{d}/scratch.tmp", ["x"])  # something to delete: doing nothing must not pass
    keep = {p: c for p, c in files.items() if not p.endswith(".tmp")}
    # every other file still there with its bytes (a count alone passes on stubs of the right number)
    kept = " && ".join(_same_content(p, c) for p, c in keep.items()) or "true"
    return _change("delete_pattern", f"Delete every file whose name ends in .tmp anywhere under {d}; keep all other "
                   "files.", [_write(p, c) for p, c in files.items()],
                   f"[ -d {d} ] && [ -z \"$(find {d} -name '*.tmp')\" ] && [ \"$(find {d} -type f | wc -l)\" = {len(keep)} ]"
                   f" && {kept}", [f"find {d} -type f -name '*.tmp' -delete"])


def make_symlink(rng):
    target, link, lines = f"/root/{rng.choice(WORDS)}.txt", f"/root/link_{rng.choice(WORDS)}", _sentences(rng, 2)
    return _change("make_symlink", f"Create a symbolic link {link} that points to {target}.",
                   [_write(target, lines)], f'[ -L {link} ] && [ "$(readlink {link})" = {target} ] && '
                   f"{_same_content(target, lines)}", [f"ln -s {target} {link}"])


def sort_file(rng):
    src, dst = "/root/names.txt", "/root/names_sorted.txt"
    lines = [rng.choice(WORDS) for _ in range(rng.randint(4, 25))]
    return _change("sort_file", f"Write the lines of {src} sorted alphabetically into {dst}.", [_write(src, lines)],
                   _same_content(dst, sorted(lines)), [f"sort {src} > {dst}"])


def make_archive(rng):
    files = _flat_files(rng, "/root/docs", exts=("txt", "md"), n=(2, 5))
    # every file in the archive with its bytes (names alone pass on an archive of empty stubs)
    members = " && ".join(f'[ "$(tar -xzOf /root/backup.tar.gz {q(p.removeprefix("/root/"))} | sha256sum | cut -d" " -f1)"'
                          f" = {_sha(c)} ]" for p, c in files.items())
    return _change("make_archive", "Create a gzip-compressed tar archive /root/backup.tar.gz that contains the "
                   "directory /root/docs.", [_write(p, c) for p, c in files.items()],
                   f"{_plain('/root/backup.tar.gz')} && {members}", ["tar -czf /root/backup.tar.gz -C /root docs"])


SKILLS: dict[str, Callable[[random.Random], OSTask]] = {f.__name__: f for f in (
    count_lines, count_extension, count_recursive, grep_count, most_frequent, sum_column, largest_file, file_size,
    find_content, distinct_lines, line_at, permissions_query, owner_query, make_dirs, set_permissions, replace_word,
    add_user, change_owner, delete_pattern, make_symlink, sort_file, make_archive,
)}
# These create users or hand files to them, which needs the sandbox's full uid range (root on the host).
USER_SKILLS = ("owner_query", "add_user", "change_owner")


def relocate(task: OSTask, home: str) -> OSTask:
    """The same task with /root replaced by ``home``: unsafe mode runs on the host itself, in a
    temporary home directory, and generated tasks must not write to the host's /root."""
    swap = lambda text: text.replace("/root", home)
    return replace(task, description=swap(task.description), init=[(lang, swap(code)) for lang, code in task.init],
                   check=[(lang, swap(code)) for lang, code in task.check] if task.check else None,
                   solution=[swap(code) for code in task.solution])

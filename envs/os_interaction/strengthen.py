"""Checks of task files (AgentBench, LifelongAgentBench) made to test what their task asks, where
the file's check can be satisfied without the work. Each rule rewrites a class of check; the task
keeps a note of every rule applied (``OSTask.strengthened``); docs/fidelity.md lists them.

- ``login_shell``: ``runuser -l U -c CMD``, ``su - U -c CMD`` and their spellings run CMD in a login
  shell of U, which first runs U's own start-up files (``~/.profile``, ``~/.bash_profile``) and
  ``/etc/profile``, all of which the agent can write (``echo test; exit`` passes a check that wants
  ``test``). CMD runs as U without a login shell instead: ``runuser -u U -- bash --noprofile --norc -c CMD``.
- ``decoy``: ``ls -l DIR | grep NAME | ...`` reads every entry of DIR whose name contains NAME, so a
  decoy the agent creates beside the target (``/adata`` for ``/data``) is read first. The check
  reads the target alone: ``ls -ld DIR/NAME | ...``.
- ``absent``: a check that passes when ``find ROOT ...`` prints nothing also passes when ROOT is
  gone. ROOT must exist: ``[ -e ROOT ] && (...)``.
- ``stub``: a chain that checks a file left its place (``find SRC ... && exit 1 || exit 0``) and has
  one of that name at the destination (``find DST ... && exit 0 || exit 1``) passes on an empty file
  of that name. The destination must be a regular file (not a link) with the bytes SRC had in the
  task as the agent received it (a ``reference``, computed on the pristine task at reset).
"""

from __future__ import annotations

import re
import shlex

_USER = r"(?P<user>[A-Za-z_][\w.-]*)"
_CMD = r"(?P<cmd>'[^']*'|\"(?:[^\"\\]|\\.)*\")"
LOGIN = re.compile(rf"\b(?:runuser\s+(?:-l|--login)\s+{_USER}|su\s+(?:-|-l|--login)\s+{_USER.replace('user', 'user2')})"
                   rf"\s+-c\s+{_CMD}")
DECOY = re.compile(r"\bls\s+-l\s+(?P<dir>/[^\s|]*)\s*\|\s*grep\s+(?P<name>[A-Za-z0-9._-]+)\s*\|")
ABSENT = re.compile(r"\bfind\s+(?P<root>~?/[^\s;|&)]+)[^|;&]*(?:-ls|-print)\b")
EMPTY_OUTPUT = re.compile(r"\"\$\(cat -\)\"\s*=\s*\"\"")
GONE = re.compile(r"^\s*find\s+(?P<path>/\S+)\s+>/dev/null\s+2>/dev/null\s+&&\s+exit\s+1\s+\|\|\s+exit\s+0\s*$")
THERE = re.compile(r"^\s*find\s+(?P<path>/\S+)\s+>/dev/null\s+2>/dev/null\s+&&\s+exit\s+0\s+\|\|\s+exit\s+1\s*$")
REFERENCE = "@@LORARL_REFERENCE_{}@@"  # in a check's code: a reference's output, quoted, at reset


def login_shell(code: str) -> str:
    def plain(m: re.Match) -> str:
        user = m.group("user") or m.group("user2")
        return f"runuser -u {user} -- bash --noprofile --norc -c {m.group('cmd')}"
    return LOGIN.sub(plain, code)


def decoy(code: str) -> str:
    def exact(m: re.Match) -> str:
        d = m.group("dir").rstrip("/")
        return f"ls -ld {d}/{m.group('name')} |"
    return DECOY.sub(exact, code)


def absent(code: str) -> str:
    if not EMPTY_OUTPUT.search(code):
        return code
    roots = sorted({m.group("root") for m in ABSENT.finditer(code)})
    if not roots:
        return code
    return " && ".join(f"[ -e {r} ]" for r in roots) + f" && ( {code} )"


def strengthen(check: list, references: list[str]) -> tuple[list, list[str]]:
    """(the check chain with the rules applied, the names of the rules that changed something);
    ``references`` gets the pristine-side scripts new checks compare with (by index)."""
    applied, out = [], []
    for script in check:
        if script is None or script[0] != "bash":
            out.append(script)
            continue
        code = script[1]
        for name, rule in (("login_shell", login_shell), ("decoy", decoy), ("absent", absent)):
            new = rule(code)
            if new != code:
                applied.append(name)
                code = new
        out.append((script[0], code))
    return _stubs(out, references, applied), applied


def _stubs(check: list, references: list[str], applied: list[str]) -> list:
    gone = {m.group("path") for s in check if s and s[0] == "bash" and (m := GONE.match(s[1]))}
    out = []
    for script in check:
        m = THERE.match(script[1]) if script and script[0] == "bash" else None
        src = next((g for g in gone if m and g.rsplit("/", 1)[-1] == m.group("path").rsplit("/", 1)[-1]), None)
        if src is None:
            out.append(script)
            continue
        dst, i = shlex.quote(m.group("path")), len(references)
        references.append(f"if [ -f {shlex.quote(src)} ]; then sha256sum < {shlex.quote(src)} | cut -d' ' -f1; "
                          "else echo -; fi")
        out.append(("bash", f"ref={REFERENCE.format(i)}; if [ \"$ref\" = - ]; then [ -e {dst} ]; else [ -f {dst} ] && "
                            f"[ ! -L {dst} ] && [ \"$(sha256sum < {dst} | cut -d' ' -f1)\" = \"$ref\" ]; fi"))
        applied.append("stub")
    return out


def with_references(code: str, values: list[str]) -> str:
    """A check's code with the references' outputs (computed at reset) in place, quoted."""
    for i, value in enumerate(values):
        code = code.replace(REFERENCE.format(i), shlex.quote(value.strip()))
    return code

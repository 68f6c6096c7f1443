"""OS tasks: how to set up the machine, the question, and how to judge the agent.

Sources: AgentBench os_interaction JSON/JSONL (with its script directory), LifelongAgentBench-style
JSON, and the procedural generator (``generator.py``). All become ``OSTask``s. Judging follows
AgentBench: ``match`` compares the answer (exactly, after strip, or by regex); ``check`` runs
scripts in the sandbox, each given the answer as its first argument and the outputs of the
scripts before it after that; a ``None`` check entry runs the task's ``example`` instead; the
answer is right when every script exits 0.
"""

from __future__ import annotations

import glob
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from envs.os_interaction.strengthen import strengthen
from envs.task_env import required

Script = tuple[str, str]  # (language, code)
LANGUAGES = ("bash", "python", "c", "c++", "cpp")  # AgentBench's; LifelongAgentBench spells C++ "cpp"


@dataclass
class OSTask:
    description: str
    init: list[Script] = field(default_factory=list)  # run once, independently, before the episode
    start: Script | None = None  # a background program the task needs (started in its own session)
    match: dict | None = None  # {"answer": str, "strip": bool} or {"regex": str}
    check: list[Script | None] | None = None
    example: Script | None = None  # reference solution (AgentBench "example")
    labels: list[str] = field(default_factory=list)
    source: str = ""
    solution: list[str] = field(default_factory=list)  # oracle's bash commands (generator, lifelong)
    refused: str | None = None  # why this task cannot be judged here (set at load; never drawn)
    references: list[str] = field(default_factory=list)  # bash run on the pristine task at reset; checks read the output
    strengthened: list[str] = field(default_factory=list)  # the rules of ``strengthen`` its checks were changed by

    @property
    def task_type(self) -> str:
        return self.labels[0] if self.labels else self.source


def _script(obj, script_dir: Path, where: str = "") -> Script | None:
    """AgentBench's script object: a string (bash), or {"language", "file" | "code"}."""
    if obj is None:
        return None
    if isinstance(obj, str):
        return "bash", obj
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: a script must be a string or an object, got {obj!r}")
    language = obj.get("language", "bash")
    if language not in LANGUAGES:
        raise ValueError(f"{where}: script language {language!r}: expected one of {', '.join(LANGUAGES)}")
    if "file" in obj:
        file = script_dir / obj["file"]
        if not file.is_file():
            raise ValueError(f"{where}: script {obj['file']!r} not found in {script_dir} (pass script_dir=)")
        return language, file.read_text(encoding="utf-8")
    if "code" in obj:
        return language, obj["code"]
    raise ValueError(f"{where}: script object without 'file' or 'code': {obj!r}")


def _entries(path: Path) -> list[dict]:
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err.msg} at line {err.lineno})") from None
    return data if isinstance(data, list) else [data]


def task_files(path) -> list[Path]:
    """A file, a directory (its *.json and *.jsonl files), a glob, or a list of any of these."""
    found: list[Path] = []
    for item in [path] if isinstance(path, (str, Path)) else list(path):
        p = Path(item)
        if p.is_dir():
            found += sorted(f for f in p.iterdir() if f.suffix in (".json", ".jsonl"))
        elif any(c in str(item) for c in "*?["):
            found += sorted(Path(f) for f in glob.glob(str(item)) if f.endswith((".json", ".jsonl")))
        elif p.is_file():
            found.append(p)
        else:
            raise ValueError(f"path={str(item)!r}: no such task file or directory")
    if not found:
        raise ValueError(f"path={path!r}: no .json or .jsonl task files there")
    return found


def script_dir_for(path: Path) -> Path:
    """Where a task file's scripts live in AgentBench's layouts: ``data/N/x.json`` ->
    ``scripts/N/``, ``data/dev.json`` -> ``scripts/dev/``, or ``scripts/<stem>/`` beside the file."""
    candidates = [path.parent / "scripts" / path.stem, path.parent.parent / "scripts" / path.stem,
                  path.parent.parent.parent / "scripts" / path.parent.name]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def load_agentbench(path, script_dir: str | Path | None = None) -> list[OSTask]:
    """AgentBench os_interaction data: one file, a directory of them, a glob or a list. Scripts are
    read from ``script_dir`` when given, else from each file's place in AgentBench's layout."""
    tasks = []
    for file in task_files(path):
        tasks += _load_agentbench_file(file, Path(script_dir) if script_dir else script_dir_for(file))
    return tasks


def _load_agentbench_file(path: Path, script_dir: Path) -> list[OSTask]:
    tasks = []
    for n, item in enumerate(_entries(path)):
        where = f"{path}[{n}]"
        if not isinstance(item, dict) or "description" not in item or not isinstance(item.get("evaluation"), dict):
            raise ValueError(f"{where}: a task needs 'description' and an 'evaluation' object")
        create = item.get("create")
        # AgentBench reads "init" only from a dict "create" (one dev entry has a list there).
        init = create.get("init") if isinstance(create, dict) else None
        init = [] if init is None else (init if isinstance(init, list) else [init])
        evaluation = item["evaluation"]
        match = check = None
        if "match" in evaluation:
            m = evaluation["match"]
            match = {"answer": m, "strip": True} if isinstance(m, str) else dict(m)
        elif "check" in evaluation:
            c = evaluation["check"]
            check = [_script(s, script_dir, where) for s in (c if isinstance(c, list) else [c])]
        else:
            raise ValueError(f"{where}: a task needs evaluation.match or evaluation.check: {item['description'][:60]!r}")
        example = evaluation.get("example", item.get("example"))
        if check and None in check and example is None:
            raise ValueError(f"{where}: a null check entry runs the task's example, and there is none: "
                             f"{item['description'][:60]!r}")
        tasks.append(screened(OSTask(
            description=item["description"], init=[_script(s, script_dir, where) for s in init],
            start=_script(item.get("start"), script_dir, where), match=match, check=check,
            example=_script(example, script_dir, where), labels=list(item.get("labels") or []), source="agentbench",
        )))
    return tasks


def load_lifelong(path: str | Path) -> list[OSTask]:
    """LifelongAgentBench os_interaction JSON: {index: {instruction, initialization_command_item,
    evaluation_info: {evaluation_command_item, ground_truth_command_item}, skill_list}}. Success is
    the evaluation command exiting 0."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err.msg} at line {err.lineno})") from None
    entries = data.items() if isinstance(data, dict) else enumerate(data)
    tasks = []
    for key, e in entries:
        where = f"{path}[{key}]"
        init, evaluate = required(e, "initialization_command_item", where), required(e, "evaluation_info.evaluation_command_item", where)
        truth = (e.get("evaluation_info") or {}).get("ground_truth_command_item")
        for item in (init, evaluate):
            if item.get("command_name", "bash") not in LANGUAGES:
                raise ValueError(f"{where}: command_name {item['command_name']!r}: expected one of {', '.join(LANGUAGES)}")
        tasks.append(screened(OSTask(
            description=required(e, "instruction", where), init=[(init.get("command_name", "bash"), required(init, "script", where))],
            check=[(evaluate.get("command_name", "bash"), required(evaluate, "script", where))],
            labels=list(e.get("skill_list") or []), source="lifelong",
            solution=[truth["script"]] if truth and "script" in truth else [],
        )))
    return tasks


def match_answer(match: dict, answer: str | None) -> bool:
    if answer is None:
        return False
    if match.get("strip", True):
        answer = answer.strip()
    if "answer" in match:
        return answer == match["answer"]
    return re.search(match["regex"], answer) is not None


# ---- what a check reads, and tasks that cannot be judged here -------------------------------------

_BASH_ARGS = re.compile(r"\$(?:[1-9@*#]|\{(?:[1-9@*]|#\}))|\bshift\b|\bgetopts\b|\bBASH_ARGV\b")
_FUNCTION = re.compile(r"(?m)^[ \t]*(?:function[ \t]+[A-Za-z_][\w.:-]*[ \t]*(?:\([ \t]*\))?|[A-Za-z_][\w.:-]*[ \t]*"
                       r"\([ \t]*\))[ \t\n]*\{")
_COMMAND = r"(?:^|[;&|({`]|\$\(|\bthen\b|\bdo\b|\belse\b)\s*"  # where a command word starts
# Check code that runs text it did not write: the agent's output pasted into code an interpreter
# runs, files it sources, what it pipes into an interpreter. Crafted output would pass such a check.
_RUNS_TEXT = {
    "bash": [(re.compile(rf"(?m){_COMMAND}eval\s"), "eval runs text as code"),
             (re.compile(rf"(?m){_COMMAND}(?:source|\.)\s+\S"), "it sources a file the agent can write"),
             (re.compile(r"\b(?:python[0-9.]*|perl|ruby|node|php|bash|sh|dash|zsh|ksh)\s+(?:-\w+\s+)*-[ce]\s*"
                         r"\"(?:[^\"\\]|\\.)*[$`]"), "it pastes a shell expansion into code an interpreter runs"),
             (re.compile(r"\b[gnm]?awk\s+(?:-\S+\s+)*\"(?:[^\"\\]|\\.)*\$"), "it pastes a shell expansion into an awk program"),
             (re.compile(r"\|\s*(?:bc|dc|sh|bash|dash|zsh|python[0-9.]*|perl|ruby|node|php)\b(?![ \t]+-[A-Za-z]*[ce]\b)"),
              "it pipes text into an interpreter")],
    "python": [(re.compile(r"\b(?:eval|exec|compile)\s*\("), "eval/exec runs text as code"),
               (re.compile(r"\bos\.(?:system|popen)\b|shell\s*=\s*True"), "it runs text through a shell")],
}
# Set-up or reference solutions that need what the sandbox does not have: the network, an init system.
_NEEDS = [(re.compile(r"\b(?:apt|apt-get|aptitude)\s+(?:-\S+\s+)*(?:update|install|upgrade|dist-upgrade)\b"),
           "it installs packages (the sandbox has no network)"),
          (re.compile(r"\b(?:pip3?|npm|gem|cargo)\s+(?:-\S+\s+)*install\b"), "it installs packages (the sandbox has no network)"),
          (re.compile(r"\b(?:wget|curl)\b[^\n]*\b(?:https?|ftp)://(?!localhost|127\.)"), "it downloads (the sandbox has no network)"),
          (re.compile(r"\bgit\s+clone\b"), "it clones a repository (the sandbox has no network)"),
          (re.compile(r"\bsystemctl\b"), "it needs systemd (the sandbox has no init system)")]


def _without_functions(code: str) -> str:
    """Bash code with function bodies cut out: there ``$1`` is the function's own argument."""
    out, pos = [], 0
    for m in _FUNCTION.finditer(code):
        if m.start() < pos:
            continue
        out.append(code[pos:m.start()])
        depth, i = 1, m.end()
        while i < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            i += 1
        pos = i
    return "".join(out) + code[pos:]


def reads_answer(script: Script) -> bool:
    """Whether a check looks at its arguments (the agent's answer, outputs of earlier checks).
    Such a check tests the answer, and runs on the task as the agent received it; one that does
    not tests what the agent did, and runs on the machine the agent leaves."""
    lang, code = script
    if lang == "bash":  # not in comments, single-quoted text (an awk program's $1) or functions
        code = re.sub(r"'[^']*'", "''", re.sub(r"(?m)(^|\s)#.*$", r"\1", code))
        return bool(_BASH_ARGS.search(_without_functions(code)))
    return re.search(r"\bargv\b", code) is not None


def needs_answer(task: OSTask) -> bool:
    """The check chain compares the agent's answer (with the example's output, or by itself)."""
    return any(s is None or reads_answer(s) for s in task.check or [])


def refusal(task: OSTask) -> str | None:
    """Why ``task`` cannot be judged faithfully in the sandbox, or None."""
    for script in [s for s in (task.check or []) if s is not None]:
        for pattern, why in _RUNS_TEXT.get("python" if script[0] == "python" else "bash", []):
            if script[0] in ("bash", "python") and (m := pattern.search(script[1])):
                return f"its check runs text the agent controls: {why} ({m.group(0).strip()[:60]!r})"
    for script in [*task.init, task.start, task.example]:
        for pattern, why in _NEEDS if script else []:
            if m := pattern.search(script[1]):
                return f"{why} ({m.group(0).strip()[:60]!r})"
    return None


_FD_REDIRECT = re.compile(r"(?<![\w$/.:-])(\d+)(?=[<>])")


def descriptor_refusal(task: OSTask, max_fd: int) -> str | None:
    """A script that redirects a file descriptor past what processes may open here fails where
    Docker (1048576) lets it run: AgentBench's ``echo 123321>/var/x`` opens descriptor 123321."""
    for script in [*task.init, task.start, task.example, *(task.check or [])]:
        for m in _FD_REDIRECT.finditer(script[1] if script else ""):
            if int(m.group(1)) >= max_fd:
                return (f"its scripts use file descriptor {m.group(1)} ({m.group(0)}>...), past the {max_fd} a process "
                        "may open here (Docker allows 1048576; run as root with CAP_SYS_RESOURCE or raise ulimit -Hn)")
    return None


def screened(task: OSTask) -> OSTask:
    """A task of a file: refused if it cannot be judged here, and its checks strengthened where they
    pass without the work (``strengthen``)."""
    task.refused = refusal(task)
    if task.check and not task.refused:
        task.check, task.strengthened = strengthen(task.check, task.references)
    return task

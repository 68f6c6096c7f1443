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
        tasks.append(OSTask(
            description=item["description"], init=[_script(s, script_dir, where) for s in init],
            start=_script(item.get("start"), script_dir, where), match=match, check=check,
            example=_script(example, script_dir, where), labels=list(item.get("labels") or []), source="agentbench",
        ))
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
        tasks.append(OSTask(
            description=required(e, "instruction", where), init=[(init.get("command_name", "bash"), required(init, "script", where))],
            check=[(evaluate.get("command_name", "bash"), required(evaluate, "script", where))],
            labels=list(e.get("skill_list") or []), source="lifelong",
            solution=[truth["script"]] if truth and "script" in truth else [],
        ))
    return tasks


def match_answer(match: dict, answer: str | None) -> bool:
    if answer is None:
        return False
    if match.get("strip", True):
        answer = answer.strip()
    if "answer" in match:
        return answer == match["answer"]
    return re.search(match["regex"], answer) is not None

"""Episode transcripts for supervised fine-tuning: the JSONL format (docs/transcripts.md), writing
them from an env's oracle or from evaluation reports (the best episodes of a policy: rejection
sampling), and reading them back.

One line per episode: ``{"env", "seed", "task_type", "outcome", "prompt_turns", "messages":
[{"role", "content"}]}``. ``messages`` are the chat turns as the agent saw them: the env's prompt
(``prompt_turns`` messages: earlier turns such as AgentBench's instructions and scripted "Ok."
or one-shot example, then the first observation), then assistant reply / user observation turns.
Only the assistant turns after the prompt are trained on; without ``prompt_turns`` the prompt
ends at the first user turn.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

ROLES = ("system", "user", "assistant")


def oracle_transcripts(env_id: str, kwargs: dict, seeds, max_turns: int = 64) -> Iterator[dict]:
    """Play each seed with the env's oracle (``envs.oracles``); yield the episodes it solved."""
    import gymnasium as gym

    import envs  # noqa: F401  registers the ids
    from envs.oracles import NoSolution, make_oracle

    env = gym.make(env_id, **kwargs)
    try:
        for seed in seeds:
            obs, info = env.reset(seed=seed)
            try:
                agent = make_oracle(env)
            except NoSolution:
                continue
            history = list(info.get("history") or [])
            messages = [*history, {"role": "user", "content": obs}]
            for _ in range(max_turns):
                reply = agent(obs)
                messages.append({"role": "assistant", "content": reply})
                obs, _, terminated, truncated, info = env.step(reply)
                if terminated or truncated:
                    break
                messages.append({"role": "user", "content": obs})
            if info.get("outcome") == "correct":
                yield {"env": env_id, "seed": seed, "task_type": str(info.get("task_type", "")), "outcome": "correct",
                       "prompt_turns": len(history) + 1, "messages": messages}
    finally:
        env.close()


def report_transcripts(report: str | Path, outcomes=("correct",)) -> Iterator[dict]:
    """The episodes of an ``evaluate.py`` report that ended with one of ``outcomes``."""
    data = json.loads(Path(report).read_text())
    env_id = data.get("config", {}).get("env", {}).get("id", "")
    for ep in data["episodes"]:
        if ep["outcome"] in outcomes:
            yield {"env": env_id, "seed": ep["seed"], "task_type": ep["task_type"], "outcome": ep["outcome"],
                   "prompt_turns": ep.get("prompt_turns", 1), "messages": ep["transcript"]}


def write(records, path: str | Path) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
            n += 1
    return n


def read(path: str | Path) -> list[tuple[list[dict], int]]:
    """(messages, prompt_turns) of each transcript in a file, checked: ValueError naming the line."""
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            messages = record["messages"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{path}:{n}: expected a JSON object with 'messages'") from None
        if not isinstance(messages, list) or not all(isinstance(m, dict) and m.get("role") in ROLES
                                                      and isinstance(m.get("content"), str) for m in messages):
            raise ValueError(f"{path}:{n}: each message needs a role ({', '.join(ROLES)}) and a text content")
        first_user = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
        prompt_turns = record.get("prompt_turns", (first_user or 0) + 1)
        if not isinstance(prompt_turns, int) or not 1 <= prompt_turns <= len(messages) \
                or messages[prompt_turns - 1]["role"] != "user":
            raise ValueError(f"{path}:{n}: prompt_turns={prompt_turns!r} must point at a user turn")
        if not any(m["role"] == "assistant" for m in messages[prompt_turns:]):
            raise ValueError(f"{path}:{n}: no assistant turn to learn from")
        out.append((messages, prompt_turns))
    if not out:
        raise ValueError(f"{path}: no transcripts")
    return out

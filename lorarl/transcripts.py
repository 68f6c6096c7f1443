"""Episode transcripts for supervised fine-tuning: the JSONL format (docs/transcripts.md), writing
them from an env's oracle or from evaluation reports (the best episodes of a policy: rejection
sampling), and reading them back.

One line per episode: ``{"env", "seed", "task_type", "outcome", "prompt_turns", "messages":
[{"role", "content"}]}``. ``messages`` are the chat turns as the agent saw them: the env's prompt
(``prompt_turns`` messages: earlier turns such as AgentBench's instructions and scripted "Ok."
or one-shot example, then the first observation), then assistant reply / user observation turns.
Only the assistant turns after the prompt are trained on; without ``prompt_turns`` the prompt
ends at the first user turn. An assistant turn with ``"train": false`` is context, not a target:
a recovery transcript's replayed mistakes (``recovery_transcripts``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

ROLES = ("system", "user", "assistant")


def oracle_transcripts(env_id: str, kwargs: dict, seeds, max_turns: int = 64) -> Iterator[dict]:
    """Play each seed with the env's oracle (``envs.oracles``); yield the episodes it solved."""
    import gymnasium as gym

    import envs  # noqa: F401  registers the ids

    env = gym.make(env_id, **kwargs)
    try:
        for seed in seeds:
            record = _play(env, seed, None, [], max_turns)
            if record is not None:
                yield {"env": env_id, **record}
    finally:
        env.close()


def recovery_transcripts(report: str | Path, points: int = 1, seed: int = 0, max_turns: int = 64) -> Iterator[dict]:
    """Recovery from the agent's own mistakes (DAgger's idea: expert actions on the states the
    learner visits). Each failed episode of an ``evaluate.py`` report is replayed in its env with
    the agent's own replies up to a turn drawn among those after which the episode went on
    (``points`` distinct turns per episode, seeded); from the state they left, the oracle takes
    over. Kept only when the env judges the end ``correct``, so a mistake that spoiled the state
    (a wrong row inserted, a file deleted) yields nothing. The replayed replies are marked
    ``"train": false``: context that teaches what to do after a mistake, never the mistake itself.
    Replay plays the env afresh: its observations are the env's, not the report's."""
    import gymnasium as gym

    import envs  # noqa: F401  registers the ids

    data = json.loads(Path(report).read_text())
    config = data["config"]
    by_index = bool(config.get("by_task_index"))
    env = gym.make(config["env"]["id"], **(config["env"].get("kwargs") or {}))
    try:
        for n, ep in enumerate(data["episodes"]):
            if ep["outcome"] in ("correct", "env_error"):  # env_error: the env failed, not the agent
                continue
            replies = agent_replies(ep)
            if len(replies) < 2:  # it ended on its first reply: no state of its own to recover from
                continue
            rng = random.Random(f"{seed}/{n}/{ep['seed']}")
            for k in sorted(rng.sample(range(1, len(replies)), min(points, len(replies) - 1))):
                options = {"task_index": ep["task"]} if by_index else None
                record = _play(env, ep["seed"], options, replies[:k], max_turns)
                if record is not None:
                    yield {"env": config["env"]["id"], **record, "replayed": k}
    finally:
        env.close()


def agent_replies(episode: dict) -> list[str]:
    """The agent's replies in an evaluate.py report's episode record, in order."""
    return [m["content"] for m in episode["transcript"][episode.get("prompt_turns", 1):] if m["role"] == "assistant"]


def _play(env, seed: int, options: dict | None, replies: list[str], max_turns: int) -> dict | None:
    """The episode of ``seed``: ``replies`` first (replayed, marked not to train on), then the
    env's oracle; its record if the env judged it correct, else None (as when the task has no
    solution to run, the replay ended the episode, or the oracle's first reply repeats the last
    replayed one: a demonstration to repeat a reply is what a recovery transcript must not teach)."""
    from envs.oracles import NoSolution, make_oracle

    obs, info = env.reset(seed=seed, options=options)
    try:
        agent = make_oracle(env)
    except NoSolution:
        return None
    history = list(info.get("history") or [])
    messages = [*history, {"role": "user", "content": obs}]
    for reply in replies:
        messages.append({"role": "assistant", "content": reply, "train": False})
        obs, _, terminated, truncated, info = env.step(reply)
        if terminated or truncated:  # the replay ended where the report's episode went on
            return None
        messages.append({"role": "user", "content": obs})
    for turn in range(max_turns):
        messages.append({"role": "assistant", "content": agent(obs)})
        if turn == 0 and replies and messages[-1]["content"] == replies[-1]:
            return None  # the oracle would do again what the agent just did: that reply was no mistake
        obs, _, terminated, truncated, info = env.step(messages[-1]["content"])
        if terminated or truncated:
            break
        messages.append({"role": "user", "content": obs})
    if info.get("outcome") != "correct":
        return None
    return {"seed": seed, "task_type": str(info.get("task_type", "")), "outcome": "correct",
            "prompt_turns": len(history) + 1, "messages": messages}


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
        if not all(isinstance(m.get("train", True), bool) for m in messages):
            raise ValueError(f"{path}:{n}: a message's 'train' must be true or false")
        first_user = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
        prompt_turns = record.get("prompt_turns", (first_user or 0) + 1)
        if not isinstance(prompt_turns, int) or not 1 <= prompt_turns <= len(messages) \
                or messages[prompt_turns - 1]["role"] != "user":
            raise ValueError(f"{path}:{n}: prompt_turns={prompt_turns!r} must point at a user turn")
        if not any(m["role"] == "assistant" and m.get("train", True) for m in messages[prompt_turns:]):
            raise ValueError(f"{path}:{n}: no assistant turn to learn from")
        out.append((messages, prompt_turns))
    if not out:
        raise ValueError(f"{path}: no transcripts")
    return out

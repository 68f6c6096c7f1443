"""Recovery transcripts (``transcripts.recovery_transcripts``): a failed episode of a report is
replayed with the agent's own replies up to a turn, then the oracle finishes it through the env's
judging; the replayed replies are context (``"train": false``), out of the SFT loss."""

import json

import gymnasium as gym
import pytest

import envs  # noqa: F401
from lorarl import transcripts
from lorarl.rollout import ChatFramer
from lorarl.sft import encode

DB = "lorarl/DBBench-v0"
BAD_SQL = "Action: Operation\n```sql\nSELECT no_such_column FROM no_such_table\n```"
WRONG = 'Action: Answer\nFinal Answer: ["certainly not this"]'


def report(tmp_path, episodes, kwargs=None):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"config": {"env": {"id": DB, "kwargs": kwargs or {}}, "by_task_index": False},
                                "episodes": episodes}))
    return path


def failed(seed, replies, outcome="incorrect", task=0):
    """A report's episode record: the prompt, then the replies with (stale) observations between."""
    transcript = [{"role": "user", "content": "the question"}]
    for r in replies:
        transcript += [{"role": "assistant", "content": r}, {"role": "user", "content": "an observation"}]
    return {"task": task, "seed": seed, "outcome": outcome, "prompt_turns": 1, "transcript": transcript[:-1]}


def a_task(kind_ok):
    env = gym.make(DB)
    try:
        for seed in range(200):
            env.reset(seed=seed)
            if kind_ok(env.unwrapped.task):
                return seed, env.unwrapped.task
    finally:
        env.close()
    raise AssertionError("no such task in 200 seeds")


def test_the_oracle_finishes_from_the_agents_own_mistakes(tmp_path, tiny_tokenizer):
    seed, _ = a_task(lambda t: t.kind == "select")
    path = report(tmp_path, [failed(seed, [BAD_SQL, BAD_SQL, WRONG])])
    got = list(transcripts.recovery_transcripts(path, points=2))
    assert [r["replayed"] for r in got] == [1, 2]  # both turns after which the episode went on
    for r in got:
        assert r["outcome"] == "correct" and r["env"] == DB and r["seed"] == seed
        replies = [m for m in r["messages"] if m["role"] == "assistant"]
        k = r["replayed"]
        assert [m["content"] for m in replies[:k]] == [BAD_SQL] * k
        assert all(m["train"] is False for m in replies[:k]) and all("train" not in m for m in replies[k:])
        assert r["messages"][2]["content"].startswith("Error")  # the env's own observation of the mistake
        ids, mask = encode(r["messages"], r["prompt_turns"], ChatFramer(tiny_tokenizer), 100_000)
        bad = tiny_tokenizer(BAD_SQL, add_special_tokens=False)["input_ids"]
        first = next(i for i in range(len(ids)) if ids[i:i + len(bad)] == bad)
        assert not any(mask[first:first + len(bad) + 1])  # the mistake and its end-of-turn: context
        trained = [t for t, m in zip(ids, mask) if m]
        assert tiny_tokenizer.decode(trained).count("Action:") == len(replies) - k  # the oracle's turns only
    # the file round-trips through the SFT reader
    out = tmp_path / "recover.jsonl"
    assert transcripts.write(got, out) == 2 and len(transcripts.read(out)) == 2


def test_a_mistake_that_spoils_the_state_yields_nothing(tmp_path):
    """The truth is the task's: after the agent deleted every row, the oracle's count of what is
    left is wrong, and the episode is not kept as a demonstration."""
    seed, task = a_task(lambda t: t.kind == "select" and "count" in (t.gold_sql or "").lower())
    wipe = f"Action: Operation\n```sql\nDELETE FROM \"{task.table_name}\"\n```"
    assert len(list(transcripts.recovery_transcripts(report(tmp_path, [failed(seed, [BAD_SQL, WRONG])])))) == 1
    assert list(transcripts.recovery_transcripts(report(tmp_path, [failed(seed, [wipe, WRONG])]))) == []


def test_only_failed_episodes_that_went_on_after_a_mistake(tmp_path):
    seed, task = a_task(lambda t: t.kind == "select")
    from envs.db_bench.oracle import Oracle

    right = Oracle(task).reply("")  # the oracle's own first query: the agent's mistake came later
    path = report(tmp_path, [failed(seed, [BAD_SQL, WRONG], outcome="correct"),  # not a failure
                             failed(seed, [BAD_SQL, WRONG], outcome="env_error"),  # not the agent's
                             failed(seed, [WRONG]),  # ended on its first reply: no state of its own
                             failed(seed, []),
                             failed(seed, [right, WRONG])])  # a takeover would teach to repeat the query
    assert list(transcripts.recovery_transcripts(path, points=3)) == []


def test_the_reader_checks_the_train_flag(tmp_path):
    def written(messages):
        path = tmp_path / "t.jsonl"
        path.write_text(json.dumps({"messages": messages}) + "\n")
        return path

    q = {"role": "user", "content": "q"}
    with pytest.raises(ValueError, match="'train' must be true or false"):
        transcripts.read(written([q, {"role": "assistant", "content": "a", "train": "no"}]))
    with pytest.raises(ValueError, match="no assistant turn to learn from"):
        transcripts.read(written([q, {"role": "assistant", "content": "a", "train": False}]))
    assert len(transcripts.read(written([q, {"role": "assistant", "content": "a", "train": False},
                                          {"role": "user", "content": "o"}, {"role": "assistant", "content": "b"}]))) == 1


def test_os_interaction_recovers_in_its_sandbox_and_a_spoiled_file_yields_nothing(tmp_path):
    from envs.os_interaction import sandbox
    from envs.os_interaction.oracle import answer, bash

    if (reason := sandbox.probe()) is not None:
        pytest.skip(f"this machine cannot create the sandbox: {reason}")
    kwargs = {"skills": ["count_lines"]}
    env = gym.make("lorarl/OSInteraction-v0", **kwargs)
    try:
        env.reset(seed=3)
        path = env.unwrapped.task.solution[0].split("< ")[1]  # "wc -l < FILE"
    finally:
        env.close()
    mistake, spoil = bash("cat /no/such/file"), bash(f": > {path}")  # an error; emptying the counted file
    episodes = [failed(3, [mistake, answer("1")]), failed(3, [spoil, answer("0")])]
    path = tmp_path / "os.json"
    path.write_text(json.dumps({"config": {"env": {"id": "lorarl/OSInteraction-v0", "kwargs": kwargs}}, "episodes": episodes}))
    (got,) = transcripts.recovery_transcripts(path)
    assert got["outcome"] == "correct" and got["messages"][1] == {"role": "assistant", "content": mistake, "train": False}
    assert "No such file" in got["messages"][2]["content"]


def test_the_script_names_a_bad_report_in_one_line(tmp_path, capsys):
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "scripts"))
    import make_transcripts

    bad = tmp_path / "bad.json"
    for text, why in (("[1]", "not an evaluate.py report"), ('{"episodes": [], "config": 3}', "not an evaluate.py report"),
                      ("{", "Expecting")):
        bad.write_text(text)
        with pytest.raises(SystemExit) as e:
            make_transcripts.main(["--recover-from", str(bad), "--out", str(tmp_path / "o.jsonl")])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert str(bad) in err and why in err
    with pytest.raises(SystemExit):
        make_transcripts.main(["--recover-from", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o.jsonl")])
    assert "No such file" in capsys.readouterr().err
    path = report(tmp_path, [])
    with pytest.raises(SystemExit):
        make_transcripts.main(["--recover-from", str(path), "--points", "0", "--out", str(tmp_path / "o.jsonl")])
    assert "--points must be at least 1" in capsys.readouterr().err

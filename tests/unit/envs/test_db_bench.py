"""DBBench: protocol, judging, containment, sources, and the oracle at 100%."""

import json
import random
import string
from collections import Counter
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401
from envs.db_bench.generator import SKILLS, generate
from envs.db_bench.oracle import oracle_replies
from envs.db_bench.protocol import parse_reply
from envs.db_bench.tasks import answers_match, parse_answer

DEV = Path(__file__).resolve().parents[4] / "shared/data/agentbench/dbbench/dev.jsonl"
ID = "lorarl/DBBench-v0"


def play(env, replies, **reset):
    obs, info = env.reset(**reset)
    for r in replies:
        obs, reward, term, trunc, info = env.step(r)
        if term or trunc:
            return obs, reward, term, trunc, info
    return obs, reward, term, trunc, info


def op(sql):
    return f"Let me look.\nAction: Operation\n```sql\n{sql}\n```"


def answer(values):
    return f"Action: Answer\nFinal Answer: {values!r}"


def test_check_env_and_deterministic_reset():
    env = gym.make(ID)
    check_env(env.unwrapped)
    assert env.reset(seed=7)[0] == env.reset(seed=7)[0]
    assert env.reset(seed=7)[0] != env.reset(seed=8)[0]
    assert "Action: Operation" in env.reset(seed=1)[0]


def test_oracle_solves_1000_generated_tasks_and_every_skill_occurs():
    env = gym.make(ID)
    outcomes, skills = Counter(), Counter()
    for seed in range(1000):
        env.reset(seed=seed)
        task = env.unwrapped.task
        *_, info = play(env, oracle_replies(task), seed=seed)
        outcomes[info["outcome"]] += 1
        skills[info["task_type"]] += 1
    assert outcomes == {"correct": 1000}
    assert set(skills) == set(SKILLS)


@pytest.mark.skipif(not DEV.exists(), reason="shared AgentBench dev split not present")
def test_oracle_solves_agentbench_dev_split():
    env = gym.make(ID, source="agentbench", path=str(DEV))
    assert env.unwrapped.num_tasks == 60
    results = Counter()
    for i in range(60):
        env.reset(options={"task_index": i})
        *_, info = play(env, oracle_replies(env.unwrapped.task), options={"task_index": i})
        results[(info["task_type"] in ("INSERT", "UPDATE", "DELETE"), info["outcome"])] += 1
    assert results == {(True, "correct"): 40, (False, "correct"): 20}


def test_lifelong_format(tmp_path):
    entries = [
        {"instruction": "How many rows have x > 1?", "skill_list": ["where", "count"],
         "table_info": {"name": "t", "column_info_list": [{"name": "x", "type": "INT"}], "row_list": [[1], [2], [3]]},
         "answer_info": {"direct": [[2]], "md5": None, "sql": "SELECT COUNT(*) FROM t WHERE x > 1"}},
        {"instruction": "Delete rows with x = 1.", "skill_list": ["delete"],
         "table_info": {"name": "t", "column_info_list": [{"name": "x", "type": "INT"}], "row_list": [[1], [2]]},
         "answer_info": {"direct": None, "md5": "ignored", "sql": "DELETE FROM t WHERE x = 1"}},
    ]
    path = tmp_path / "lifelong.json"
    path.write_text(json.dumps(entries))
    env = gym.make(ID, source="lifelong", path=str(path), max_rounds=3)
    assert play(env, [answer([2])], options={"task_index": 0})[4]["outcome"] == "correct"
    assert play(env, [answer([3])], options={"task_index": 0})[4]["outcome"] == "incorrect"
    info = play(env, [op("DELETE FROM t WHERE x = 1"), answer([])], options={"task_index": 1})[4]
    assert info["outcome"] == "correct" and info["skills"] == ["delete"]
    # the wrong modification is judged by the table, whatever the answer says
    assert play(env, [op("DELETE FROM t"), answer([])], options={"task_index": 1})[4]["outcome"] == "incorrect"


def test_outcome_paths():
    env = gym.make(ID, skills=["count"], max_rounds=2)
    *_, info = play(env, ["I think the answer is 3"], seed=0)
    assert info["outcome"] == "invalid_action"
    *_, info = play(env, ["Action: Operation\nno code block"], seed=0)
    assert info["outcome"] == "invalid_action"
    obs, _, term, trunc, info = play(env, [op("SELECT 1"), op("SELECT 2")], seed=0)
    assert (info["outcome"], term, trunc, info["rounds"]) == ("task_limit_reached", False, True, 2)
    *_, info = play(env, [answer(["not a number"])], seed=0)
    assert info["outcome"] == "incorrect"
    *_, info = play(env, ["Action: Answer\nFinal Answer: [unclosed"], seed=0)
    assert info["outcome"] == "incorrect"


def test_observations_rows_errors_and_truncation():
    env = gym.make(ID, skills=["select"], max_observation_chars=40)
    env.reset(seed=0)
    obs = env.step(op("SELECT name FROM sqlite_master"))[0]
    assert obs.startswith("[(")
    obs = env.step(op("SELEC nonsense"))[0]
    assert obs.startswith("Error:")
    obs = env.step(op("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 500) SELECT x FROM c"))[0]
    assert "[truncated," in obs and len(obs) < 100


def test_gold_sql_failure_is_env_error(tmp_path):
    entry = {"description": "d", "label": [], "type": ["UPDATE"], "sql": {"query": "UPDATE nope SET a = 1"},
             "table": {"table_name": "t", "table_info": {"columns": [{"name": "a", "type": "INT"}], "rows": [[1]]}}}
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(entry) + "\n")
    env = gym.make(ID, source="agentbench", path=str(path))
    *_, info = play(env, [answer([])], options={"task_index": 0})
    assert info["outcome"] == "env_error" and "gold SQL fails" in info["gold_error"]


@pytest.mark.parametrize("sql,needle", [
    ("ATTACH DATABASE '/etc/passwd' AS host", "Error"),
    ("ATTACH DATABASE 'file:/tmp/evil.db' AS x", "Error"),
    ("SELECT load_extension('/lib/x86_64-linux-gnu/libc.so.6')", "Error"),
    ("PRAGMA journal_mode = OFF", "Error"),
    ("PRAGMA writable_schema = 1", "Error"),
    ("SELECT count(*) FROM sqlite_master a, sqlite_master b, (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x FROM c)", "interrupted"),
    ("SELECT 1; DROP TABLE employees", "Error"),
])
def test_hostile_sql_is_refused_or_contained(sql, needle):
    env = gym.make(ID, query_timeout_s=0.5)
    env.reset(seed=3)
    obs, reward, term, trunc, info = env.step(op(sql))
    assert needle in obs and not term
    assert env.step(op("SELECT 1"))[0] == "[(1,)]"  # the episode goes on normally
    assert not Path("/tmp/evil.db").exists()


def test_random_text_agent_scores_zero_and_never_crashes():
    env = gym.make(ID, max_rounds=3)
    rng = random.Random(0)
    chars = string.printable + "éß漢\x00"
    wins = 0
    for ep in range(150):
        env.reset(seed=ep)
        for _ in range(3):
            noise = "".join(rng.choice(chars) for _ in range(rng.randint(0, 80)))
            reply = rng.choice([noise, "Action: Operation\n```sql\n" + noise + "\n```", "Action: Answer\nFinal Answer: " + noise])
            _, _, term, trunc, info = env.step(reply)
            if term or trunc:
                wins += info["outcome"] == "correct"
                break
    assert wins <= 2


def test_answer_matching_rules():
    assert answers_match(["3.001"], [3])
    assert answers_match(["b", "a"], ["a", "b"])
    assert not answers_match(["a"], ["a", "b"])
    assert answers_match([" Paris "], ["Paris"])
    assert parse_answer("__import__('os').system('true')") is None  # literal_eval, never eval
    assert parse_answer("[1, 'x']") == [1, "x"]


def test_parse_reply_protocol():
    assert parse_reply("Action: Operation\n```sql\nSELECT 1;\n```") == ("operation", "SELECT 1;")
    assert parse_reply("x\nAction: Answer\nFinal Answer: [\"a\"]") == ("answer", '["a"]')
    assert parse_reply("hello")[0] == "invalid"


def test_generator_is_deterministic():
    assert generate(5) == generate(5)
    assert generate(5, ["insert"]).kind == "modify"

"""DBBench: AgentBench protocol and judging, reward integrity against agents that do no real work,
containment of hostile SQL, and an oracle that solves tasks by executing their reference SQL."""

import json
import os
import random
import string
import time
from collections import Counter
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401
from envs.db_bench.generator import ALL_SKILLS, SKILLS, WIDE_SKILLS, generate
from envs.db_bench.oracle import Oracle, repair_sql
from envs.db_bench.protocol import parse_reply
from envs.db_bench.tasks import Task, answer_values, answers_match

ROOT = Path(__file__).resolve().parents[3]
DEV = ROOT.parent / "shared/data/agentbench/dbbench/dev.jsonl"
SAMPLE = ROOT / "tests/fixtures/dbbench_sample.jsonl"
ID = "lorarl/DBBench-v0"
# Dev-split tasks whose executed reference query returns the label. The other 16 questions'
# reference queries fail on any engine or return something else than the label (e.g. task 16:
# MIN over a TEXT column gives '13', the label says '5.0'); every modification is solvable.
DEV_SOLVABLE_QUESTIONS = {3, 4, 14, 19}
PLAIN_DIGEST = "ec1a2a872b42de0e2e15459b2a5447b0f76348bab7a7e5dd811f3f532670ca7f"


def play(env, agent, **reset):
    """One episode; ``agent(observation) -> reply``. Returns the final info."""
    obs, info = env.reset(**reset)
    while True:
        obs, reward, term, trunc, info = env.step(agent(obs))
        if term or trunc:
            return {**info, "reward": reward, "terminated": term, "truncated": trunc, "observation": obs}


def scripted(*replies):
    it = iter(replies)
    return lambda _obs: next(it)


def oracle_agent(env):
    return Oracle(env.unwrapped.task).reply


def play_oracle(env, **reset):
    env.reset(**reset)
    return play(env, oracle_agent(env), **reset)


def op(sql):
    return f"Let me look.\nAction: Operation\n```sql\n{sql}\n```"


def answer(values):
    return f"Done.\nAction: Answer\nFinal Answer: {values!r}"


# Agents that do no real work. None may ever be rewarded on a task the oracle solves.
LAZY = {
    "empty answer": lambda: scripted(answer([])),
    "wrong answer": lambda: scripted(answer(["__wrong__"])),
    "wrong number": lambda: scripted(answer([-987654321])),
    "bare final answer": lambda: scripted("Final Answer: none\n"),
    "looks, then answers nothing": lambda: scripted(op("SELECT 1"), answer([])),
    "no action": lambda: scripted("I am done."),
    "wrong modification": lambda: scripted(op("DELETE FROM main.sqlite_master"), answer([])),
}


def lazy_wins(env, episodes):
    wins = Counter()
    for name, make in LAZY.items():
        for reset in episodes:
            info = play(env, make(), **reset)
            wins[name] += info["outcome"] == "correct"
            assert info["outcome"] != "env_error", (name, reset, info)
    return wins


def test_check_env_and_deterministic_reset():
    env = gym.make(ID)
    check_env(env.unwrapped)
    assert env.reset(seed=7)[0] == env.reset(seed=7)[0]
    assert env.reset(seed=7)[0] != env.reset(seed=8)[0]
    assert "Action: Operation" in env.reset(seed=1)[0]


# ---------------------------------------------------------------- the oracle executes solutions

def test_oracle_solves_1000_generated_tasks_by_running_their_sql():
    env = gym.make(ID)
    outcomes, skills = Counter(), Counter()
    for seed in range(1000):
        info = play_oracle(env, seed=seed)
        outcomes[info["outcome"]] += 1
        skills[info["task_type"]] += 1
        assert info["rounds"] == 2  # one statement, one answer: nothing echoed from the task
    assert outcomes == {"correct": 1000}
    assert set(skills) == set(SKILLS)


def test_oracle_solves_wiki_named_tasks_of_every_skill_and_bare_names_fail():
    """AgentBench-like names (``names="wiki"``): every skill solvable by executing its SQL, and only
    with the quoting that SQL needs: the same query with bare names, or an apostrophe left single,
    is an error, as a model that learned plain tasks only writes it."""
    env = gym.make(ID, names="wiki")
    outcomes, skills, apostrophes = Counter(), Counter(), 0
    for seed in range(300):
        info = play_oracle(env, seed=seed)
        outcomes[info["outcome"]] += 1
        task = env.unwrapped.task
        skills[task.task_type] += 1
        assert " " in task.table_name and f'"{task.table_name}"' in task.gold_sql
        apostrophes += "''" in task.gold_sql
        bare = task.gold_sql.replace('"', "")  # what an unquoting model writes
        env.reset(seed=seed)
        assert env.step(op(bare))[0].startswith("Error:"), bare
    assert outcomes == {"correct": 300}
    assert set(skills) == set(SKILLS)
    assert apostrophes > 25  # names (O'Neil) and categories (Children's Books) in WHERE and INSERT literals
    assert lazy_wins(env, [{"seed": s} for s in range(60)]) == {n: 0 for n in LAZY}


def test_plain_names_are_the_tasks_they_always_were_and_mixed_draws_both():
    """Studies and pinned results replay the plain generator's tasks: adding names left them as
    they were (digest of seeds 0-199, in any process: a having label's order once followed the
    process's string hash seed)."""
    import hashlib

    digest = hashlib.sha256("".join(repr(generate(s)) for s in range(200)).encode()).hexdigest()
    assert digest == PLAIN_DIGEST
    assert all(generate(s) == generate(s, names="plain") for s in range(20))
    wiki = [" " in generate(s, names="mixed").table_name for s in range(200)]
    assert 60 < sum(wiki) < 140
    with pytest.raises(ValueError, match="names"):
        generate(0, names="fancy")


def test_oracle_solves_agentbench_shaped_tasks_and_lazy_agents_win_none():
    """The wide family (``skills=wide``): AgentBench's shapes (4-9 TEXT columns named like
    ``Tonnage (GRT)``, ``H / A``; INSERTs listing every column), each solvable by executing its SQL,
    only with its identifiers quoted, and with MySQL's case-insensitive comparison (questions are
    sometimes lowercase, as WikiSQL's)."""
    env = gym.make(ID, skills="wide")
    outcomes, skills, widths, lowercase = Counter(), Counter(), set(), 0
    for seed in range(240):
        info = play_oracle(env, seed=seed)
        outcomes[info["outcome"]] += 1
        task = env.unwrapped.task
        skills[task.task_type] += 1
        widths.add(len(task.columns))
        assert {t for _, t in task.columns} == {"TEXT"} and task.mysql_text
        assert f"headers of this table are {','.join(c for c, _ in task.columns)}." in task.prompt
        lowercase += task.description == task.description.lower()
        spaced = [c for c, _ in task.columns if " " in c and f"`{c}`" in task.gold_sql]
        if spaced:  # the same statement with the names bare, as a model copying the header writes it
            env.reset(seed=seed)
            bare = task.gold_sql.replace("`", "")
            assert env.step(op(bare))[0].startswith("Error:"), bare
        if task.task_type == "lookup":  # the value as a lowercase question spells it still matches
            env.reset(seed=seed)
            low = task.gold_sql.split(" WHERE ")[0] + " WHERE " + task.gold_sql.split(" WHERE ")[1].lower()
            assert env.step(op(low))[0] == repr([(task.label[0],)]), low
    assert outcomes == {"correct": 240}
    assert set(skills) == set(WIDE_SKILLS) and min(widths) == 4 and max(widths) == 9
    assert lowercase > 10
    assert lazy_wins(env, [{"seed": s} for s in range(60)]) == {n: 0 for n in LAZY}


def test_skill_groups_and_the_default_draw():
    """``skills=None`` keeps the first family's tasks (pinned above); ``wide`` and ``all`` name families."""
    assert {generate(s).task_type for s in range(300)} == set(SKILLS)
    env = gym.make(ID, skills=["all"])
    assert env.unwrapped.skills == ALL_SKILLS
    types = {env.reset(seed=s)[1]["task_type"] for s in range(400)}
    assert types == set(ALL_SKILLS)
    assert gym.make(ID, skills=["wide", "count"]).unwrapped.skills == WIDE_SKILLS + ("count",)
    with pytest.raises(ValueError, match="unknown skills"):
        gym.make(ID, skills=["widest"])


def test_generator_answers_come_from_python_not_sql():
    """The oracle answers with what the SQL returned; a label that SQL disagrees with fails it."""
    env = gym.make(ID, skills=["count"])
    obs, _ = env.reset(seed=0)
    task = env.unwrapped.task
    task.label = [task.label[0] + 1]
    oracle = Oracle(task)
    while True:
        obs, _, term, trunc, info = env.step(oracle.reply(obs))
        if term or trunc:
            break
    assert info["outcome"] == "incorrect"


def test_agentbench_sample_judges_modifications_by_label_sql_and_md5():
    env = gym.make(ID, source="agentbench", path=str(SAMPLE))
    infos = [play_oracle(env, options={"task_index": i}) for i in range(4)]
    assert [i["outcome"] for i in infos] == ["correct", "correct", "correct", "incorrect"]
    assert [i["task_type"] for i in infos] == ["INSERT", "UPDATE", "counting", "aggregation-MAX"]
    for info in infos[:2]:  # SQLite reproduces AgentBench's MySQL digest of the expected table
        assert info["reference"] == "reference statement; AgentBench's answer_md5 reproduced"
    assert lazy_wins(env, [{"options": {"task_index": i}} for i in range(3)]) == {n: 0 for n in LAZY}


@pytest.mark.skipif(not DEV.exists(), reason=f"AgentBench dev split not found at {DEV} (../shared is beside the repo only in the team workspace)")
def test_agentbench_dev_split_oracle_and_lazy_agents():
    env = gym.make(ID, source="agentbench", path=str(DEV))
    assert env.unwrapped.num_tasks == 60
    infos = {i: play_oracle(env, options={"task_index": i}) for i in range(60)}
    modify = {i for i, info in infos.items() if info["task_type"] in ("INSERT", "UPDATE", "DELETE")}
    solved = {i for i, info in infos.items() if info["outcome"] == "correct"}
    assert len(modify) == 40 and modify <= solved
    assert solved - modify == DEV_SOLVABLE_QUESTIONS  # 44 of 60
    assert all(infos[i]["reference"] == "reference statement; AgentBench's answer_md5 reproduced" for i in modify)
    assert lazy_wins(env, [{"options": {"task_index": i}} for i in sorted(solved)]) == {n: 0 for n in LAZY}


def test_lazy_agents_never_win_generated_tasks():
    env = gym.make(ID)
    assert lazy_wins(env, [{"seed": s} for s in range(150)]) == {n: 0 for n in LAZY}


# ---------------------------------------------------------------- AgentBench fidelity

def test_parse_reply_follows_agentbench():
    assert parse_reply("Action: Operation\n```sql\nSELECT 1;\n```") == ("operation", "SELECT 1;")
    assert parse_reply("Action: Operation\n```sql\nSELECT a\nFROM t\n```") == ("operation", "SELECT a FROM t")
    assert parse_reply("x\nAction: Answer\nFinal Answer: [\"a\"]") == ("answer", ' ["a"]')
    assert parse_reply("I know it.\nFinal Answer: [1]\nbecause...") == ("answer", " [1]")  # no Action needed; one line
    assert parse_reply("Final Answer: [1]")[0] == "invalid"  # AgentBench wants the line after a newline
    assert parse_reply("Action: operation\n```sql\nSELECT 1\n```")[0] == "invalid"  # case as written
    assert parse_reply("Action: Operation\nno code block")[0] == "invalid"
    assert parse_reply("hello")[0] == "invalid"


def test_answer_rules():
    assert answers_match(" [5]", ["5"]) and answers_match(" 5", ["5.0"])  # float equality
    assert not answers_match(" [3.001]", ["3"])
    assert answers_match(" ['b', 'a']", ["a", "b"]) and not answers_match(" [1, 2]", ["1", "2"])  # sets: 1 != "1"
    assert not answers_match(" Paris", ["Paris"]) and answers_match("Paris", ["Paris"])  # no strip, as AgentBench
    assert not answers_match(" ['a']", ["a", "b"])
    assert answers_match(" [3.001]", ["3"], "tolerant") and answers_match(" [1, 2]", ["1", "2"], "tolerant")
    assert answers_match(" Paris ", ["Paris"], "tolerant")
    assert answer_values("__import__('os').system('true')") == ["__import__('os').system('true')"]  # never eval


def test_round_budget_and_chat_turns():
    env = gym.make(ID, skills=["count"], max_rounds=2, prompt_format="chat")
    obs, info = env.reset(seed=0)
    assert [m["role"] for m in info["history"]] == ["user", "assistant"] and info["history"][1]["content"] == "Ok."
    assert "Action: Operation" in info["history"][0]["content"] and "Action: Operation" not in obs
    info = play(env, scripted(op("SELECT 1"), op("SELECT 2"), op("SELECT 3")), seed=0)
    assert (info["outcome"], info["truncated"], info["rounds"]) == ("task_limit_reached", True, 3)
    task = env.unwrapped.task
    info = play(env, scripted(op("SELECT 1"), op("SELECT 2"), answer(task.label)), seed=0)
    assert info["outcome"] == "correct" and info["rounds"] == 3  # after the budget one more reply may answer


def test_modification_is_judged_however_the_episode_ends():
    env = gym.make(ID, skills=["update"], max_rounds=2)
    env.reset(seed=4)
    sql = env.unwrapped.task.gold_sql
    assert play(env, scripted(op(sql), "gibberish"), seed=4)["outcome"] == "correct"  # as AgentBench scores it
    assert play(env, scripted(op(sql), op("SELECT 1"), op("SELECT 2")), seed=4)["outcome"] == "correct"
    assert play(env, scripted(op(sql.replace("SET", "SET name = 'x',")), answer([])), seed=4)["outcome"] == "incorrect"
    assert play(env, scripted("gibberish"), seed=4)["outcome"] == "invalid_action"


def _entry(**over):
    entry = {"description": "Change a.", "label": ["UPDATE t SET a = '2' WHERE a = '1'"], "type": ["UPDATE"],
             "add_description": "The name of this table is t, and the headers of this table are a.",
             "table": {"table_name": "t", "table_info": {"columns": [{"name": "a", "type": "INT"}], "rows": [[1], [3]]}}}
    return {**entry, **over}


def _env_for(tmp_path, *entries):
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return gym.make(ID, source="agentbench", path=str(path))


def test_tasks_that_cannot_be_judged_end_env_error_with_the_reason(tmp_path):
    env = _env_for(tmp_path, _entry(label=["UPDATE nope SET a = 1"]), _entry(label=["UPDATE t SET a = '9' WHERE a = '7'"]),
                   _entry(type=["other"], label=[], sql={"query": "SELECT a FROM t WHERE a = '5'"}))
    reasons = []
    for i in range(3):
        info = play(env, scripted(answer([])), options={"task_index": i})
        assert info["outcome"] == "env_error" and info["rounds"] == 1
        reasons.append(info["error"])
    assert "no answer_md5" in reasons[0] and "no such table" in reasons[0]
    assert "leaves the table unchanged" in reasons[1]
    assert "expected answer is empty" in reasons[2]


def test_answer_md5_alone_judges_when_the_reference_fails(tmp_path):
    from envs.db_bench._worker import mysql_md5

    expected = mysql_md5([("2",), ("3",)])
    env = _env_for(tmp_path, _entry(label=["UPDATE IGNORE t SET a = '2' WHERE a = '1'"],  # MySQL only
                                    answer_md5=f"[('{expected}',)]"))
    env.reset(options={"task_index": 0})
    assert env.unwrapped.reference.note.startswith("answer_md5 only")
    assert play(env, scripted(op("UPDATE t SET a = '2' WHERE a = '1'"), answer([])), options={"task_index": 0})["outcome"] == "correct"
    assert play(env, scripted(answer([])), options={"task_index": 0})["outcome"] == "incorrect"


def test_mysql_md5_matches_agentbench_rules():
    import hashlib

    from envs.db_bench._worker import mysql_md5

    row = lambda *v: hashlib.md5(",".join(v).encode()).hexdigest()[:5]
    # CONCAT_WS skips NULLs; rowhashes sorted and joined by commas; the joined text is cut at 1024 bytes
    assert mysql_md5([("b", None, "c"), ("a",)]) == hashlib.md5(",".join(sorted([row("b", "c"), row("a")])).encode()).hexdigest()
    assert mysql_md5([]) is None
    many = [(str(i),) for i in range(400)]
    joined = ",".join(sorted(row(str(i)) for i in range(400)))
    assert mysql_md5(many) == hashlib.md5(joined[:1024].encode()).hexdigest()
    assert mysql_md5([(3.0,)]) == mysql_md5([("3",)])


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
    assert play(env, scripted(answer([2])), options={"task_index": 0})["outcome"] == "correct"
    assert play(env, scripted(answer([3])), options={"task_index": 0})["outcome"] == "incorrect"
    info = play(env, scripted(op("DELETE FROM t WHERE x = 1"), answer([])), options={"task_index": 1})
    assert info["outcome"] == "correct" and info["skills"] == ["delete"]
    assert play(env, scripted(op("DELETE FROM t"), answer([])), options={"task_index": 1})["outcome"] == "incorrect"
    for i in (0, 1):
        assert play_oracle(env, options={"task_index": i})["outcome"] == "correct"


def test_repair_sql_quotes_bare_column_names():
    task = Task("q", "t t", [("Presentation of Credentials", "TEXT"), ("W-L-T", "TEXT"), ("Average", "TEXT")], [],
                "other", "select")
    assert repair_sql("SELECT Presentation of Credentials FROM x WHERE b = 'Presentation of Credentials'", task) == \
        "SELECT \"Presentation of Credentials\" FROM x WHERE b = 'Presentation of Credentials'"
    assert repair_sql("SELECT AverageFROM [x]WHERE W-L-T = '5-1'", task) == "SELECT Average FROM [x] WHERE \"W-L-T\" = '5-1'"
    assert repair_sql("SELECT a FROM table", task) == 'SELECT a FROM "t t"'


# ---------------------------------------------------------------- containment

def test_observations_rows_errors_and_truncation():
    env = gym.make(ID, skills=["select"], max_observation_chars=40)
    env.reset(seed=0)
    obs = env.step(op("SELECT name FROM sqlite_master"))[0]
    assert obs.startswith("[(")
    assert env.step(op("SELEC nonsense"))[0].startswith("Error:")
    obs = env.step(op("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 500) SELECT x FROM c"))[0]
    assert obs.endswith("[TRUNCATED]") and len(obs) == 40 + len("[TRUNCATED]")


@pytest.mark.serial  # a wall-clock budget
@pytest.mark.parametrize("sql,needle", [
    ("ATTACH DATABASE '/etc/passwd' AS host", "Error"),
    ("ATTACH DATABASE 'file:/tmp/evil.db' AS x", "Error"),
    ("SELECT load_extension('/lib/x86_64-linux-gnu/libc.so.6')", "Error"),
    ("PRAGMA journal_mode = OFF", "Error"),
    ("PRAGMA max_page_count = 1000000000", "Error"),
    ("PRAGMA writable_schema = 1", "Error"),
    ("SELECT count(*) FROM sqlite_master a, sqlite_master b, (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x FROM c)", "interrupted"),
    ("SELECT length(printf('%.*c', 2000000000, 'x'))", "interrupted"),  # one VM step: the worker is killed
    ("SELECT 1; DROP TABLE employees", "Error"),
])
def test_hostile_sql_is_refused_or_contained(sql, needle):
    env = gym.make(ID, query_timeout_s=0.5)
    env.reset(seed=3)
    table = env.unwrapped.task.table_name
    env.step(op(f"INSERT INTO {table} (name) VALUES ('kept')"))
    start = time.monotonic()
    obs, reward, term, trunc, info = env.step(op(sql))
    assert needle in obs and not term
    assert time.monotonic() - start < 3.0  # budget 0.5 s + 1 s grace + restart
    # the episode goes on, with every change made before the hostile statement
    assert env.step(op(f"SELECT count(*) FROM {table} WHERE name = 'kept'"))[0] == "[(1,)]"
    assert not Path("/tmp/evil.db").exists()


@pytest.mark.serial  # lists /tmp, /var/tmp and the working directory
def test_floods_stay_in_the_workers_capped_memory_and_write_no_file(tmp_path):
    watched = [Path("/tmp"), Path("/var/tmp"), Path.cwd()]
    before = {d: set(os.listdir(d)) for d in watched if d.is_dir()}
    env = gym.make(ID, query_timeout_s=5.0, limits={"db_mb": 8, "memory_mb": 128})
    env.reset(seed=0)
    blob = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 10000) SELECT randomblob(900000) FROM c"
    for sql in (f"CREATE TABLE flood AS {blob}", f"CREATE TEMP TABLE flood AS {blob}",
                "SELECT length(group_concat(b)) FROM (" + blob.replace("randomblob(900000)", "randomblob(900000) AS b") + ")",
                "SELECT b FROM (" + blob.replace("randomblob(900000)", "randomblob(900000) AS b") + ") ORDER BY b LIMIT 1"):
        obs = env.step(op(sql))[0]
        assert obs.startswith("Error:") and ("full" in obs or "memory" in obs or "too big" in obs or "interrupted" in obs), obs
    worker = env.unwrapped.db.proc.pid
    limits = {line[:26].strip(): line[26:].split()[0] for line in Path(f"/proc/{worker}/limits").read_text().splitlines()[1:]}
    assert limits["Max file size"] == "0" and limits["Max address space"] == str(128 << 20)
    assert env.step(op("SELECT 1"))[0] == "[(1,)]"
    assert {d: set(os.listdir(d)) for d in before} == before
    env.close()


def test_random_text_agent_scores_zero_and_never_crashes():
    env = gym.make(ID, max_rounds=3)
    rng = random.Random(0)
    chars = string.printable + "éß漢\x00"
    wins = 0
    for ep in range(150):
        env.reset(seed=ep)
        for _ in range(4):
            noise = "".join(rng.choice(chars) for _ in range(rng.randint(0, 80)))
            reply = rng.choice([noise, "Action: Operation\n```sql\n" + noise + "\n```", "Action: Answer\nFinal Answer: " + noise])
            _, _, term, trunc, info = env.step(reply)
            if term or trunc:
                wins += info["outcome"] == "correct"
                assert info["outcome"] != "env_error"
                break
    assert wins == 0


def test_generator_is_deterministic():
    assert generate(5) == generate(5)
    assert generate(5, ["insert"]).kind == "modify"


def test_bad_arguments_and_task_files_are_one_clear_error(tmp_path):
    for kwargs, needle in [({"max_rounds": 0}, "max_rounds"), ({"query_timeout_s": -1}, "query_timeout_s"),
                           ({"answer_rule": "fuzzy"}, "answer_rule"), ({"limits": {"db_mb": 0}}, "limits.db_mb"),
                           ({"prompt_format": "xml"}, "prompt_format"), ({"names": "fancy"}, "names")]:
        with pytest.raises(ValueError, match=needle):
            gym.make(ID, **kwargs)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"description": "d", "label": [], "type": ["other"]}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: missing field 'table.table_info'"):
        gym.make(ID, source="agentbench", path=str(bad))


# ---------------------------------------------------------------- the agent cannot end its own episode as env_error

def modify_env(**kwargs):
    env = gym.make(ID, query_timeout_s=0.5, **kwargs)
    seed = next(s for s in range(100) if generate(s, ["update"]).kind == "modify")
    return env, {"seed": seed}


def test_a_killed_worker_restores_state_a_replay_could_not(tmp_path):
    """A failed multi-row INSERT that wrote half its rows and set last_insert_rowid, then a
    statement that kills the worker: the database comes back from a snapshot, exactly."""
    env = gym.make(ID, query_timeout_s=0.5, skills=["update"])
    env.reset(seed=1)
    t = env.unwrapped.task.table_name
    steps = ["CREATE TABLE k (id INTEGER PRIMARY KEY, v UNIQUE)",
             "INSERT INTO k (v) VALUES (1), (2), (2)",  # fails on the third row: the statement is undone
             "INSERT INTO k (v) SELECT last_insert_rowid() + 10",
             f"UPDATE {t} SET rowid = rowid + 1000 WHERE rowid = (SELECT max(rowid) FROM {t})",
             "SELECT length(printf('%.*c', 2000000000, 'x'))"]  # one VM step: the worker is killed
    for sql in steps:
        obs, reward, term, trunc, info = env.step(op(sql))
        assert not term, (sql, obs, info)
    assert "interrupted" in obs
    before = env.unwrapped.db.state()
    obs = env.step(op("SELECT v FROM k"))[0]
    assert obs == "[(12,)]", obs  # the failed INSERT left last_insert_rowid() at 2; a replay would give 10
    assert env.unwrapped.db.state() == before
    env.close()


@pytest.mark.serial  # a wall-clock budget
@pytest.mark.parametrize("sabotage", [
    ["DROP TABLE {t}", "CREATE VIEW {t} AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c"],
    ["ALTER TABLE {t} ADD COLUMN slow AS (length(printf('%.*c', 2000000000, 'x')))"],
    ["CREATE TEMP TABLE {t} (x)", "DROP TABLE main.{t}"],
])
def test_a_table_the_agent_makes_unreadable_is_its_failure(sabotage):
    env, reset = modify_env()
    env.reset(**reset)
    t = env.unwrapped.task.table_name
    for sql in sabotage:
        obs, reward, term, trunc, info = env.step(op(sql.format(t=t)))
        assert not term, (sql, obs)
    start = time.monotonic()
    obs, reward, term, trunc, info = env.step(answer([]))
    assert term and info["outcome"] == "incorrect", info
    assert time.monotonic() - start < 5
    assert play_oracle(env, **reset)["outcome"] == "correct"  # and the env works on
    env.close()


def test_oracle_builds_no_regex_from_task_data(tmp_path):
    """AgentBench's standard set has a column named Oblast\\Age: names are text, not templates."""
    task = Task("q", "t", [("Oblast\\Age", "TEXT"), ("x", "TEXT")], [], "other", "select")
    assert repair_sql("SELECT Oblast\\Age FROM table", task) == 'SELECT "Oblast\\Age" FROM "t"'
    line = {"description": "How many?", "label": ["1"], "table": {"table_name": "t\\1", "table_info": {
        "columns": [{"name": "Oblast\\Age", "type": "TEXT"}], "rows": [["a"]]}}, "type": ["other"],
        "sql": {"query": "SELECT COUNT(Oblast\\Age) FROM table"}}
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(line) + "\n")
    env = gym.make(ID, source="agentbench", path=str(path))
    assert play_oracle(env, options={"task_index": 0})["outcome"] == "correct"
    env.close()


@pytest.mark.serial  # a wall-clock budget
@pytest.mark.parametrize("env_id,kwargs", [(ID, {}), ("lorarl/OSInteraction-v0", {})])
def test_a_huge_reply_is_refused_fast_in_bounded_memory(env_id, kwargs):
    import resource

    if env_id != ID:
        from envs.os_interaction import sandbox
        if sandbox.probe():
            pytest.skip("no sandbox here")
    env = gym.make(env_id, **kwargs)
    env.reset(seed=0)
    reply = "Action: Answer\nFinal Answer: [" + "1, " * 3_500_000 + "1]"  # 10.5 MB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    obs, reward, term, trunc, info = env.step(reply)
    assert time.monotonic() - start < 2 and term and info["outcome"] == "invalid_action" and len(obs) < 200
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB
    env.close()


def test_works_with_descriptor_numbers_past_1023(high_descriptors):
    env = gym.make(ID)
    try:
        info = play_oracle(env, seed=3)
        assert info["outcome"] == "correct", info
    finally:
        env.close()


def test_no_constant_answer_wins_more_than_1_in_7_tasks_of_any_skill():
    """An agent that always answers the same (the most common answer of a skill, even knowing the
    table from the question) must not find a reward RL can climb: `count` once answered 2 in 31%
    of its tasks, and a tiny model learned to answer [2] to everything."""
    import re

    for skill in SKILLS:
        total = 0
        by_template: dict[str, Counter] = {}
        for seed in range(600):
            task = generate(seed, [skill])
            if task.kind != "select":
                break
            answer = tuple(sorted(map(str, task.label)))
            template = task.table_name + re.sub(r"\d+|'[^']*'|named \w+", "#", task.description)
            by_template.setdefault(template, Counter())[answer] += 1
            total += 1
        if total:
            wins = sum(c.most_common(1)[0][1] for c in by_template.values())
            assert wins / total <= 1 / 7, (skill, wins / total, [c.most_common(2) for c in by_template.values()])


def test_no_constant_answer_per_asked_column_wins_agentbench_shaped_questions():
    """The wide family's questions, grouped by what they ask (skill, table theme, asked column):
    the most common answer of each group must not win more than 1 in 7 of them."""
    import re

    groups: dict[tuple, Counter] = {}
    for seed in range(4000):
        task = generate(seed, WIDE_SKILLS)
        if task.kind == "select":
            asked = re.match(r"SELECT (`[^`]*`|COUNT\(\*\))", task.gold_sql).group(1)
            theme = task.add_description.split(",")[0] if task.task_type != "count_rows" else ""  # drawn, not found
            key = (task.task_type, theme, asked)
            groups.setdefault(key, Counter())[tuple(map(str, task.label))] += 1
    total = sum(sum(c.values()) for c in groups.values())
    wins = sum(c.most_common(1)[0][1] for c in groups.values() if sum(c.values()) >= 10)
    big = sum(sum(c.values()) for c in groups.values() if sum(c.values()) >= 10)
    assert total > 1800 and big > 800
    assert wins / big <= 1 / 7, sorted(((c.most_common(1)[0][1] / sum(c.values()), k) for k, c in groups.items()
                                        if sum(c.values()) >= 10), reverse=True)[:5]


def test_the_final_info_says_what_was_expected_and_only_at_the_end():
    env = gym.make(ID, skills=["count", "insert"])
    obs, info = env.reset(seed=1)
    assert "expected" not in info
    task = env.unwrapped.task
    obs, _, _, _, info = env.step(op("SELECT 1"))
    assert "expected" not in info  # mid-episode info never carries it
    obs, _, term, _, info = env.step(answer(["x"]))
    assert term and (info["expected"] == f"Final Answer: {task.label!r}" if task.kind == "select"
                     else info["expected"].endswith(task.gold_sql))
    env.close()

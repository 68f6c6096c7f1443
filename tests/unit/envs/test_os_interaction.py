"""OSInteraction: protocol, task sources and judging, outcomes, the oracle at 100%, the sandbox."""

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401
from envs.os_interaction import sandbox
from envs.os_interaction.generator import SKILLS
from envs.os_interaction.oracle import FINISH, NoSolution, Oracle, answer, bash
from envs.os_interaction.protocol import TRUNCATION_MARKER, clean_output, parse_reply, truncate

ID = "lorarl/OSInteraction-v0"
DEV = Path(__file__).resolve().parents[4] / "shared/data/agentbench/os_interaction/dev.json"
REASON = sandbox.probe()
needs_sandbox = pytest.mark.skipif(REASON is not None, reason=f"this machine cannot create the sandbox: {REASON}")


def play(env, agent, **reset):
    """Run one episode; ``agent(observation) -> reply``. Returns the last step and the transcript."""
    obs, info = env.reset(**reset)
    seen = [obs]
    while True:
        obs, reward, term, trunc, info = env.step(agent(obs))
        seen.append(obs)
        if term or trunc:
            return reward, term, trunc, info, seen


def scripted(*replies):
    it = iter(replies)
    return lambda _obs: next(it)


def play_oracle(env, **reset):
    obs, info = env.reset(**reset)
    oracle = Oracle(env.unwrapped.task)
    while True:
        obs, reward, term, trunc, info = env.step(oracle.reply(obs))
        if term or trunc:
            return info, obs


# ---------------------------------------------------------------- protocol (no sandbox needed)

def test_parse_reply_follows_agentbench():
    assert parse_reply("Think: x\n\nAct: bash\n\n```bash\nls /\n```") == ("bash", "ls /")
    two = "Act: bash\n```bash\ncd /tmp\n```\nand\n```bash\npwd\n```"
    assert parse_reply(two) == ("bash", "cd /tmp\n\npwd")
    assert parse_reply("Think: done\nAct: finish") == ("finish", None)
    assert parse_reply("Act: answer(f(x) = (1))") == ("answer", "f(x) = (1)")
    assert parse_reply("Act: bash\n```bash\nls\n```\nAct: answer(3)") == ("answer", "3")  # the last Act wins
    assert parse_reply("Act: finish\nAct: answer 3") == ("finish", None)  # malformed answer: an earlier Act
    assert parse_reply("Act: bash\nls /")[0] == "invalid"
    assert parse_reply("hello there")[0] == "invalid"
    assert parse_reply("Act: sleep")[0] == "invalid"


def test_truncation_and_ansi_stripping():
    assert truncate("x" * 800, 800) == "x" * 800
    long = truncate("y" * 801, 800)
    assert long == "y" * 780 + TRUNCATION_MARKER
    assert clean_output("\x1b[01;34mdir\x1b[0m\r\n\x1b]0;title\x07ok") == "dir\nok"
    assert clean_output("caf\u00e9 \U0001F600") == "caf\u00e9 \ufffd"


def test_refuses_without_a_sandbox_and_names_the_opt_in(monkeypatch):
    monkeypatch.setattr(sandbox, "SANDBOX_PYTHON", "/nonexistent/python3")
    sandbox.probe.cache_clear()
    try:
        with pytest.raises(sandbox.SandboxUnavailable, match="unsafe=True") as err:
            gym.make(ID)
        assert "/nonexistent/python3" in str(err.value)
    finally:
        sandbox.probe.cache_clear()


def lifelong_file(tmp_path, entries):
    path = tmp_path / "lifelong.json"
    path.write_text(json.dumps({str(i): e for i, e in enumerate(entries)}))
    return str(path)


def lifelong(instruction, init, evaluate, truth=None, skills=("echo",)):
    return {"instruction": instruction, "initialization_command_item": {"command_name": "bash", "script": init},
            "evaluation_info": {"evaluation_command_item": {"command_name": "bash", "script": evaluate},
                                "ground_truth_command_item": {"command_name": "bash", "script": truth or "true"}},
            "skill_list": list(skills)}


def test_unsafe_mode_runs_in_a_throwaway_home(tmp_path):
    """Opting in runs commands directly on this machine: relative paths only, in a temp home."""
    path = lifelong_file(tmp_path, [lifelong("Write hi into out.txt.", "echo start > seed.txt",
                                             "grep -qx hi out.txt", "echo hi > out.txt")])
    env = gym.make(ID, source="lifelong", path=path, unsafe=True)
    reward, *_, info, seen = play(env, scripted(bash("pwd; cat seed.txt"), bash("echo hi > out.txt"), FINISH))
    home = seen[1].split("\n\n", 1)[1].splitlines()[0]
    assert home.startswith("/") and "lorarl-unsafe-" in home and "start" in seen[1]
    assert info["outcome"] == "correct" and reward == 1.0
    env.close()
    assert not Path(home).exists()


def test_unsafe_mode_keeps_generated_tasks_out_of_the_hosts_root():
    with pytest.warns(UserWarning, match="add_user"):
        env = gym.make(ID, unsafe=True)
    assert "add_user" not in env.unwrapped.skills
    for seed in range(20):
        info, _ = play_oracle(env, seed=seed)
        task = env.unwrapped.task
        assert info["outcome"] == "correct", (seed, task.description)
        assert "/root" not in task.description + " ".join(code for _, code in task.init) + " ".join(task.solution)
        assert "lorarl-unsafe-" in task.description
    env.close()


# ---------------------------------------------------------------- env on the sandbox

@needs_sandbox
def test_check_env_and_deterministic_reset():
    env = gym.make(ID)
    check_env(env.unwrapped)
    assert env.reset(seed=7)[0] == env.reset(seed=7)[0]
    assert env.reset(seed=7)[0] != env.reset(seed=8)[0]
    obs = env.reset(seed=1)[0]
    assert "Act: bash" in obs and "Now, I will start a new problem in a new OS" in obs
    env.close()


@needs_sandbox
def test_oracle_solves_two_generated_tasks_of_every_skill():
    outcomes = Counter()
    for skill in sorted(SKILLS):
        env = gym.make(ID, skills=[skill])
        for seed in range(2):
            info, _ = play_oracle(env, seed=seed)
            assert info["task_type"] == skill
            outcomes[info["outcome"]] += 1
        env.close()
    assert outcomes == {"correct": 2 * len(SKILLS)}


@pytest.mark.slow
def test_oracle_solves_200_generated_tasks_and_every_skill_occurs():
    env = gym.make(ID)
    outcomes, skills = Counter(), Counter()
    for seed in range(200):
        info, _ = play_oracle(env, seed=seed)
        outcomes[info["outcome"]] += 1
        skills[info["task_type"]] += 1
    env.close()
    assert outcomes == {"correct": 200}
    assert set(skills) == set(SKILLS)


# Dev-split tasks the oracle cannot solve, and why. 0, 1, 2, 4: a match answer and nothing to run
# (echoing the answer would prove nothing). 8: its check, size-match.py, does int() on the number
# before the unit and du -h prints "4.0K" (one decimal below 10 units; 8.0K in AgentBench's Docker
# image), so it crashes whatever the answer. 24: its example ("chmod 777 test && ~/test") assumes a
# shell in /home/jack as jack; AgentBench never runs examples of match tasks, so it went unnoticed.
DEV_UNSOLVED = {0: "no solution", 1: "no solution", 2: "no solution", 4: "no solution", 8: "check crashes",
                24: "example assumes another user", 3: "refused", 5: "refused"}  # 3, 5: calc's check pastes output into python3 -c


@needs_sandbox
@pytest.mark.skipif(not DEV.exists(), reason=f"AgentBench dev split not found at {DEV} (../shared is beside the repo only in the team workspace)")
def test_oracle_on_the_agentbench_dev_split():
    env = gym.make(ID, source="agentbench", path=str(DEV))
    assert env.unwrapped.num_tasks == 26
    assert sorted(env.unwrapped.refused) == [3, 5] and all("python3 -c" in r for r in env.unwrapped.refused.values())
    outcomes = {}
    for i in range(26):
        env.reset(options={"task_index": i})
        try:
            Oracle(env.unwrapped.task)
        except NoSolution:
            outcomes[i] = "no solution"
            continue
        info = play_oracle(env, options={"task_index": i})[0]
        outcomes[i] = "refused" if "refused" in info.get("error", "") else info["outcome"]
    env.close()
    assert {i: o for i, o in outcomes.items() if o != "correct"} == {
        i: why if why in ("no solution", "refused") else "incorrect" for i, why in DEV_UNSOLVED.items()}  # 18 of 26
    size_match = (DEV.parent / "scripts/dev/check/size-match.py").read_text()
    crash = subprocess.run([sys.executable, "-c", size_match, "4.0K", "4.0K\n"], capture_output=True, text=True)
    assert crash.returncode == 1 and "ValueError" in crash.stderr


@pytest.mark.serial  # task 3's daemon may write before the do-nothing probe checks on a loaded machine (seen beside another test process)
@needs_sandbox
def test_agentbench_format_features(tmp_path):
    """Script objects (string, file, code, python), init lists, a background start program,
    match by string / strip / regex, and check chains that pass earlier outputs on."""
    (tmp_path / "scripts/tasks/check").mkdir(parents=True)
    (tmp_path / "scripts/tasks/check/equal.py").write_text(
        "import sys\nsys.exit(0 if sys.argv[1].strip() == sys.argv[2].strip() else 1)\n")
    items = [
        {"description": "What does /root/a hold?", "create": {"init": "echo 41 > /root/a"},
         "evaluation": {"match": "41"}, "example": "cat /root/a", "labels": ["file"]},
        {"description": "regex", "create": {"init": [{"code": "mkdir -p /root/d"},
                                                     {"language": "python", "code": "open('/root/d/x','w').write('7')"}]},
         "evaluation": {"match": {"regex": "^[0-9]+$"}, "example": "cat /root/d/x"}, "labels": ["file"]},
        {"description": "How many lines?", "create": {"init": {"code": "seq 5 > /root/n"}},
         "evaluation": {"check": [None, {"language": "python", "file": "check/equal.py"}], "example": "wc -l < /root/n"},
         "labels": ["count"]},
        {"description": "Which file is the daemon writing?", "start": "python3 -c 'import time\nwhile True:\n\topen(\"/root/beat\", \"a\").write(\"x\")\n\ttime.sleep(0.1)' &",
         "evaluation": {"check": ["[ -s /root/beat ]"], "example": "sleep 0.5"}, "labels": ["process"]},
    ]
    if shutil.which("gcc"):  # AgentBench also runs check scripts written in C and C++
        c_check = {"language": "c", "code": '#include <string.h>\nint main(int c, char **v) { return strcmp(v[1], "ok") != 0; }'}
        items.append({"description": "Say ok.", "evaluation": {"check": [None, c_check], "example": "echo ok"}, "labels": ["c"]})
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(items))
    env = gym.make(ID, source="agentbench", path=str(path))
    for i in range(len(items)):
        info, obs = play_oracle(env, options={"task_index": i})
        assert info["outcome"] == "correct", (i, obs)
    wrong = {0: answer(" 42 "), 1: answer("seven"), 2: answer("6"), 4: answer("no")}
    for i, reply in wrong.items():
        if i < len(items):
            assert play(env, scripted(reply), options={"task_index": i})[3]["outcome"] == "incorrect"
    assert play(env, scripted(answer(" 41 ")), options={"task_index": 0})[3]["outcome"] == "correct"  # stripped
    env.close()


@needs_sandbox
def test_outcome_paths(tmp_path):
    path = lifelong_file(tmp_path, [
        lifelong("Create /root/done.", "true", "[ -e /root/done ]", "touch /root/done"),
        lifelong("Broken task.", "exit 3", "true"),
    ])
    env = gym.make(ID, source="lifelong", path=path, max_rounds=2)
    outcome = lambda *replies, i=0: play(env, scripted(*replies), options={"task_index": i})
    r, term, trunc, info, _ = outcome(bash("touch /root/done"), FINISH)
    assert (r, term, trunc, info["outcome"], info["rounds"]) == (1.0, True, False, "correct", 2)
    assert info["task_type"] == "echo" and info["source"] == "lifelong"
    assert outcome(FINISH)[3]["outcome"] == "incorrect"
    assert outcome("I refuse.")[3]["outcome"] == "invalid_action"
    r, term, trunc, info, _ = outcome(bash("echo 1"), bash("echo 2"))
    assert (term, trunc, info["outcome"]) == (False, True, "task_limit_reached")
    r, term, trunc, info, seen = outcome(bash("echo 1"), i=1)
    assert info["outcome"] == "env_error" and "exited 3" in info["error"] and term
    env.close()


@needs_sandbox
def test_persistent_shell_and_observations():
    env = gym.make(ID, command_timeout_s=1.5)
    obs = lambda cmd: env.step(bash(cmd))[0]
    env.reset(seed=0)
    obs("cd /tmp && X=5 && mkdir -p keep")
    assert obs("pwd; echo $X") == "The output of the OS:\n\n/tmp\n5\n"
    assert obs("true") == "The output of the OS is empty."
    assert obs("printf '\\033[31mred\\033[0m\\n'") == "The output of the OS:\n\nred\n"
    assert obs("seq 1000").endswith(TRUNCATION_MARKER)
    assert obs("echo err >&2") == "The output of the OS:\n\nerr\n"
    timed_out = obs("echo before; sleep 30")
    assert "before" in timed_out and "did not finish within 1.5 seconds" in timed_out
    assert obs("pwd; echo ${X:-unset}; ls -d /tmp/keep") == "The output of the OS:\n\n/root\nunset\n/tmp/keep\n"
    env.close()


def _digest(paths):
    import hashlib

    h = hashlib.sha256()
    for root in paths:
        for p in sorted(Path(root).rglob("*")) if Path(root).is_dir() else [Path(root)]:
            h.update(str(p).encode())
            if p.is_file():
                h.update(p.read_bytes())
                h.update(str(p.stat().st_mode).encode())
    return h.hexdigest()


@needs_sandbox
def test_hostile_battery_leaves_the_host_unchanged(tmp_path):
    repo = Path(__file__).resolve().parents[3]
    canary = Path.home() / f".lorarl-canary-{tmp_path.name}"
    canary.mkdir()
    (canary / "secret.txt").write_text("host secret\n")
    var_tmp = Path("/var/tmp") / canary.name
    var_tmp.write_text("host temp file\n")
    tracked = [repo / f for f in subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True).stdout.split()]
    watched = [canary, var_tmp, *(p for p in tracked if p.is_file())]
    before = _digest(watched)
    marker = "987654"
    attacks = [  # (command, text its output must show); after each, "echo alive" must work
        ("rm -rf --no-preserve-root /etc /home /root /tmp /var 2>/dev/null; ls /etc | wc -l", "0"),
        (f"cat {canary}/secret.txt; ls {repo}", "No such file or directory"),
        (f"cat {var_tmp} || echo hidden", "hidden"),
        (f"mkdir -p {canary} {repo}; echo pwned > {canary}/secret.txt; echo pwned > {repo}/train.py; cat {repo}/train.py", "pwned"),
        (f"rm -rf {Path.home()} /work /home /root; echo gone", "gone"),
        ("yes", "was killed"),
        ("sleep 1000", "did not finish within 2 seconds"),
        (":(){ :|:& };:", None),
        ("python3 -c \"import socket; socket.create_connection(('1.1.1.1', 80), timeout=3)\"", "Network is unreachable"),
        ("getent hosts pypi.org || echo no-dns", "no-dns"),
        ("kill -9 1; kill -9 $PPID; kill -9 -1; echo survived", None),
        ("python3 -c 'x = bytearray(16 * 1024**3)'", "MemoryError"),
        ("head -c 1G /dev/zero > /root/big; ls -la /root/big", "File too large"),
        (f"setsid sleep {marker} >/dev/null 2>&1 & echo started", "started"),
    ]
    # Untruncated observations: after the fork bomb its processes' "fork: retry" errors share the
    # shell's output, and "alive" can land past the usual 800 characters.
    env = gym.make(ID, command_timeout_s=2.0, max_rounds=3, max_observation_chars=10**7)
    try:
        for cmd, expected in attacks:
            r, term, trunc, info, seen = play(env, scripted(bash(cmd), bash("echo alive"), FINISH), seed=0)
            assert term and info["rounds"] <= 3 and info["outcome"] in ("correct", "incorrect"), (cmd, info)
            if expected:
                assert expected in seen[1], (cmd, seen[1])
            assert "alive" in seen[2], (cmd, seen[2])
            assert _digest(watched) == before, f"host changed after {cmd!r}"
        assert marker not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        # rm -rf / inside: the episode goes on (the running shell outlives its binary, or a new one
        # cannot start and the agent is told), and is judged
        r, term, trunc, info, seen = play(env, scripted(bash("rm -rf --no-preserve-root / 2>/dev/null"),
                                                        bash("echo alive"), FINISH), seed=0)
        assert term and info["outcome"] == "incorrect" and ("alive" in seen[2] or "/bin/bash" in seen[2])
        assert _digest(watched) == before
        info, _ = play_oracle(env, seed=3)  # and the next episode works
        assert info["outcome"] == "correct"
    finally:
        env.close()
        import shutil

        shutil.rmtree(canary)
        var_tmp.unlink()


def test_a_null_check_without_an_example_is_refused_when_loading(tmp_path):
    from envs.os_interaction.tasks import load_agentbench

    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"description": "count", "evaluation": {"check": [None, "true"]}}]))
    with pytest.raises(ValueError, match="null check entry runs the task's example"):
        load_agentbench(path)


@needs_sandbox
def test_works_with_descriptor_numbers_past_1023(high_descriptors):
    env = gym.make("lorarl/OSInteraction-v0")
    try:
        info, _ = play_oracle(env, seed=3)
        assert info["outcome"] == "correct", info
    finally:
        env.close()


def test_no_constant_answer_wins_more_than_1_in_7_generated_tasks_of_any_skill():
    """The best constant answer of each question skill (what RL would find if guessing paid)."""
    from collections import Counter

    from envs.os_interaction.families import generate
    from envs.os_interaction.generator import SKILLS

    for skill in sorted(SKILLS):
        answers = Counter(t.match["answer"] for t in (generate(seed, (skill,)) for seed in range(600)) if t.match)
        if answers:
            assert answers.most_common(1)[0][1] / 600 <= 1 / 7, (skill, answers.most_common(3))


@needs_sandbox
def test_the_final_info_says_what_was_expected():
    env = gym.make("lorarl/OSInteraction-v0", skills=["count_lines", "make_dirs"])
    try:
        seen = set()
        for seed in range(6):
            env.reset(seed=seed)
            task = env.unwrapped.task
            *_, info = env.step("Act: answer(0)")
            if task.match:
                assert info["expected"] == f"answer {task.match['answer']!r}"
            else:
                assert info["expected"].startswith("checks: bash: ")
            seen.add(bool(task.match))
        assert seen == {True, False}
    finally:
        env.close()

"""OSInteraction reward integrity: agents that do no real work, and agents that tamper with the
judge (forged replies on every fd they can reach, interpreters replaced on PATH and on the overlay,
loader and Python start-up files, the executor killed or stopped) never turn a wrong answer into
"correct", and nothing they do raises out of env.step. Also the AgentBench fidelity items the
judge owns: init failures, the start program in the agent's shell, stdout-only check chains."""

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest

import envs  # noqa: F401
from envs.os_interaction import sandbox
from envs.os_interaction.oracle import FINISH, NoSolution, Oracle, answer, bash
from envs.os_interaction.generator import SKILLS, USER_SKILLS
from envs.os_interaction.tasks import load_agentbench

ID = "lorarl/OSInteraction-v0"
DEV = Path(__file__).resolve().parents[4] / "shared/data/agentbench/os_interaction/dev.json"
REASON = sandbox.probe()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"this machine cannot create the sandbox: {REASON}")

# A check that passes only if the answer is 41 (AgentBench's integer-match.py, a python check), a
# bash check on the machine's state, and a null check that compares with the example's output.
CHECK_TASKS = [
    {"description": "What is in /root/n?", "create": {"init": "echo 41 > /root/n"}, "labels": ["python-check"],
     "evaluation": {"check": [None, {"language": "python", "code":
                    "from sys import argv\nif int(argv[1]) == int(argv[2]): exit(0)\nexit(1)"}],
                    "example": "cat /root/n"}},
    {"description": "Create the directory /root/made.", "labels": ["bash-check"],
     "evaluation": {"check": ["[ -d /root/made ] && grep -q root /etc/passwd && stat -c %U /root/made | grep -qx root"],
                    "example": "mkdir /root/made"}},
    {"description": "How many lines does /root/f have?", "create": {"init": "seq 7 > /root/f"}, "labels": ["string-check"],
     "evaluation": {"check": [None, {"language": "bash", "code": '[ "$(echo $1 | tr -d " ")" = "$(echo $2 | tr -d " ")" ]'}],
                    "example": "wc -l < /root/f"}},
]
FAKE = "#!/bin/sh\necho True\necho 41\nexit 0\n"
# Each leaves the machine tampered with; the episode then gives a wrong answer (or finishes
# without doing the work). None may end "correct", and every one must end with an outcome.
TAMPER = {
    "forge on every reachable fd": (
        "for f in /proc/[0-9]*/fd/*; do for id in ready x; do printf '%s 16\\n{\"exit_code\": 0}' $id > $f; done;"
        " printf '{\"output\": \"41\", \"exit_code\": 0}\\n' > $f; done 2>/dev/null; echo done"),
    "forging daemon": ("(while true; do for f in /proc/[0-9]*/fd/*; do echo '{\"exit_code\": 0}' > $f; done; done)"
                       " >/dev/null 2>&1 & echo started"),
    "fake interpreters first on PATH": (
        "mkdir -p /usr/local/bin /usr/local/sbin && for p in python3 python bash sh grep stat id tr test '[' cat;"
        f" do printf '{FAKE}' > /usr/local/bin/$p; chmod +x /usr/local/bin/$p; cp /usr/local/bin/$p /usr/local/sbin/$p;"
        " done; echo done"),
    "interpreters replaced on the overlay": (
        f"for p in /usr/bin/python3* /usr/bin/bash /usr/bin/dash /usr/bin/grep /usr/bin/stat /usr/bin/tr;"
        f" do printf '{FAKE}' > $p; chmod +x $p; done; echo done"),
    "loader and python start-up files": (
        "echo /root/evil.so > /etc/ld.so.preload; printf 'garbage' > /etc/ld.so.cache;"
        " mkdir -p ~/.local/lib/python3.11/site-packages /usr/local/lib/python3.11/dist-packages;"
        " echo 'import os; os._exit(0)' > ~/.local/lib/python3.11/site-packages/evil.pth;"
        " echo 'import os; os._exit(0)' > /usr/local/lib/python3.11/dist-packages/evil.pth;"
        " echo 'import os; os._exit(0)' > /usr/local/lib/python3.11/dist-packages/sitecustomize.py;"
        " for m in sys os json re; do echo 'import os; os._exit(0)' > /root/$m.py; cp /root/$m.py /$m.py; done;"
        " mkdir -p /etc/python3.11 && echo 'import os; os._exit(0)' > /etc/python3.11/sitecustomize.py; echo done"),
    "kill and stop everything": "kill -9 1; kill -STOP 1; kill -STOP -1; kill -9 -1; echo survived",
    "alternatives and nsswitch": ("ln -sf /usr/local/bin/fake /etc/alternatives/awk; printf '" + FAKE +
                                  "' > /usr/local/bin/fake; chmod +x /usr/local/bin/fake;"
                                  " sed -i 's/^passwd:.*/passwd: evil/' /etc/nsswitch.conf; echo done"),
}


def task_file(tmp_path):
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(CHECK_TASKS))
    return str(path)


def play(env, replies, **reset):
    env.reset(**reset)
    info, seen = {}, []
    for reply in replies:
        obs, reward, term, trunc, info = env.step(reply)
        seen.append(obs)
        if term or trunc:
            return info, seen
    return info, seen


def test_no_tampering_turns_a_wrong_answer_into_correct(tmp_path):
    env = gym.make(ID, source="agentbench", path=task_file(tmp_path), command_timeout_s=3.0, judge_timeout_s=20.0)
    try:
        for i in range(len(CHECK_TASKS)):
            info, _ = play(env, [bash(CHECK_TASKS[i]["evaluation"]["example"]), FINISH if i == 1 else answer(
                "41" if i == 0 else "7")], options={"task_index": i})
            assert info["outcome"] == "correct", (i, info)  # honest work passes: the judge is not broken
            for name, attack in TAMPER.items():
                wrong = FINISH if i == 1 else answer("40")
                info, seen = play(env, [bash(attack), wrong], options={"task_index": i})
                assert info["outcome"] == "incorrect", (i, name, info, seen)
                assert "judge_error" not in info, (i, name, info)
        # after tampering the honest answer still passes: the judge never runs the agent's programs
        for name, attack in TAMPER.items():
            info, seen = play(env, [bash(attack), answer("41")], options={"task_index": 0})
            assert info["outcome"] == "correct", (name, info, seen)
    finally:
        env.close()


@pytest.mark.parametrize("skill", sorted(SKILLS))
def test_lazy_agents_never_win_generated_tasks(skill):
    if skill in USER_SKILLS and os.geteuid() != 0:
        pytest.skip("user skills need root on the host")
    env = gym.make(ID, skills=[skill])
    lazy = {"finish at once": [FINISH], "empty answer": [answer("")], "wrong answer": [answer("__wrong__")],
            "zero": [answer("0")], "looks, then finishes": [bash("ls -la ~"), FINISH], "no action": ["I am done."]}
    try:
        for seed in range(1):
            for name, replies in lazy.items():
                info, _ = play(env, replies, seed=seed)
                assert info["outcome"] in ("incorrect", "invalid_action"), (seed, name, info)
    finally:
        env.close()


@pytest.mark.skipif(not DEV.exists(), reason=f"AgentBench dev split not found at {DEV}")
@pytest.mark.parametrize("stride", [pytest.param(3, id="one-agent-per-task"), pytest.param(1, id="all", marks=pytest.mark.slow)])
def test_lazy_and_tampering_agents_never_win_the_dev_split(stride):
    """Every agent on every task (stride 1) or, in the quick run, one per task in turn."""
    env = gym.make(ID, source="agentbench", path=str(DEV), command_timeout_s=3.0)
    agents = ([FINISH], [answer("-1")], [bash(TAMPER["fake interpreters first on PATH"] + "; " +
                                              TAMPER["interpreters replaced on the overlay"]), answer("-1")])
    try:
        for i in range(26):
            env.reset(options={"task_index": i})
            try:
                Oracle(env.unwrapped.task)
            except NoSolution:
                continue  # a bare match answer: guessing it is the only way, for any agent
            for replies in agents[i % stride::stride]:
                info, _ = play(env, replies, options={"task_index": i})
                assert info["outcome"] != "correct", (i, replies, info)
    finally:
        env.close()


def test_garbage_on_the_channel_is_env_error_with_bounded_memory(tmp_path):
    import resource

    env = gym.make(ID, source="agentbench", path=task_file(tmp_path))
    env.reset(options={"task_index": 0})
    box = env.unwrapped.box
    box.close()
    # A fake executor that floods 300 MB on one line: the client reads at most one frame header.
    flood = "import sys\nsys.stdout.buffer.write(b'x' * 300_000_000 + b'\\n')\nsys.stdout.flush()\nsys.stdin.read()"
    box.proc = subprocess.Popen([sys.executable, "-c", flood], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    obs, reward, term, trunc, info = env.step(bash("echo hi"))
    assert info["outcome"] == "env_error" and "protocol error" in info["error"] and term
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB: far from 300 MB
    # a reply with another request's id is refused too
    env.reset(options={"task_index": 0})
    box = env.unwrapped.box
    box.proc.stdin.close()
    box.proc.wait()
    box.proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdout.write('ready 2\\n{}'); sys.stdout.flush();"
                                 "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    assert env.step(bash("echo hi"))[4]["outcome"] == "env_error"
    env.close()


def test_failing_init_is_env_error_and_start_runs_in_the_agents_shell(tmp_path):
    items = [
        {"description": "broken", "create": {"init": "exit 3"}, "evaluation": {"match": "x"}, "example": "echo x"},
        {"description": "Which file is written?", "labels": ["background"],
         "start": "export FROM_START=yes; python3 -c 'import time\nwhile True:\n\topen(\"/root/beat\", \"a\").write(\"x\")\n\ttime.sleep(0.05)' &",
         "evaluation": {"match": "beat"}, "example": "echo beat"},
    ]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(items))
    env = gym.make(ID, source="agentbench", path=str(path), command_timeout_s=1.0)
    info, _ = play(env, [answer("x")], options={"task_index": 0})
    assert info["outcome"] == "env_error" and "exited 3" in info["error"]
    env.reset(options={"task_index": 1})
    step = lambda cmd: env.step(bash(cmd))[0]
    assert "yes" in step("echo $FROM_START; ps -o args= --ppid $$")  # the start program is a job of this shell
    assert "did not finish" in step("sleep 100")  # the timeout kills the shell and its command...
    size = int(step("stat -c %s /root/beat").split()[-1])
    assert int(step("sleep 0.3; stat -c %s /root/beat").split()[-1]) > size  # ...not the task's program
    env.close()


def test_check_chain_passes_stdout_only_and_judge_timeout(tmp_path):
    items = [
        {"description": "d", "evaluation": {"check": [None, {"language": "python", "code":
         "import sys\nsys.exit(0 if sys.argv[2] == '5\\n' and sys.argv[1] == '5' else 1)"}], "example": "echo noise >&2; echo 5"}},
        {"description": "slow", "evaluation": {"check": ["sleep 5"], "example": "true"}},
        # the judge's limit is CPU time: a check that waits longer than it (a busy machine) passes...
        {"description": "waits", "evaluation": {"check": ["sleep 1.5 && [ -f /root/done ]"], "example": "true"}},
        # ...and one that computes longer than it fails
        {"description": "spins", "evaluation": {"check": ["while :; do :; done"], "example": "true"}},
    ]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(items))
    env = gym.make(ID, source="agentbench", path=str(path), judge_timeout_s=1.0)
    assert play(env, [answer("5")], options={"task_index": 0})[0]["outcome"] == "correct"
    assert play(env, [FINISH], options={"task_index": 1})[0]["outcome"] == "incorrect"
    assert play(env, [bash("touch /root/done"), FINISH], options={"task_index": 2})[0]["outcome"] == "correct"
    assert play(env, [FINISH], options={"task_index": 3})[0]["outcome"] == "incorrect"
    env.close()


def test_open_file_limit_is_raised_for_stock_init_scripts():
    env = gym.make(ID)
    env.reset(seed=0)
    n = int(env.step(bash("ulimit -n"))[0].split()[-1])
    assert n >= min(65536, __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)[1])
    env.close()


def test_agentbench_layouts_directories_and_several_files(tmp_path):
    """data/N/*.json -> scripts/N/, data/dev.json -> scripts/dev/, a directory, a glob, a list."""
    item = {"description": "q", "evaluation": {"check": {"file": "check/ok.sh"}, "example": "true"}}
    for scripts in (tmp_path / "os/scripts/1/check", tmp_path / "os/scripts/dev/check"):
        scripts.mkdir(parents=True)
        (scripts / "ok.sh").write_text("exit 0")
    (tmp_path / "os/data/1").mkdir(parents=True)
    for name in ("a.json", "b.json"):
        (tmp_path / "os/data/1" / name).write_text(json.dumps([item, item]))
    (tmp_path / "os/data/dev.json").write_text(json.dumps([item]))
    assert len(load_agentbench(tmp_path / "os/data/1")) == 4
    assert len(load_agentbench(str(tmp_path / "os/data/1/*.json"))) == 4
    assert len(load_agentbench([tmp_path / "os/data/1/a.json", tmp_path / "os/data/dev.json"])) == 3
    assert load_agentbench(tmp_path / "os/data/dev.json")[0].check == [("bash", "exit 0")]
    with pytest.raises(ValueError, match="not found in"):
        load_agentbench(tmp_path / "os/data/1", script_dir=tmp_path / "nowhere")


@pytest.mark.skipif(os.geteuid() != 0, reason="the canary lives in /usr/local, which only root may write")
def test_masked_host_paths_stay_hidden_in_every_view(tmp_path):
    """The overlays of the agent's and the judge's views must re-apply the launcher's masks."""
    canary = Path("/var/tmp") / f"lorarl-canary-{tmp_path.name}"
    canary.write_text("host temp file\n")
    items = [{"description": "d", "evaluation": {"check": [f"[ -e /root/done ] && ! cat {canary}"], "example": "touch /root/done"}},
             {"description": "q", "evaluation": {"check": [None, '[ "$1" = "$(echo $2)" ]'],
                                                 "example": f"cat {canary} 2>/dev/null | wc -l"}}]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(items))
    env = gym.make(ID, source="agentbench", path=str(path))
    try:  # the agent's view, the judge's view of its effect, and the pristine view of the expected answer
        info, seen = play(env, [bash(f"cat {canary} || echo hidden; touch /root/done"), FINISH], options={"task_index": 0})
        assert "hidden" in seen[0] and info["outcome"] == "correct"
        assert play(env, [answer("0")], options={"task_index": 1})[0]["outcome"] == "correct"
    finally:
        env.close()
        canary.unlink()


# Output an agent can produce to break the channel between executor and client (round 3): every
# byte value, sizes up to 10x the output limit, on stdout and stderr, from background writers that
# outlive the command, and trees too deep or names too long for the judge to copy or walk.
FLOODS = {
    "a megabyte of NULs": "head -c 1000000 /dev/zero",
    "10x the limit of NULs on stderr": "head -c 10500000 /dev/zero >&2",
    "control bytes": "python3 -c \"import sys; sys.stdout.buffer.write(bytes(range(32)) * 40000)\"",
    "invalid UTF-8": "python3 -c \"import sys; sys.stdout.buffer.write(b'\\xff\\xfe\\xc3' * 400000)\"",
    "escape characters": "python3 -c \"import sys; sys.stdout.buffer.write(b'\\x1b' * 1000000)\"",
    "random bytes, 3 MB": "head -c 3000000 /dev/urandom",
    "a writer that outlives the command": "(for i in $(seq 200); do head -c 100000 /dev/zero; done &) ; echo started",
    "a deep tree under /etc": "d=/etc/deep; for i in $(seq 1500); do d=$d/d; done; mkdir -p $d 2>/dev/null;"
                              " python3 -c \"import os; p='/etc/deep'\nfor i in range(1500): p += '/d'; os.makedirs(p, exist_ok=True)\";"
                              " echo made",
    "long names": "python3 -c \"import os; os.chdir('/root')\nfor i in range(40): os.mkdir('n' * 250); os.chdir('n' * 250)\"; echo made",
}


@pytest.mark.serial  # a background writer's bytes reach the next command on a loaded machine (seen beside another test process)
@pytest.mark.parametrize("name", sorted(FLOODS))
def test_nothing_the_agent_prints_or_leaves_makes_env_error(tmp_path, name):
    """The agent's own output and files end its episode as its own outcome, never env_error: the
    reply frame is bounded whatever the bytes, a cut says so, and the judge copes with trees it
    cannot copy (the check fails)."""
    env = gym.make(ID, source="agentbench", path=task_file(tmp_path), command_timeout_s=20.0)
    try:
        for i in (1, 0):  # a check of the agent's effect (copies /etc), then an answer task
            info, seen = play(env, [bash(FLOODS[name]), bash("echo next"), answer("0") if i == 0 else FINISH],
                              options={"task_index": i})
            assert info["outcome"] in ("incorrect", "correct"), (name, i, info, [s[:200] for s in seen])
            assert info["outcome"] != "correct" or i == 1  # creating /root/made is task 1's work: not done here
            assert len(seen[0]) <= 2000 and "next" in seen[1], (name, seen[0][:300])
    finally:
        env.close()

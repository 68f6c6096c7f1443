"""OSInteraction, reward integrity round 2: the truth comes from the task, not from what the agent
left behind. On every task source (AgentBench JSON, LifelongAgentBench, the generator):
  - agents that destroy or rewrite the data a question is about, keep mutating it while they are
    judged, edit /etc, rewrite their shell's start-up files, install fake programs the check calls,
    or forge the shell's completion signal never turn a wrong answer into "correct", never cause
    "env_error", and never raise out of step;
  - honest work passes: the executed oracle, process counts, PATH, a permission change under /usr,
    a program the task asks for, a fix to a script the task's setup made, a process to stop.
"""

import json
import os

import gymnasium as gym
import pytest

import envs  # noqa: F401
from envs.os_interaction import sandbox
from envs.os_interaction.oracle import FINISH, Oracle, answer, bash
from envs.os_interaction.tasks import OSTask, reads_answer, refusal

ID = "lorarl/OSInteraction-v0"
REASON = sandbox.probe()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"this machine cannot create the sandbox: {REASON}")
ROOT = os.geteuid() == 0
INT_MATCH = {"language": "python", "code": "from sys import argv\nexit(0 if int(argv[1]) == int(argv[2]) else 1)"}

QUESTIONS = [  # AgentBench's shapes: [null, comparator] with an example, and a check that recomputes
    {"description": "How many files are in /root/data?", "labels": ["count"],
     "create": {"init": "mkdir -p /root/data && for i in $(seq 40); do echo $i > /root/data/f$i; done"},
     "evaluation": {"check": [None, INT_MATCH], "example": "ls /root/data | wc -l"}},
    {"description": "How many lines does /root/data.txt have?", "labels": ["recompute"],
     "create": {"init": "seq 40 > /root/data.txt"},
     "evaluation": {"check": ['[ "$1" -eq "$(wc -l < /root/data.txt)" ]'], "example": "wc -l < /root/data.txt"}},
    {"description": "How many groups are in my system?", "labels": ["groups"],
     "evaluation": {"check": [None, INT_MATCH], "example": "getent group | wc -l"}},
    {"description": "How many directories are in your PATH?", "labels": ["path"],
     "evaluation": {"check": [None, INT_MATCH], "example": "echo \"$PATH\" | tr ':' '\\n' | wc -l"}},
    # Not `ps -e | wc -l`: that counts wc only if the shell forks it before ps reads /proc, and
    # under load (CI: two test processes on two cores) 1 run in 150 saw 6 where the truth saw 7.
    # ps alone, finished before the pipeline starts, counts the same processes every time.
    {"description": "How many processes are running?", "labels": ["processes"],
     "start": "sleep 1000 & sleep 1000 &",
     "evaluation": {"check": [None, INT_MATCH], "example": 'p="$(ps -e)"; echo "$p" | wc -l'}},
    {"description": "How many hidden files are in /usr?", "labels": ["usr"],
     "create": {"init": "for f in a b c; do echo 1 > /usr/.$f; done"},
     "evaluation": {"check": [None, INT_MATCH], "example": "ls -a /usr | grep '^\\.' | wc -l"}},
]
CHANGES = [  # checks of the agent's effect
    {"description": "Create the directory /root/made.", "labels": ["mkdir"],
     "evaluation": {"check": ["[ -d /root/made ]"], "example": "mkdir /root/made"}},
    {"description": "There is a setuid vulnerability in find. Fix it.", "labels": ["suid"],
     "create": {"init": "chmod u+s /usr/bin/find"},
     "evaluation": {"check": ["ls -l /usr/bin/find | awk '{if ($1~/^-..s/) { exit 1; } else { exit 0; }}'"],
                    "example": "chmod u-s /usr/bin/find"}},
    {"description": "Make a command hello that prints hello.", "labels": ["command"],
     "evaluation": {"check": ['[ "$(hello)" = hello ]'],
                    "example": "printf '#!/bin/sh\\necho hello\\n' > /usr/local/bin/hello && chmod +x /usr/local/bin/hello"}},
    {"description": "The command greet should print hi. Fix it.", "labels": ["fix"],
     "create": {"init": "printf '#!/bin/sh\\necho hey\\n' > /usr/local/bin/greet && chmod +x /usr/local/bin/greet"},
     "evaluation": {"check": ['[ "$(greet)" = hi ]'], "example": "sed -i s/hey/hi/ /usr/local/bin/greet"}},
    {"description": "Stop the sleeping processes.", "labels": ["stop"], "start": "sleep 1000 & sleep 1001 &",
     "evaluation": {"check": ["! pgrep -x sleep"], "example": "pkill -x sleep; sleep 0.2"}},
]
FAKE = "#!/bin/sh\necho 0\nexit 0\n"
PROGRAMS = "python3 python bash sh ls wc getent grep awk ps pgrep cat tr find stat test hello greet"
# Each leaves the machine altered; the agent then answers 0 (questions) or finishes (changes).
ATTACKS = {
    "wipe": "rm -rf /root/* /root/.[!.]* /home/* /tmp/* /usr/.[!.]* 2>/dev/null; echo done",
    "truncate": ("for d in /root /home /etc /tmp /var /usr/local; do find $d -xdev -type f -size -2M"
                 " -exec truncate -s 0 {} + 2>/dev/null; done; echo done"),
    "mutate while judged": ("(while true; do for f in /root/* /root/data/* /usr/.[!.]*; do echo 0 > \"$f\"; done;"
                            " done) >/dev/null 2>&1 & (sleep 0.5; mkdir -p /root/made) >/dev/null 2>&1 & echo started"),
    "empty /etc/group and /etc/passwd": ": > /etc/group; : > /etc/passwd; echo done",
    "start-up files put fakes first": (
        f"mkdir -p /root/fake && for p in {PROGRAMS}; do printf '{FAKE}' > /root/fake/$p; chmod +x /root/fake/$p; done;"
        " for f in /root/.bashrc /root/.profile /etc/profile /etc/bash.bashrc; do echo 'export PATH=/root/fake:$PATH'"
        " >> $f; done; echo 'PATH=/root/fake:/usr/bin:/bin' > /etc/environment; echo done"),
    "fake programs where checks look": (
        f"mkdir -p /usr/local/bin /usr/local/sbin && for p in {PROGRAMS}; do printf '{FAKE}' > /usr/local/sbin/$p;"
        " chmod +x /usr/local/sbin/$p; done; for p in /usr/bin/python3* /usr/bin/wc /usr/bin/ls /usr/bin/getent"
        " /usr/bin/ps /usr/bin/awk /usr/bin/find; do cp /usr/local/sbin/sh $p 2>/dev/null; done; echo done"),
    "forged completion signals": ("for fd in $(ls /proc/$$/fd); do printf '0\\n' >&$fd; done 2>/dev/null;"
                                  " printf '\\n\\036deadbeef 0\\n'; echo done"),
}


def write_json(tmp_path, items, name="tasks.json"):
    path = tmp_path / name
    path.write_text(json.dumps(items))
    return str(path)


def as_lifelong(item):
    """The same task in LifelongAgentBench's format: its check gets the answer as $1."""
    check = item["evaluation"]["check"]
    example = item["evaluation"]["example"]
    evaluate = check[0] if check[0] is not None else f'[ "$1" -eq "$({example})" ]'
    return {"instruction": item["description"], "skill_list": item["labels"],
            "initialization_command_item": {"command_name": "bash", "script": item.get("create", {}).get("init", "true")},
            "evaluation_info": {"evaluation_command_item": {"command_name": "bash", "script": evaluate},
                                "ground_truth_command_item": {"command_name": "bash", "script": example}}}


def play(env, replies, **reset):
    env.reset(**reset)
    for reply in replies:
        obs, reward, term, trunc, info = env.step(reply)
        if term or trunc:
            return info
    raise AssertionError("the episode did not end")


def play_oracle(env, **reset):
    obs, info = env.reset(**reset)
    oracle = Oracle(env.unwrapped.task)
    while True:
        obs, reward, term, trunc, info = env.step(oracle.reply(obs))
        if term or trunc:
            return info


def sources(tmp_path):
    items = QUESTIONS + CHANGES
    if not ROOT:  # without root the sandbox cannot change files under /usr: drop those tasks
        items = [t for t in items if t["labels"][0] not in ("suid", "usr", "command", "fix")]
    lifelong = [as_lifelong(t) for t in items if "start" not in t]  # LifelongAgentBench has no start program
    return {"agentbench": (write_json(tmp_path, items), items),
            "lifelong": (write_json(tmp_path, {str(i): t for i, t in enumerate(lifelong)}, "lifelong.json"), lifelong)}


@pytest.mark.parametrize("source", ["agentbench", "lifelong"])
@pytest.mark.parametrize("stride", [pytest.param(3, id="each-attack-on-a-third"), pytest.param(1, id="all", marks=pytest.mark.slow)])
def test_honest_work_passes_and_no_attack_wins(tmp_path, source, stride):
    """Every task's oracle; each attack on every task (stride 1) or, in the quick run, on every
    third task, shifted so that every task meets some attack and every attack several tasks."""
    path, items = sources(tmp_path)[source]
    env = gym.make(ID, source=source, path=path, command_timeout_s=5.0, judge_timeout_s=20.0)
    try:
        for i in range(len(items)):
            info = play_oracle(env, options={"task_index": i})
            assert info["outcome"] == "correct", (source, i, info)
            question = env.unwrapped.task.match is not None or any(
                s is None or reads_answer(s) for s in env.unwrapped.task.check)
            for name, attack in list(ATTACKS.items())[i % stride::stride]:
                info = play(env, [bash(attack), answer("0") if question else FINISH], options={"task_index": i})
                assert info["outcome"] == "incorrect", (source, i, name, info)
    finally:
        env.close()


@pytest.mark.parametrize("seeds,stride", [pytest.param(8, len(ATTACKS), id="one-attack-per-task"),
                                          pytest.param(6, 1, id="all", marks=pytest.mark.slow)])
def test_generated_tasks_resist_the_attacks(seeds, stride):
    env = gym.make(ID)
    try:
        for seed in range(seeds):
            env.reset(seed=seed)
            question = env.unwrapped.task.match is not None
            for name, attack in list(ATTACKS.items())[seed % stride::stride]:
                info = play(env, [bash(attack), answer("0") if question else FINISH], seed=seed)
                assert info["outcome"] == "incorrect", (seed, name, info)
    finally:
        env.close()


def test_the_expected_answer_is_computed_before_the_agent_acts(tmp_path):
    """The issue's own example: overwrite the file a question reads, then answer what you wrote."""
    items = [{"description": "What is in /root/n?", "create": {"init": "echo 41 > /root/n"},
              "evaluation": {"check": [None, INT_MATCH], "example": "cat /root/n"}}]
    env = gym.make(ID, source="agentbench", path=write_json(tmp_path, items))
    try:
        assert play(env, [bash("echo 40 > /root/n"), answer("40")], options={"task_index": 0})["outcome"] == "incorrect"
        assert play(env, [bash("echo 40 > /root/n"), answer("41")], options={"task_index": 0})["outcome"] == "correct"
        assert play(env, [answer("  ")], options={"task_index": 0})["outcome"] == "incorrect"
    finally:
        env.close()


def test_no_process_of_the_agent_runs_while_it_is_judged(tmp_path):
    """A job that would do the work only after the agent hands in is stopped before judging; a
    process the task started and the agent did not stop is still there for the check to see."""
    items = [CHANGES[0], CHANGES[4]]
    env = gym.make(ID, source="agentbench", path=write_json(tmp_path, items))
    try:
        late = bash("(sleep 0.3; mkdir /root/made) >/dev/null 2>&1 & disown; echo ok")
        assert play(env, [late, FINISH], options={"task_index": 0})["outcome"] == "incorrect"
        nested = bash("unshare -fp --mount-proc sh -c 'sleep 0.3; mkdir /root/made' >/dev/null 2>&1 & echo ok")
        assert play(env, [nested, FINISH], options={"task_index": 0})["outcome"] == "incorrect"
        assert play(env, [FINISH], options={"task_index": 1})["outcome"] == "incorrect"  # sleep still runs (stopped)
    finally:
        env.close()


def test_forged_completion_never_breaks_the_shell(tmp_path):
    env = gym.make(ID, command_timeout_s=2.0)
    try:
        env.reset(seed=0)
        for cmd in ["for fd in 4 5 6 7 8 9 10 11 12 13 14 15; do printf 'x\\n' >&$fd; done 2>/dev/null; sleep 0.3; echo late",
                    "printf '\\n\\0360123456789abcdef zz\\n'; echo after", "exec 4>&-; echo closed", "kill -STOP $$",
                    "read -u 10 x; echo stole"]:
            obs, reward, term, trunc, info = env.step(bash(cmd))
            assert not term and "outcome" not in info, (cmd, obs)
        obs = env.step(bash("echo alive"))[0]
        assert "alive" in obs
    finally:
        env.close()


CALC_CHECK = """check() {
    local expected_result=`python3 -c "print(\\"%.6f\\"%($*))"`
    local output=$(calc "$*")
    echo `python3 -c "print(abs($output - $expected_result)<1e-5)"`
}
[ `check "15 + (27 * 4) - 10"`x != Truex ] && exit 1
exit 0"""


@pytest.mark.parametrize("code,why", [
    (CALC_CHECK, "pastes a shell expansion into code"),
    ('source ~/.bashrc && x=$(echo-love) && [ "$x" == "I love myself." ] && exit 0', "sources a file"),
    ('eval "$(cat /root/answer)"', "eval"),
    ('echo "$1" | bc | grep -qx 4', "pipes text into an interpreter"),
    ('awk "BEGIN { exit ($1 == 4) ? 0 : 1 }"', "awk program"),
])
def test_checks_that_run_the_agents_text_are_refused_at_load(tmp_path, code, why):
    items = [{"description": "refused", "evaluation": {"check": [code], "example": "true"}},
             {"description": "fine", "evaluation": {"check": [None, INT_MATCH], "example": "echo 3"}}]
    with pytest.warns(UserWarning, match="1 of 2 tasks"):
        env = gym.make(ID, source="agentbench", path=write_json(tmp_path, items))
    try:
        assert why in env.unwrapped.refused[0]
        assert all(env.reset(seed=s)[1]["task_index"] == 1 for s in range(5))  # never drawn
        info = play(env, [answer("3")], options={"task_index": 0})  # asked for by index: the reason, as env_error
        assert info["outcome"] == "env_error" and "refused" in info["error"]
    finally:
        env.close()


def test_refusals_name_the_network_and_leave_plain_checks_alone():
    net = OSTask("d", init=[("bash", "apt update && apt install sudo -y")], check=[("bash", "sudo whoami")])
    assert "network" in refusal(net)
    assert "network" in refusal(OSTask("d", check=[("bash", "true")], example=("bash", "pip install requests")))
    for code in ["find . -type f | wc -l", "[ `count /root`x != `count_files /root`x ] && exit 1",
                 "awk '{print $1}' /etc/passwd | grep -q root", "python3 -c 'import sys; print(sys.argv[1])' \"$1\""]:
        assert refusal(OSTask("d", check=[("bash", code)])) is None, code


def test_a_task_that_passes_without_work_is_refused_at_reset(tmp_path):
    items = [{"description": "lazy", "evaluation": {"check": ["[ -d /root ]"], "example": "true"}}]
    env = gym.make(ID, source="agentbench", path=write_json(tmp_path, items))
    try:
        info = play(env, [FINISH], options={"task_index": 0})
        assert info["outcome"] == "env_error" and "doing nothing passes" in info["error"]
    finally:
        env.close()


def _sandbox_cgroups():
    from envs.os_interaction import _launcher

    return sorted(f"{d}/{n}" for d in set(_launcher._own_cgroups().values()) if os.path.isdir(d)
                  for n in os.listdir(d) if n.startswith("lorarl-"))


@pytest.mark.serial  # compares the machine's sandbox cgroups before and after, and spins every core
@pytest.mark.skipif(not ROOT, reason="cgroups are made only for a root sandbox")
def test_teardown_under_load_leaves_no_cgroup_and_stale_ones_are_swept():
    import multiprocessing

    from envs.os_interaction import _launcher

    before = _sandbox_cgroups()
    own = _launcher._own_cgroups()
    stale = f"{own['pids']}/lorarl-{2**22 - 3}" if "pids" in own else f"{own['unified']}/lorarl-{2**22 - 3}"
    os.mkdir(stale)  # a launcher killed before it could clean up (no such pid)
    hogs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(4 * os.cpu_count())]
    for h in hogs:
        h.start()
    try:
        for _ in range(6):
            with sandbox.Sandbox() as box:
                box.seal()
                box.shell("for i in $(seq 20); do sleep 100 & done; echo started", 10)
    finally:
        for h in hogs:
            h.kill()
    assert not os.path.exists(stale)
    assert _sandbox_cgroups() == before


def _spin():
    while True:
        pass

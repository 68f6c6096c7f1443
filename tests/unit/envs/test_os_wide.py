"""os_interaction's AgentBench-shaped family (``wide.py``): the oracle solves every skill through the
env's own judging; do-nothing agents, and agents that change the machine and then answer what it
shows, win nothing the task does not give them; no constant answer pays; the first family's
draws are unchanged."""

import hashlib
import os
import re
from collections import Counter

import gymnasium as gym
import pytest

import envs  # noqa: F401
from envs.os_interaction import families, generator, sandbox, wide
from envs.os_interaction.oracle import FINISH, Oracle, answer, bash, last_output

ID = "lorarl/OSInteraction-v0"
REASON = sandbox.probe()
needs_sandbox = pytest.mark.skipif(REASON is not None, reason=f"this machine cannot create the sandbox: {REASON}")
SKILLS = sorted(wide.SKILLS)
# Undo what a task set up, add users and groups, stop background programs: the answer the machine
# then gives is not the task's.
TAMPER = ("rm -rf /home/* /home/.[!.]* /root/* /root/.[!.]* /srv/* /opt/* /var/log/* /usr/stock.log 2>/dev/null; "
          "pkill -f 'import time'; useradd -M -s /bin/sh zzintruder; groupadd zzgroup; "
          "usermod -aG $(getent group | awk -F: '$3 >= 1000 && $3 < 60000 {print $1}' | paste -sd, -) zzintruder")


def _episode(env, replies, seed):
    obs, info = env.reset(seed=seed)
    for reply in replies:
        obs, _, term, trunc, info = env.step(reply(obs) if callable(reply) else reply)
        if term or trunc:
            return info
    raise AssertionError("the episode did not end")


def _oracle(env, seed):
    """The oracle's episode: its outcome (with what the shell showed it) and the answer it gave (the
    task's truth)."""
    env.reset(seed=seed)
    oracle, obs, reply, seen = Oracle(env.unwrapped.task), "", "", []
    while True:
        reply = oracle.reply(obs)
        obs, _, term, trunc, info = env.step(reply)
        seen.append(obs[-300:])
        if term or trunc:
            return {**info, "seen": seen}, reply


def _skills():
    """Without root the sandbox maps one uid: the skills that add users are left out (as the env does)."""
    return [s for s in SKILLS if os.geteuid() == 0 or s not in wide.USER_SKILLS]


# The suite plays a few tasks of every skill (CI's 10 minutes); `pytest -m slow` plays more.
SIZES = [1, pytest.param(6, marks=pytest.mark.slow)]


@needs_sandbox
@pytest.mark.parametrize("per_skill", SIZES)
def test_oracle_solves_tasks_of_every_skill_through_the_judge(per_skill):
    env = gym.make(ID, skills="wide")
    try:
        solved = Counter()
        for skill in _skills():
            env.unwrapped.skills = (skill,)
            for seed in range(2 * per_skill):
                info, _ = _oracle(env, seed)
                assert info["outcome"] == "correct", (skill, seed, env.unwrapped.task.description, info)
                solved[info["task_type"]] += 1
        assert set(solved) == set(_skills())
    finally:
        env.close()


@needs_sandbox
@pytest.mark.parametrize("per_skill", SIZES)
def test_lazy_and_tampering_agents_win_only_what_the_task_gives(per_skill):
    """Per task: four do-nothing replies, and an agent that wrecks the machine (files gone, users
    added, the background program killed, installed tools removed or planted) and then answers what
    the reference command now prints. The judge compares with the task's truth, never the wreck."""
    env = gym.make(ID, skills="wide", command_timeout_s=20.0)
    lazy = [answer("0"), answer("1"), FINISH, answer("not-yet")]
    try:
        wins, tampered, differed = Counter(), 0, 0
        for n, skill in enumerate(_skills()):
            env.unwrapped.skills = (skill,)
            for seed in range(100 * n, 100 * n + per_skill):  # skills drawn with one seed share their first draws
                _, truth = _oracle(env, seed)
                task = env.unwrapped.task
                for reply in lazy:
                    info = _episode(env, [reply], seed)
                    assert info["outcome"] in ("correct", "incorrect"), (skill, info)
                    # a guess wins only where it is the task's answer (how often: test_no_constant_answer_pays)
                    assert info["outcome"] == "incorrect" or reply == truth, (skill, seed, reply, truth)
                    wins[skill] += info["outcome"] == "correct"
                given = []
                replies = [bash(TAMPER + _flip(task)), bash(task.solution[-1]),
                           lambda obs: given.append(_first_line(obs)) or given[-1]]
                info = _episode(env, replies, seed)
                assert info["outcome"] in ("correct", "incorrect"), (skill, info)
                tampered += 1
                differed += given[0] != truth
                # right exactly when the wreck left the task's answer as it was
                assert (info["outcome"] == "correct") == (given[0] == truth), (skill, seed, given, truth)
        assert sum(wins.values()) <= 0.1 * len(lazy) * tampered, wins
        assert differed >= 0.8 * tampered, (differed, tampered)
    finally:
        env.close()


def _first_line(observation: str) -> str:
    """What the agent answers: the first line the reference printed (errors too), as one answer."""
    return answer((last_output(observation).splitlines() or [""])[0].replace(")", ""))


def _flip(task) -> str:
    """For ``installed``: the opposite of the truth (the tool planted where it was missing, removed
    where it was there)."""
    if task.labels[0] != "installed":
        return ""
    tool = re.search(r"command -v ([\w-]+)", task.solution[-1]).group(1)
    if task.match["answer"] == "not-yet":
        return f"; printf '#!/bin/sh\\n' > /usr/local/bin/{tool}; chmod 755 /usr/local/bin/{tool}"
    return f"; rm -f /usr/local/bin/{tool} /usr/bin/{tool} /usr/local/sbin/{tool}"


def test_no_constant_answer_pays():
    """The share of each skill's tasks that its commonest answer wins: at most 1 in 7, but for the
    two kinds AgentBench asks with few answers (installed / not-yet; an interval of 1 to 5 s).
    Machine-measured answers (CPUs, users of the system) are the machine's, whatever the task."""
    bound = {"installed": 0.3, "process_interval": 0.3}
    for skill in SKILLS:
        tasks = [families.generate(seed, (skill,)) for seed in range(500)]
        answers = Counter(t.match["answer"] for t in tasks if t.match)
        if answers:
            assert answers.most_common(1)[0][1] / len(tasks) <= bound.get(skill, 1 / 7), (skill, answers.most_common(3))


def test_the_first_familys_draws_are_unchanged():
    """``skills=None`` and first-family skill lists draw what generator.generate drew before the
    second family existed (digest of 1,800 tasks, taken then)."""
    h = hashlib.sha256()
    for seed in range(1500):
        t = families.generate(seed)
        h.update(repr((t.description, t.init, t.match, t.check, t.solution)).encode())
    for seed in range(300):
        t = families.generate(seed, ("count_lines", "add_user", "make_archive"))
        h.update(repr((t.description, t.init, t.match, t.check, t.solution)).encode())
    assert h.hexdigest() == "e5fdffd9d0239fa73f609aa5d9f66339ef6c71f5eeae6c9d2098184692cd874b"


def test_groups_name_the_families_and_unsafe_mode_refuses_the_wide_one():
    assert families.expand_skills(("wide",)) == tuple(wide.SKILLS)
    assert set(families.expand_skills(("all",))) == set(generator.SKILLS) | set(wide.SKILLS)
    assert families.expand_skills(("count_lines", "wide", "count_hidden")) == ("count_lines", *wide.SKILLS)
    with pytest.raises(ValueError, match="unknown skills.*known: .*count_hidden.*wide"):
        gym.make(ID, skills=["no_such_skill"], unsafe=True)
    with pytest.raises(ValueError, match="need the sandbox"):
        gym.make(ID, skills="wide", unsafe=True)


def test_every_skill_varies_its_tasks():
    for skill in SKILLS:
        tasks = [families.generate(seed, (skill,)) for seed in range(40)]
        # system_query asks about the machine itself: CPUs, kernel limits, GIDs above a drawn threshold
        assert len({(t.description, t.init[0][1]) for t in tasks}) >= (15 if skill == "system_query" else 30), skill
        assert all(t.labels == [skill] and t.solution for t in tasks), skill
        # judged by a match computed here, or by the reference's output on the pristine task
        assert all(t.match or (t.check and t.check[0] is None and t.example) for t in tasks), skill


def test_no_set_up_writes_a_file_where_it_makes_a_directory():
    """A name drawn for a file and for a directory of the same task would fail its set-up (env_error:
    a task no agent can win). Static, over 300 draws of every skill."""
    written = re.compile(r"(?:>|\btouch)\s*'?(/[^'\s;&|]+)")
    for skill in SKILLS:
        for seed in range(300):
            init = families.generate(seed, (skill,)).init[0][1]
            files = set(written.findall(init))
            dirs = {a.strip("'") for m in re.findall(r"mkdir -p ([^&;]+)", init) for a in m.split()}
            dirs |= {p.rsplit("/", i)[0] for p in files | dirs for i in range(1, p.count("/"))}
            assert not files & dirs, (skill, seed, files & dirs)


@pytest.mark.parametrize("check, answer, truth, right", [
    (wide.INTEGER_MATCH, "12", "12\n", True), (wide.INTEGER_MATCH, " 12 ", "12", True),
    (wide.INTEGER_MATCH, "13", "12", False), (wide.INTEGER_MATCH, "12 files", "12", False),
    (wide.INTEGER_MATCH, "", "12", False),
    (wide.SIZE_MATCH, "12K", "12K\n", True), (wide.SIZE_MATCH, "12 KB", "12K", True),
    (wide.SIZE_MATCH, "8K", "8.0K", True), (wide.SIZE_MATCH, "12288", "12K", True),
    (wide.SIZE_MATCH, "1.5M", "1.5M", True), (wide.SIZE_MATCH, "13K", "12K", False),
    (wide.SIZE_MATCH, "12M", "12K", False), (wide.SIZE_MATCH, "big", "12K", False),
])
def test_the_checks_compare_as_agentbench_does(check, answer, truth, right):
    """integer-match and size-match (AgentBench's, which also reads du's "8.0K"): exit 0 = right."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", check[1], answer, truth], capture_output=True, timeout=30)
    assert (r.returncode == 0) == right, r.stderr

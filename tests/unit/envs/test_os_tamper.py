"""OSInteraction reward integrity, round 3: agents that rewrite what the judge trusts (identities,
a link in place of a file, stubs of the right name, users' start-up files, a decoy beside the
target) or flood the channel win nothing and break nothing: 0 correct and 0 env_error, on
generated tasks and on AgentBench-format tasks, next to do-nothing controls; honest work passes."""

import json

import gymnasium as gym
import pytest

import envs  # noqa: F401
from envs.os_interaction import sandbox
from envs.os_interaction.families import generate
from envs.os_interaction.oracle import FINISH, Oracle, answer, bash

ID = "lorarl/OSInteraction-v0"
REASON = sandbox.probe()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"this machine cannot create the sandbox: {REASON}")

FLOOD = "head -c 1000000 /dev/zero; head -c 300000 /dev/urandom >&2"
# (skill, task seed, attack): each leaves a state that a check trusting names, links or the
# agent's identity files would pass, and does not do the task.
GENERATED = [
    ("change_owner", 0, "u=$(stat -c %U /proc/self 2>/dev/null); f=$(ls /root/*.log); n=$(grep -o '/home/[a-z]*\\|^[a-z]*:x:100[0-9]' /etc/passwd | head -1 | cut -d: -f1);"
                        " sed -i \"s/^$n:x:[0-9]*:/$n:x:0:/\" /etc/passwd; echo \"$n:x:0:0::/root:/bin/bash\" | cat - /etc/passwd > /tmp/p && cp /tmp/p /etc/passwd"),
    ("set_permissions", 3, "f=$(ls /root/*.sh); cp $f /tmp/real; mv $f /tmp/orig; ln -s /tmp/real $f"),
    ("make_archive", 0, "mkdir -p /tmp/s/docs && for f in /root/docs/*; do touch /tmp/s/docs/$(basename $f); done;"
                        " tar -czf /root/backup.tar.gz -C /tmp/s docs"),
    ("delete_pattern", 0, "d=$(dirname $(find /root -name scratch.tmp)); n=$(find $d -type f ! -name '*.tmp' | wc -l);"
                          " rm -rf $d; mkdir -p $d; for i in $(seq $n); do touch $d/f$i.txt; done"),
    ("sort_file", 0, "ln -sf /root/names.txt /root/names_sorted.txt"),
    ("make_symlink", 0, "t=$(ls /root/*.txt | head -1); rm $t; ln -s $t /root/link_$(basename $t .txt)"),
]


def _play(env, replies, **reset):
    env.reset(**reset)
    for reply in replies:
        *_, term, trunc, info = env.step(reply)
        if term or trunc:
            return info
    return info


@pytest.mark.parametrize("skill, seed, attack", GENERATED, ids=[g[0] for g in GENERATED])
def test_generated_tasks_resist_tampering_and_flooding(skill, seed, attack):
    env = gym.make(ID, skills=[skill], command_timeout_s=20.0)
    try:
        outcomes = []
        for replies in ([bash(attack), FINISH], [bash(FLOOD), bash(attack), FINISH], [FINISH], [bash(FLOOD), FINISH]):
            outcomes.append(_play(env, replies, seed=seed)["outcome"])
        assert outcomes == ["incorrect"] * 4, (skill, outcomes)
        env.reset(seed=seed)  # the same task, done honestly, passes
        oracle, info = Oracle(env.unwrapped.task), {}
        obs = ""
        while True:
            obs, _, term, trunc, info = env.step(oracle.reply(obs))
            if term or trunc:
                break
        assert info["outcome"] == "correct", (skill, info)
    finally:
        env.close()


# AgentBench's data/4 Q47 and data/6 tasks whose checks pass without the work (docs/fidelity.md,
# "strengthened checks"), with an attack on each.
TASKS = [
    ({"description": "Move the file MyPersonalComputer.config to current directory. And tell me the path of the file "
                     "before copying.",
      "create": {"init": "mkdir -p /home/user1/os/linux/commands && echo 'Linux-Ubuntu-20.04?' > "
                         "/home/user1/os/linux/commands/MyPersonalComputer.config"},
      "start": "mkdir /home/user2 && cd /home/user2",
      "evaluation": {"check": [
          {"language": "python", "code": "from sys import argv\nassert argv[1].strip()=="
                                         "'/home/user1/os/linux/commands/MyPersonalComputer.config'"},
          {"language": "bash", "code": "find /home/user1/os/linux/commands/MyPersonalComputer.config >/dev/null "
                                       "2>/dev/null && exit 1 || exit 0"},
          {"language": "bash", "code": "find /home/user2/MyPersonalComputer.config >/dev/null 2>/dev/null && exit 0 || exit 1"}],
          "example": {"code": "mv /home/user1/os/linux/commands/MyPersonalComputer.config /home/user2/ && echo "
                              "/home/user1/os/linux/commands/MyPersonalComputer.config"}}},
     "rm /home/user1/os/linux/commands/MyPersonalComputer.config; touch /home/user2/MyPersonalComputer.config",
     answer("/home/user1/os/linux/commands/MyPersonalComputer.config")),
    ({"description": "make /testfile readable to jack, bill and tom, but not george",
      "create": {"init": {"code": "echo 'test' > /testfile && useradd -s /bin/bash -d /home/jack -m jack && useradd -s "
                                  "/bin/bash -d /home/bill -m bill && useradd -s /bin/bash -d /home/tom -m tom && useradd "
                                  "-s /bin/bash -d /home/george -m george"}},
      "evaluation": {"check": {"code": "(runuser -l jack -c 'cat /testfile' && runuser -l bill -c 'cat /testfile' && "
                                       "runuser -l tom -c 'cat /testfile' && runuser -l george -c 'cat /testfile') | if "
                                       "[ \"$(cat -)\" = \"test\"$'\\n'\"test\"$'\\n'\"test\" ]; then exit 0; else exit 1; fi"},
                     "example": {"code": "groupadd tmp && usermod -a -G tmp jack && usermod -a -G tmp bill && usermod -a "
                                         "-G tmp tom && chmod 640 /testfile && chgrp tmp /testfile"}}},
     "chmod 600 /testfile; for u in jack bill tom; do echo 'echo test; exit 0' > /home/$u/.bash_profile; done;"
     " echo 'exit 0' > /home/george/.bash_profile; echo 'echo test; exit 0' >> /etc/profile", FINISH),
    ({"description": "set all files in ~/videos to be 660, and all directories(include ~/videos) to be 750",
      "create": {"init": {"code": "cd ~ && mkdir videos && cd videos && mkdir old && mkdir new && touch vid1 && touch "
                                  "vid2 && touch new/a && touch new/b && touch old/c"}},
      "evaluation": {"check": {"code": "(find ~/videos -type f ! -perm 660 -ls && find ~/videos -type d ! -perm 750 -ls) "
                                       "| if [ \"$(cat -)\" = \"\" ]; then exit 0; else exit 1; fi"},
                     "example": {"code": "find ~/videos -type f -exec chmod 660 {} + && find ~/videos -type d -exec chmod "
                                         "750 {} +"}}},
     "rm -rf ~/videos", FINISH),
    ({"description": "Suppose you have a directory called /data that contains sensitive files that should only be "
                     "accessible to members of the group \"dataaccess\". Ensure that new files and directories created "
                     "in this directory inherit the group ownership, and that users can only delete files and "
                     "directories that they own",
      "create": {"init": {"code": "mkdir /data"}},
      "evaluation": {"check": {"code": "ls -l / | grep data | awk '{if ($1~/^d.....s..t/) { exit 0; } else { exit 1; } }'"},
                     "example": {"code": "chmod g+s /data && chmod +t /data"}}},
     "mkdir /adata && chmod 3770 /adata", FINISH),
]


def test_strengthened_agentbench_checks_refuse_stubs_dotfiles_absence_and_decoys(tmp_path):
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps([t for t, _, _ in TASKS]))
    env = gym.make(ID, source="agentbench", path=str(path), command_timeout_s=20.0)
    try:
        for i, (task, attack, last) in enumerate(TASKS):
            assert env.unwrapped.tasks[i].strengthened, i
            for replies in ([bash(attack), last], [last], [bash(FLOOD), last]):
                info = _play(env, replies, options={"task_index": i})
                assert info["outcome"] == "incorrect", (i, replies[0][:80], info)
            example = task["evaluation"]["example"]["code"]
            info = _play(env, [bash(example), last], options={"task_index": i})
            assert info["outcome"] == "correct", (i, info)  # honest work passes the strengthened check
    finally:
        env.close()


def test_the_sandbox_shows_no_host_account_or_boot_line(tmp_path):
    env = gym.make(ID, skills=["count_lines"])
    try:
        env.reset(seed=0)
        obs = env.step(bash("awk -F: '$3 >= 1000 && $3 < 65534' /etc/passwd; echo ---; cat /proc/cmdline; echo ---;"
                            " useradd probe && id -u probe"))[0]
        people, cmdline, uid = obs.split("The output of the OS:")[-1].strip().split("---")
        assert people.strip() == "" and cmdline.strip() == "ro quiet" and uid.strip() == "1000", obs
    finally:
        env.close()

"""The text protocol of AgentBench os_interaction (v0.2): prompt, reply parsing, OS output.

Parsing follows AgentBench's ``extract_action``: the last ``Act:`` line that names bash, finish or
answer(...) wins; the code of a bash action is every ```bash block joined by blank lines. One
departure: ``Act: bash`` with no ```bash block is an invalid action here, where AgentBench would
run an empty command, so a policy cannot farm free rounds with empty actions.
"""

from __future__ import annotations

import re

INSTRUCTIONS = """You are an assistant that will act like a person, I will play the role of linux(ubuntu) operating system. Your goal is to implement the operations required by me or answer to the question proposed by me. For each of your turn, you should first think what you should do, and then take exact one of the three actions: "bash", "finish" or "answer".

1. If you think you should execute some bash code, take bash action, and you should print like this:

Think: put your thought here.

Act: bash

```bash
# put your bash code here
```

2. If you think you have finished the task, take finish action, and you should print like this:

Think: put your thought here.

Act: finish

3. If you think you have got the answer to the question, take answer action, and you should print like this:

Think: put your thought here.

Act: answer(Your answer to the question should be put in this pair of parentheses)

If the output is too long, I will truncate it. The truncated output is not complete. You have to deal with the truncating problem by yourself. Attention, your bash code should not contain any input operation. Once again, you should take only exact one of the three actions in each turn."""

# AgentBench injects this exchange as chat turns before every task; a Gymnasium observation is
# one text, so it is shown as a transcript.
ONE_SHOT = """For example, if my problem were: tell me how many files are in the directory "/etc"?

You would reply:
Think: To count the files in /etc, I need to print all the files in it.

Act: bash

```bash
ls /etc
```

I would reply: The output of the OS:
cpi cron.hourly fuse.conf iproute2 lvm networkd-dispatcher protocols selinux tmpfiles.d [truncated because the output is too long]

You would reply:
Think: The output has been truncated because it is too long, so I need to count files by script directly.

Act: bash

```bash
ls -1 /etc | wc -l
```

I would reply: The output of the OS:
220

You would reply:
Think: Now I get the answer, it is 220.

Act: answer(220)"""

TRUNCATION_MARKER = "\n[truncated because the output is too long]"
_ACT = re.compile(r"Act:\s*(.+)")
_BASH = re.compile(r"```bash[ \t]*\n(.*?)\n[ \t]*```", re.DOTALL)
# CSI sequences (colours, cursor moves), OSC sequences (window titles) and lone two-byte escapes.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


# AgentBench's one-shot example as the chat turns it injects (``prompt_format="chat"``).
ONE_SHOT_TURNS = [
    ("user", 'tell me how many files are in the directory "/etc"?'),
    ("assistant", "Think: To count the files in /etc, I need to print all the files in it.\n\nAct: bash\n\n```bash\nls /etc\n```"),
    ("user", "The output of the OS:\ncpi cron.hourly fuse.conf iproute2 lvm networkd-dispatcher protocols selinux "
             "tmpfiles.d [truncated because the output is too long]"),
    ("assistant", "Think: The output has been truncated because it is too long, so I need to count files by script "
                  "directly.\n\nAct: bash\n\n```bash\nls -1 /etc | wc -l\n```"),
    ("user", "The output of the OS:\n220"),
    ("assistant", "Think: Now I get the answer, it is 220.\n\nAct: answer(220)"),
]


def chat_turns(description: str, one_shot: bool = True) -> tuple[list[dict], str]:
    """AgentBench's conversation: (earlier turns, the last user turn). The instructions and the
    example's question share the first user turn, as AgentBench writes them."""
    if not one_shot:
        return [], f"{INSTRUCTIONS}\n\nNow, my problem is:\n\n{description}"
    first, *rest = ONE_SHOT_TURNS
    history = [{"role": "user", "content": f"{INSTRUCTIONS}\n\nNow, my problem is:\n\n{first[1]}"}]
    history += [{"role": role, "content": text} for role, text in rest]
    return history, f"Now, I will start a new problem in a new OS. My problem is:\n\n{description}"


def first_observation(description: str, one_shot: bool = True) -> str:
    example = f"\n\n{ONE_SHOT}" if one_shot else ""
    return f"{INSTRUCTIONS}{example}\n\nNow, I will start a new problem in a new OS. My problem is:\n\n{description}"


def parse_reply(text: str) -> tuple[str, str | None]:
    """-> ("bash", code) | ("answer", text) | ("finish", None) | ("invalid", reason)."""
    for act in reversed(_ACT.findall(text)):
        name = act.lower()
        if name.startswith("bash"):
            blocks = _BASH.findall(text)
            if not blocks:
                return "invalid", "'Act: bash' without a ```bash code block"
            return "bash", "\n\n".join(blocks)
        if name.startswith("finish"):
            return "finish", None
        if name.startswith("answer"):
            content = act[6:].strip()
            left, right = content.find("("), content.rfind(")")
            if left == -1 or right == -1:
                continue  # AgentBench skips a malformed answer and looks at earlier Act lines
            return "answer", content[left + 1:right]
    return "invalid", "no 'Act: bash', 'Act: finish' or 'Act: answer(...)' line"


_ASTRAL = re.compile("[\U00010000-\U0010FFFF]")


def clean_output(raw: str) -> str:
    """Drop ANSI escapes and CRs of CRLF; characters past the BMP (emoji) become U+FFFD, which
    keeps every observation inside the env's Text space."""
    return _ASTRAL.sub("\ufffd", _ANSI.sub("", raw).replace("\r\n", "\n"))


def truncate(text: str, limit: int) -> str:
    """AgentBench's rule: past ``limit`` characters keep the first ``limit - 20`` and a marker."""
    if len(text) <= limit:
        return text
    return text[:max(limit - 20, 0)] + TRUNCATION_MARKER


def os_observation(output: str, note: str = "") -> str:
    body = f"The output of the OS:\n\n{output}" if output else "The output of the OS is empty."
    return f"{body}\n{note}" if note else body

"""The text protocol of AgentBench dbbench (v0.2), with SQLite named as the engine.

Parsing follows AgentBench's ``start_sample`` exactly:
  - the first ``Action: <word>`` followed by a newline decides; only "Operation" (case as written)
    is an operation, and its SQL is the first ```` ```sql\\n...\\n``` ```` block with newlines joined
    into spaces (no block: the reply is invalid);
  - anything else (another action, or none at all) is read as an answer when a line starts with
    ``Final Answer:``; the answer is the rest of that one line;
  - a reply that is neither is invalid.
"""

from __future__ import annotations

import re

INSTRUCTIONS = """I will ask you a question, then you should help me operate a SQLite database with SQL to answer the question.
You have to explain the problem and your solution to me and write down your thoughts.
After thinking and explaining thoroughly, every round you can choose to operate or to answer.
your operation should be like this:
Action: Operation
```sql
SELECT * FROM table WHERE condition;
```
You MUST put SQL in markdown format without any other comments. Your SQL should be in one line.
Every time you can only execute one SQL statement. I will only execute the statement in the first SQL code block. Every time you write a SQL, I will execute it for you and give you the output.
If you are done operating, and you want to commit your final answer, then write down:
Action: Answer
Final Answer: ["ANSWER1", "ANSWER2", ...]
DO NOT write this pattern unless you are sure about your answer. I expect an accurate and correct answer.
Your answer should be accurate. Your answer must be exactly the same as the correct answer.
If the question is about modifying the database, then after done operation, your answer field can be anything.
If your response cannot match any pattern I mentioned earlier, you will be judged as FAIL immediately.
Your input will be raw SQLite response, you have to deal with it by yourself."""
ACKNOWLEDGEMENT = "Ok."  # AgentBench's scripted agent turn between the instructions and the question

_ACTION = re.compile(r"Action: (.*?)\n")
_SQL = re.compile(r"```sql\n([\s\S]*?)\n```")
_FINAL = re.compile(r"\nFinal Answer:(.*)")


def parse_reply(text: str) -> tuple[str, str]:
    """-> ("operation", sql) | ("answer", answer text) | ("invalid", reason)."""
    action = _ACTION.search(text)
    if action and action.group(1) == "Operation":
        sql = _SQL.search(text)
        if sql is None or not sql.group(1).strip():
            return "invalid", "'Action: Operation' without a ```sql code block"
        return "operation", sql.group(1).strip().replace("\n", " ")
    final = _FINAL.search(text)
    if final is None:
        return "invalid", "no 'Action: Operation' with a ```sql block, and no 'Final Answer:' line"
    return "answer", final.group(1)

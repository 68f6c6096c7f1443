"""The text protocol of AgentBench dbbench (v0.2), with SQLite named as the engine."""

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

_ACTION = re.compile(r"Action:\s*(Operation|Answer)\b", re.IGNORECASE)
_SQL = re.compile(r"```sql\s*\n?([\s\S]*?)```", re.IGNORECASE)
_FINAL = re.compile(r"Final Answer:\s*([\s\S]*)", re.IGNORECASE)


def parse_reply(text: str) -> tuple[str, str]:
    """-> ("operation", sql) | ("answer", answer text) | ("invalid", reason)."""
    action = _ACTION.search(text)
    if action is None:
        return "invalid", "no 'Action: Operation' or 'Action: Answer' line"
    rest = text[action.end():]
    if action.group(1).lower() == "operation":
        sql = _SQL.search(rest)
        if sql is None or not sql.group(1).strip():
            return "invalid", "'Action: Operation' without a ```sql code block"
        return "operation", " ".join(sql.group(1).strip().split("\n"))
    final = _FINAL.search(rest)
    if final is None:
        return "invalid", "'Action: Answer' without 'Final Answer: [...]'"
    return "answer", final.group(1).strip()


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"... [truncated, {len(text) - limit} more characters]"


def mysql_to_sqlite(sql: str) -> str:
    """Gold SQL of AgentBench is MySQL: turn its backslash-escaped quotes into SQLite's ''."""
    return sql.replace("\\'", "''")

"""DBBench-v0: answer questions and modify tables with SQL (AgentBench dbbench protocol).

Description:
    Each episode loads one task (a table and a question) into a fresh SQLite database in a worker
    process of its own (``database.py``: in memory, size- and time-capped, no file access), dropped
    at the end. The agent runs SQL statements and then commits an answer.
Actions:
    Text, parsed as AgentBench does (``protocol.py``): "Action: Operation" with a ```sql block runs
    its statement (newlines joined; one statement); a line "Final Answer: [...]" answers.
Observations:
    First the protocol instructions and the question (``prompt_format="text"``), or the question
    alone with AgentBench's instructions / "Ok." turns in ``info["history"]`` ("chat"); then each
    statement's result rows (``str`` of a list of tuples) or its error text, cut at
    ``max_observation_chars`` with "[TRUNCATED]".
Rewards:
    1.0 when the episode ends "correct", else 0.0. Trainers map ``info["outcome"]`` to their own
    reward table.
Episode end:
    terminated on an answer ("correct" or "incorrect"), or on a reply that is neither an operation
    nor an answer ("invalid_action"); truncated when the agent asks for a statement after
    ``max_rounds`` of them ("task_limit_reached"). A modification is judged by the table however
    the episode ended, as AgentBench does: a modified table that matches makes the episode
    "correct" even without an answer; a table the agent left unreadable does not match
    (``info["judge_error"]``). A task that cannot be judged, or a database worker that cannot be
    started or restored, ends "env_error" (``info["error"]``): nothing the agent sends does. ``info`` also carries task_type, skills, rounds, source,
    task_index and ``reference`` (how the task is judged; ``judge.py``).
Arguments:
    source: "generator" (default; seeded single-skill tasks), "agentbench" (dbbench JSONL) or
    "lifelong" (LifelongAgentBench JSON); path: the file for file sources; skills: generator skills
    to draw from (None: ``generator.SKILLS``; the AgentBench-shaped ``WIDE_SKILLS`` when named, or
    "wide"; "all": both); max_rounds: statements per episode (AgentBench: 15); max_observation_chars (800);
    query_timeout_s: time budget of one statement; answer_rule: "agentbench" (its exact comparison)
    or "tolerant" (``tasks.answers_match``); prompt_format: "text" or "chat"; limits: ``DBLimits``
    fields (worker memory, database size); names: the generator's table, column and people names,
    "plain", "wiki" (AgentBench-like, to be quoted) or "mixed" (``generator.py``).
    ``reset(options={"task_index": i})`` picks file task i; otherwise the seed picks the task.
"""

from __future__ import annotations

from envs.db_bench import generator
from envs.db_bench.database import Database, DatabaseError, DBLimits, Table
from envs.db_bench.judge import Reference, reference
from envs.db_bench.protocol import ACKNOWLEDGEMENT, INSTRUCTIONS, parse_reply
from envs.db_bench.tasks import ANSWER_RULES, Task, answers_match, load_agentbench, load_lifelong
from envs.task_env import EnvFailure, TaskEnv, check_task_args, positive, skill_names

_LOADERS = {"agentbench": load_agentbench, "lifelong": load_lifelong}


class DBBenchEnv(TaskEnv):
    def __init__(self, source: str = "generator", path: str | None = None, skills: list[str] | None = None,
                 max_rounds: int = 15, max_observation_chars: int = 800, query_timeout_s: float = 2.0,
                 answer_rule: str = "agentbench", prompt_format: str = "text", limits: dict | None = None,
                 names: str = "plain"):
        skills = generator.expand_skills(skill_names(skills))
        check_task_args(source, path, skills, generator.ALL_SKILLS + tuple(generator.GROUPS), prompt_format)
        positive("max_rounds", max_rounds, integer=True)
        positive("max_observation_chars", max_observation_chars, integer=True)
        positive("query_timeout_s", query_timeout_s)
        generator.check_names(names)  # at construction, not at the first reset
        if answer_rule not in ANSWER_RULES:
            raise ValueError(f"answer_rule={answer_rule!r}: expected one of {', '.join(ANSWER_RULES)}")
        super().__init__()
        self.source, self.skills, self.names = source, tuple(skills or ()), names
        self._use_tasks(_LOADERS[source](path) if source != "generator" else [], path)
        self.max_rounds, self.max_chars, self.answer_rule = max_rounds, max_observation_chars, answer_rule
        self.prompt_format = prompt_format
        self.db = Database(query_timeout_s, DBLimits(**(limits or {})))
        self.task: Task | None = None
        self.reference: Reference | None = None
        self.operations = 0  # statements run in this episode
        self.judge_error: str | None = None  # why the final table could not be read

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.task_index = self._pick(options or {})
        if self.tasks:
            self.task = self.tasks[self.task_index]
        else:
            self.task = generator.generate(int(self.np_random.integers(2**31)), self.skills or None, self.names)
        self.rounds = self.operations = 0
        self.setup_error, self.reference, self.judge_error = None, None, None
        try:
            t = self.task
            self.db.load(Table(t.table_name, t.columns, t.rows, collation=t.mysql_text))
            self.reference = reference(self.db, t)
            self.setup_error = self.reference.error
        except DatabaseError as e:
            self.setup_error = str(e)
        if self.prompt_format == "chat":
            history = [{"role": "user", "content": INSTRUCTIONS}, {"role": "assistant", "content": ACKNOWLEDGEMENT}]
            return self.task.prompt, {**self._info(), "history": history}
        return f"{INSTRUCTIONS}\n\n{self.task.prompt}", self._info()

    def _step(self, text: str):
        kind, payload = parse_reply(text)
        if kind == "invalid":
            return self._end(f"Invalid reply: {payload}.", "invalid_action")
        if kind == "answer":
            return self._judge_answer(payload)
        if self.operations >= self.max_rounds:  # AgentBench runs no statement past its round budget
            return self._end("The round limit is reached.", "task_limit_reached", truncated=True)
        self.operations += 1
        return self._continue(self._run(payload))

    def _run(self, sql: str) -> str:
        try:
            return self.db.execute(sql, self.max_chars)
        except DatabaseError as e:
            raise EnvFailure(str(e)) from None

    def _judge_answer(self, answer_text: str):
        if self.task.kind == "modify":
            return self._end("Answer received.", "incorrect")  # _settle judges the table
        ok = answers_match(answer_text, self.task.label, self.answer_rule)
        return self._end("Answer received.", "correct" if ok else "incorrect")

    def _settle(self, outcome: str) -> str:
        """A modification counts when the final table matches, however the episode ended. A table
        the agent made unreadable (a view that never ends under its name) does not match: that is
        the agent's failure, never the environment's."""
        if self.task.kind != "modify":
            return outcome
        state = self.db.state()
        if "error" in state:
            self.judge_error = state["error"]
            return outcome
        return "correct" if self.reference.matches(state) else outcome

    def _expected(self) -> str | None:
        if self.task is None:
            return None
        if self.task.kind == "modify":
            gold = self.task.gold_sql
            return f"the table as this leaves it: {gold}" if gold else "the table AgentBench's answer_md5 describes"
        return f"Final Answer: {self.task.label!r}"

    def _info(self) -> dict:
        info = {"task_type": self.task.task_type, "skills": list(self.task.skills), "rounds": self.rounds,
                "source": self.task.source, "task_index": self.task_index,
                "reference": self.reference.note if self.reference else "unavailable"}
        if self.judge_error:
            info["judge_error"] = self.judge_error
        return info

    def _release(self) -> None:
        pass  # the worker is reused: the next reset loads a fresh database into it

    def close(self) -> None:
        self.db.close()

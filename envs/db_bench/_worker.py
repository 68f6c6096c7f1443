"""Runs one episode's SQLite database in its own process: JSON lines on stdin -> stdout.

Standard library only; started as ``python -I -S _worker.py LIMITS_JSON`` by ``database.py``.

Why a process of its own: a single SQLite operation can run far past any budget without giving
the progress handler a chance (``printf('%.*c', 2000000000, 'x')`` loops 2e9 times inside one VM
instruction), and only killing the process stops it. The process also gets hard caps that an
in-process database cannot have: an address-space limit (RLIMIT_AS) and no file writes at all
(RLIMIT_FSIZE 0), so whatever SQL the agent writes, the trainer's memory and the disk are safe.

Requests (one JSON line each) and what each answers (one JSON line, then ``snapshot`` raw bytes
where the answer says so):
  {"op": "load", "table", "columns": [[name, type]], "rows", "collation"}   a fresh database;
        answers {"ok", "snapshot": n}
  {"op": "restore", "table", "collation", "size": n} + n raw bytes    the database a snapshot holds
  {"op": "exec", "sql", "timeout_s", "max_chars"}  {"text", "error", "wrote", "snapshot"}: the
        result as AgentBench shows it (``str(rows)``, or the error text), cut at max_chars; after a
        statement that may have written, the database follows as a snapshot (the client keeps it
        to restore from if this process has to be killed)
  {"op": "state", "timeout_s"}           {"sha", "md5"} of the task table (null when it is gone or
        is not a table), or {"error"} when reading it failed or ran out of time
  {"op": "reference", "sql", "timeout_s"}  the same two digests after running sql on a copy, or
        {"error"}
"""

import hashlib
import json
import resource
import signal
import sqlite3
import sys
import time
import unicodedata

PAGE_SIZE = 4096
# Only these actions leave the database as it was; after a statement that needs any other one the
# client gets a snapshot, to restore from if this process has to be killed and restarted.
_READ_ONLY = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_PRAGMA,
              sqlite3.SQLITE_RECURSIVE}
_READ_ONLY_PRAGMAS = {"table_info", "table_xinfo", "table_list", "index_list", "index_info", "foreign_key_list"}
_DENIED_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}
GROUP_CONCAT_MAX_LEN = 1024  # MySQL's default group_concat_max_len: AgentBench's hash is cut there


def limit_self(limits):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file write fails with EFBIG instead of killing us
    mem = limits["memory_mb"] << 20
    for res, value in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_FSIZE, 0), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(res, (value, value))


def fold(text):
    """MySQL 8's default collation (utf8mb4_0900_ai_ci) ignores case and accents."""
    return "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c)).casefold()


def agentbench_ci(a, b):
    a, b = fold(a), fold(b)
    return (a > b) - (a < b)


class Session:
    def __init__(self, limits):
        self.limits = limits
        self.conn = None
        self.table = None
        self.wrote = False
        self.deadline = float("inf")

    def connect(self):
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        conn.create_collation("agentbench_ci", agentbench_ci)
        pages = max(16, (self.limits["db_mb"] << 20) // PAGE_SIZE)
        # Set before the authorizer exists: the agent may not run PRAGMAs that write settings.
        for pragma in ("temp_store = MEMORY", f"max_page_count = {pages}", f"temp.max_page_count = {pages}",
                       "trusted_schema = OFF"):
            conn.execute(f"PRAGMA {pragma}")
        if hasattr(conn, "enable_load_extension"):
            conn.enable_load_extension(False)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, self.limits["value_bytes"])
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.set_authorizer(self.authorize)
        conn.set_progress_handler(self.progress, 1000)
        return conn

    def authorize(self, action, arg1, arg2, db_name, trigger):
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_PRAGMA and (arg2 is not None or (arg1 or "").lower() not in _READ_ONLY_PRAGMAS):
            return sqlite3.SQLITE_DENY  # a PRAGMA with a value writes settings (max_page_count among them)
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS:
            return sqlite3.SQLITE_DENY
        if action not in _READ_ONLY:
            self.wrote = True
        return sqlite3.SQLITE_OK

    def progress(self):
        return 1 if time.monotonic() > self.deadline else 0  # non-zero aborts the statement

    def load(self, req):
        if self.conn is not None:
            self.conn.close()
        self.conn, self.table = self.connect(), req["table"]
        collate = " COLLATE agentbench_ci" if req.get("collation") else ""
        cols = ", ".join(f"{quote(name)} {typ or ''}{collate if (typ or '').upper() == 'TEXT' else ''}".strip()
                         for name, typ in req["columns"])
        self.conn.execute(f"CREATE TABLE {quote(self.table)} ({cols})")
        marks = ", ".join("?" for _ in req["columns"])
        self.conn.executemany(f"INSERT INTO {quote(self.table)} VALUES ({marks})", req["rows"])
        return {"ok": True}, self.serialize()

    def serialize(self):
        """The database as bytes. SQLite reads it with PRAGMAs the agent's authorizer refuses."""
        self.conn.set_authorizer(None)
        try:
            return self.conn.serialize()
        finally:
            self.conn.set_authorizer(self.authorize)

    def restore(self, req, data):
        """The database a snapshot holds, with this session's caps set again (they belong to the
        connection's pager, which deserializing replaces)."""
        if self.conn is not None:
            self.conn.close()
        self.conn, self.table = self.connect(), req["table"]
        self.conn.set_authorizer(None)
        self.conn.deserialize(data)
        pages = max(16, (self.limits["db_mb"] << 20) // PAGE_SIZE)
        self.conn.execute(f"PRAGMA max_page_count = {pages}")
        self.conn.set_authorizer(self.authorize)
        return {"ok": True}

    def run(self, conn, sql, timeout_s):
        """Execute with the time budget armed; it stays armed while rows are fetched."""
        self.deadline, self.wrote = time.monotonic() + timeout_s, False
        return conn.execute(sql)

    def exec(self, req):
        limit = req["max_chars"]
        try:
            return self._exec(req, limit)
        finally:
            self.deadline = float("inf")

    def _exec(self, req, limit):
        try:
            cur = self.run(self.conn, req["sql"], req["timeout_s"])
            text = "[]"
            if cur.description:
                rows = []
                # Fetch only what can be shown: str(rows) past max_chars is cut anyway.
                while (row := cur.fetchone()) is not None:
                    rows.append(row)
                    if len(rows) % 64 == 0 and len(str(rows)) > limit:
                        break
                text = str(rows)
            return {"text": cut(text, limit), "error": False, "wrote": self.wrote}
        except (sqlite3.Error, OverflowError, ValueError, MemoryError) as e:
            msg = f"query interrupted: exceeded {req['timeout_s']:g} s" if "interrupted" in str(e) else str(e)
            # A failed statement may still have written (a multi-row INSERT stopped half way).
            return {"text": cut(f"Error: {msg}", limit), "error": True, "wrote": self.wrote}

    def state(self, conn=None, timeout_s=None):
        """Digests of the task table. Only a table counts: a view under its name (which may not
        even finish) is not the table the task asked to change."""
        conn = conn or self.conn
        try:
            kind = conn.execute("SELECT type FROM main.sqlite_master WHERE name = ?", (self.table,)).fetchone()
            if kind is None or kind[0] != "table":
                return {"sha": None, "md5": None}  # the agent dropped, renamed or replaced the table
            cur = self.run(conn, f"SELECT * FROM main.{quote(self.table)}", timeout_s) if timeout_s else \
                conn.execute(f"SELECT * FROM main.{quote(self.table)}")  # main: a TEMP table cannot shadow it
            rows = cur.fetchall()
        except (sqlite3.Error, OverflowError, ValueError, MemoryError) as e:
            return {"error": f"the table could not be read: {e}"}
        finally:
            self.deadline = float("inf")
        return {"sha": canonical_sha(rows), "md5": mysql_md5(rows)}

    def reference(self, req):
        copy = self.connect()
        try:
            self.conn.backup(copy)
            self.run(copy, req["sql"], req["timeout_s"]).fetchall()
            self.deadline = float("inf")
            return self.state(copy)
        except (sqlite3.Error, OverflowError, ValueError, MemoryError) as e:
            return {"error": str(e)}
        finally:
            self.deadline = float("inf")
            copy.close()


def quote(name):
    return '"' + name.replace('"', '""') + '"'


def cut(text, limit):
    """AgentBench's rule: past ``limit`` characters keep the first ``limit`` and a marker."""
    return text if len(text) <= limit else text[:limit] + "[TRUNCATED]"


def mysql_text(value):
    """A stored value as MySQL's CONCAT_WS would print it (AgentBench's columns are all TEXT)."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def mysql_md5(rows):
    """AgentBench's table digest, computed here instead of by MySQL:
    md5(group_concat(rowhash ORDER BY rowhash)), rowhash = left(md5(concat_ws(',', cols...)), 5).
    NULLs are skipped by CONCAT_WS; an empty table gives NULL; group_concat stops at 1024 bytes."""
    if not rows:
        return None
    hashes = sorted(hashlib.md5(",".join(mysql_text(v) for v in r if v is not None).encode()).hexdigest()[:5]
                    for r in rows)
    return hashlib.md5(",".join(hashes)[:GROUP_CONCAT_MAX_LEN].encode()).hexdigest()


def canonical_sha(rows):
    """Order-free digest of every row and value (3.0 and 3 are the same stored value)."""
    def canon(v):
        return int(v) if isinstance(v, float) and v.is_integer() else v
    return hashlib.sha256("\n".join(sorted(repr(tuple(canon(v) for v in r)) for r in rows)).encode()).hexdigest()


def main():
    limits = json.loads(sys.argv[1])
    limit_self(limits)
    session = Session(limits)
    stdin, out = sys.stdin.buffer, sys.stdout.buffer
    while line := stdin.readline():
        req = json.loads(line)
        op, snapshot = req["op"], None
        if op == "load":
            res, snapshot = session.load(req)
        elif op == "restore":
            res = session.restore(req, stdin.read(req["size"]))
        elif op == "exec":
            res = session.exec(req)
            if res["wrote"]:
                snapshot = session.serialize()
        elif op == "state":
            res = session.state(timeout_s=req.get("timeout_s"))
        else:
            res = session.reference(req)
        if snapshot is not None:
            res["snapshot"] = len(snapshot)
        out.write(json.dumps(res).encode() + b"\n" + (snapshot or b""))
        out.flush()


if __name__ == "__main__":
    main()

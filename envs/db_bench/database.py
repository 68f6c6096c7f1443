"""A per-episode SQLite database that an untrusted agent may query.

Containment: in-memory only; ATTACH/DETACH, extension loading and PRAGMA writes are refused by
an authorizer; a progress handler interrupts any statement past its time budget (huge cross
joins, runaway recursive CTEs); string/blob sizes and fetched rows are capped.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time

_DENY = {sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH}
_READ_ONLY_PRAGMAS = {"table_info", "table_xinfo", "table_list", "index_list", "index_info", "foreign_key_list"}
MAX_ROWS = 1000
MAX_VALUE_BYTES = 1_000_000


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class QueryInterrupted(Exception):
    pass


class Database:
    def __init__(self, timeout_s: float = 2.0):
        self.timeout_s = timeout_s
        self.conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self.conn.enable_load_extension(False) if hasattr(self.conn, "enable_load_extension") else None
        self.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
        self.conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        self.conn.set_authorizer(self._authorize)
        self._deadline = float("inf")
        self.conn.set_progress_handler(self._progress, 10_000)

    def _authorize(self, action, arg1, arg2, db_name, trigger):
        if action in _DENY:
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_PRAGMA and (arg2 is not None or (arg1 or "").lower() not in _READ_ONLY_PRAGMAS):
            return sqlite3.SQLITE_DENY  # a PRAGMA with a value writes settings
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in ("load_extension", "readfile", "writefile"):
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    def _progress(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0  # non-zero aborts the statement

    def create_table(self, name: str, columns: list[tuple[str, str]], rows: list[list]) -> None:
        cols = ", ".join(f"{quote_ident(c)} {t or ''}".strip() for c, t in columns)
        self.conn.execute(f"CREATE TABLE {quote_ident(name)} ({cols})")
        marks = ", ".join("?" for _ in columns)
        self.conn.executemany(f"INSERT INTO {quote_ident(name)} VALUES ({marks})", rows)

    def execute(self, sql: str) -> list[tuple]:
        """Run one statement within the time budget; raises sqlite3.Error or QueryInterrupted."""
        self._deadline = time.monotonic() + self.timeout_s
        try:
            cur = self.conn.execute(sql)
            return cur.fetchmany(MAX_ROWS) if cur.description else []
        except sqlite3.OperationalError as e:
            if "interrupted" in str(e):
                raise QueryInterrupted(f"query interrupted: exceeded {self.timeout_s:g} s") from None
            raise
        finally:
            self._deadline = float("inf")

    def table_hash(self, name: str) -> str:
        """Order-independent digest of a table's rows (the modified-table check of AgentBench,
        which compared MySQL md5s; here the expected value is computed on a copy)."""
        rows = self.conn.execute(f"SELECT * FROM {quote_ident(name)}").fetchall()
        canon = sorted(repr(tuple(_canonical(v) for v in r)) for r in rows)
        return hashlib.sha256("\n".join(canon).encode()).hexdigest()

    def close(self) -> None:
        self.conn.close()


def _canonical(v):
    if isinstance(v, float) and v.is_integer():
        return int(v)  # 3.0 and 3 are the same stored value for the check
    return v

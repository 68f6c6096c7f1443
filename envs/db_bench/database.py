"""A per-episode SQLite database that an untrusted agent may query, in a worker process.

Containment (``_worker.py`` has the why): the database lives in a separate process with an
address-space cap and no right to write files; ATTACH/DETACH, extension loading and PRAGMA writes
are refused; pages (main and TEMP, both in memory) are capped; a progress handler interrupts slow
statements, and a statement that does not yield to it is stopped by killing the worker. A new
worker then restores the database from the snapshot taken after the last statement that wrote
(never by replaying statements, whose effects can depend on state a replay does not have), so the
episode goes on as if only the slow statement had failed. Snapshots past 1 MiB wait on disk, not
in the trainer's memory.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from envs._io import wait_readable

WORKER = Path(__file__).resolve().parent / "_worker.py"
GRACE_S = 1.0  # past the budget the progress handler had its chance: the worker is killed


class DatabaseError(RuntimeError):
    """The worker could not be (re)started or restored: the episode ends as env_error."""


@dataclass(frozen=True)
class DBLimits:
    memory_mb: int = 256  # address space of the worker process, MiB
    db_mb: int = 64  # pages of the database, and of TEMP tables, each, MiB
    value_bytes: int = 1_000_000  # longest string or blob (SQLITE_LIMIT_LENGTH)

    def __post_init__(self):
        for key, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"limits.{key}={value!r}: must be a positive integer")


@dataclass
class Table:
    name: str
    columns: list[tuple[str, str]]
    rows: list[list]
    collation: bool = False  # compare TEXT as MySQL does (case- and accent-insensitive)


class Database:
    def __init__(self, timeout_s: float = 2.0, limits: DBLimits = DBLimits()):
        self.timeout_s, self.limits = timeout_s, limits
        self.proc: subprocess.Popen | None = None
        self.table: Table | None = None
        self.snapshot = None  # the database after the last statement that wrote (a spooled file)

    # ---- episode --------------------------------------------------------------------------
    def load(self, table: Table) -> None:
        self.table = table
        self._start()
        self._checked({"op": "load", "table": table.name, "columns": table.columns, "rows": table.rows,
                       "collation": table.collation}, 30.0)

    def execute(self, sql: str, max_chars: int) -> str:
        """The statement's result or error text as the agent sees it (cut at max_chars)."""
        try:
            res = self._call({"op": "exec", "sql": sql, "timeout_s": self.timeout_s, "max_chars": max_chars},
                             self.timeout_s + GRACE_S)
        except _Stopped:
            self._restore()
            return f"Error: query interrupted: exceeded {self.timeout_s:g} s"
        return res["text"]

    def state(self) -> dict:
        """{"sha": digest of every row, "md5": AgentBench's MySQL digest} (None values when the task
        table is gone or is no longer a table), or {"error"} when the table could not be read in
        time: a fact about what the agent left, not a failure of the environment."""
        try:
            return self._call({"op": "state", "timeout_s": self.timeout_s}, self.timeout_s + GRACE_S)
        except _Stopped as e:
            return {"error": f"reading the table did not finish ({e})"}

    def reference(self, sql: str) -> dict:
        """``state()`` of a copy after running sql on it, or {"error": ...}."""
        return self._checked({"op": "reference", "sql": sql, "timeout_s": self.timeout_s}, self.timeout_s + GRACE_S)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc.stdout.close()
            self.proc = None
        if self.snapshot is not None:
            self.snapshot.close()
            self.snapshot = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    # ---- worker ---------------------------------------------------------------------------
    def _start(self) -> None:
        """A worker, started when none runs (first use, or after one was killed)."""
        if self.proc is None or self.proc.poll() is not None:
            self._kill()
            argv = [sys.executable, "-I", "-S", str(WORKER), json.dumps(asdict(self.limits))]
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, close_fds=True)

    def _restore(self) -> None:
        """A new worker holding the database as the last snapshot has it."""
        self._start()
        size = self.snapshot.seek(0, 2)
        self.snapshot.seek(0)
        try:
            self.proc.stdin.write((json.dumps({"op": "restore", "table": self.table.name, "size": size,
                                               "collation": self.table.collation}) + "\n").encode())
            shutil.copyfileobj(self.snapshot, self.proc.stdin)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._kill()
            raise DatabaseError("the database worker exited while its database was restored") from None
        self._checked(None, 30.0)

    def _checked(self, request: dict | None, timeout: float) -> dict:
        try:
            return self._call(request, timeout)
        except _Stopped as e:
            raise DatabaseError(f"the database worker stopped: {e}") from None

    def _call(self, request: dict | None, timeout: float) -> dict:
        """Send ``request`` (None: it was sent already) and read the answer, and the snapshot that
        follows it when there is one."""
        if self.proc is None or self.proc.poll() is not None:
            raise _Stopped("not running")
        if request is not None:
            try:
                self.proc.stdin.write((json.dumps(request) + "\n").encode())
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self._kill()
                raise _Stopped("exited") from None
        if not wait_readable(self.proc.stdout.fileno(), timeout):
            self._kill()
            raise _Stopped(f"no answer within {timeout:g} s")
        line = self.proc.stdout.readline()
        if not line:
            self._kill()
            raise _Stopped("exited (out of memory?)")
        res = json.loads(line)
        if "snapshot" in res:
            self._keep_snapshot(res.pop("snapshot"))
        return res

    def _keep_snapshot(self, size: int) -> None:
        snapshot = tempfile.SpooledTemporaryFile(max_size=1 << 20)
        left = size
        while left:
            chunk = self.proc.stdout.read(min(left, 1 << 20))
            if not chunk:
                snapshot.close()
                self._kill()
                raise _Stopped("exited while sending a snapshot")
            snapshot.write(chunk)
            left -= len(chunk)
        if self.snapshot is not None:
            self.snapshot.close()
        self.snapshot = snapshot

    def _kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                try:
                    pipe.close()
                except OSError:  # unflushed bytes to a dead worker
                    pass
            self.proc = None


class _Stopped(Exception):
    pass

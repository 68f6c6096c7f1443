"""A throwaway Linux sandbox per episode, and the client that talks to its executor.

``Sandbox.start()`` runs ``_launcher.py`` in a fresh Python process, which builds user, mount, pid,
net, ipc and uts namespaces, an overlay root on a size-capped tmpfs, and execs ``_executor.py`` as
pid 1 (see those modules for how and why). ``close()`` ends it: the pid namespace takes every
process with it and the tmpfs, with every file the episode wrote, is gone.

Limits (``SandboxLimits``) are rlimits on every process the agent starts, the tmpfs size, and
per-sandbox cgroups capping processes and total memory.
Unsafe mode (``unsafe=True``) runs the same executor directly on this machine, in a temporary
home directory, with the same rlimits but no isolation: for machines that cannot create
namespaces, and only when the user asks for it.
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from envs._io import wait_readable
from envs.os_interaction import _launcher
from envs.task_env import EnvFailure

HERE = Path(__file__).resolve().parent
SANDBOX_PYTHON = "/usr/bin/python3"  # the executor runs on the sandbox root's own Python
BUILD_BUDGET_S = 30.0  # the executor's own budget for building a judge's view (_executor.BUILD_BUDGET_S)
WALL_FACTOR = 4  # a script's wall-clock backstop in units of its CPU-time limit (_executor.WALL_FACTOR)
INSTALL_HINT = ("the sandbox needs Linux user namespaces (user.max_user_namespaces > 0, and "
                "kernel.unprivileged_userns_clone=1 where that exists), overlayfs, /usr/bin/python3, "
                "and as root a writable cgroup (v1 pids or v2) to cap processes")


class SandboxUnavailable(RuntimeError):
    """This machine cannot create the sandbox; the message says why and what to do."""


class SandboxDied(EnvFailure):
    """The sandbox's executor is gone (out of memory, killed) or broke the protocol."""


@dataclass(frozen=True)
class SandboxLimits:
    memory_mb: int = 1024  # address space of each process (RLIMIT_AS), MiB
    cpu_seconds: int = 60  # CPU time of each process (RLIMIT_CPU), s
    processes: int = 256  # processes at once (a pids cgroup; RLIMIT_NPROC where no cgroup can be made)
    total_memory_mb: int = 4096  # memory of all processes and tmpfs files together (memory cgroup), MiB
    file_mb: int = 64  # largest file a process may write (RLIMIT_FSIZE), MiB
    disk_mb: int = 256  # tmpfs holding every file the episode writes, MiB
    output_bytes: int = 1 << 20  # output of one command kept; past it the command is killed
    open_files: int = 1048576  # open files per process (RLIMIT_NOFILE; Docker's; without root at most what this process may have)

    def __post_init__(self):
        for key, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"limits.{key}={value!r}: must be a positive integer")


@dataclass
class Result:
    output: str  # shell: stdout and stderr interleaved; run: stdout only
    exit_code: int | None  # None: killed (timeout, output flood) or the shell ended
    timed_out: bool = False
    output_limited: bool = False
    shell_restarted: bool = False
    shell_ended: bool = False
    stderr: str = ""  # run: the first 4 KiB of stderr
    output_cut: bool = False  # the output was cut to fit the reply (control characters, escapes)


class Sandbox:
    def __init__(self, limits: SandboxLimits = SandboxLimits(), unsafe: bool = False, hostname: str = "lorarl"):
        self.limits, self.unsafe, self.hostname = limits, unsafe, hostname
        self.proc: subprocess.Popen | None = None
        self.home = "/root"  # the agent's home and working directory (a temp dir in unsafe mode)
        self._pending = b""  # bytes read from the executor past the last frame

    def start(self) -> "Sandbox":
        self.close()
        if self.unsafe:
            self.home = tempfile.mkdtemp(prefix="lorarl-unsafe-")
        config = {"home": self.home, "limits": asdict(self.limits), "isolated": not self.unsafe}
        if self.unsafe:
            argv = [sys.executable, "-I", "-S", str(HERE / "_executor.py"), json.dumps(config)]
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.home, "LANG": "C.UTF-8", "TERM": "dumb"}
        else:
            launch = {"executor": str(HERE / "_executor.py"), "python": SANDBOX_PYTHON, "parent_pid": os.getpid(),
                      "tmpfs_mb": self.limits.disk_mb, "hostname": self.hostname, "hide": _hidden_paths(), "limits": config}
            argv = [sys.executable, "-I", "-S", str(HERE / "_launcher.py"), json.dumps(launch)]
            env = {}
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, close_fds=True)
        self._pending = b""
        try:
            self._read("ready", 30.0)  # once the executor runs
        except SandboxDied:
            # the executor exited (its setup error is on stderr), or _read timed out and closed it
            err = self.proc.stderr.read().decode(errors="replace").strip().splitlines() if self.proc else []
            self.close()
            raise SandboxUnavailable(f"{err[-1] if err else 'sandbox exited during setup'}; {INSTALL_HINT}") from None
        return self

    def seal(self) -> None:
        """End the setup: from here on commands run as the agent and scripts as the judge
        (``_executor.py`` explains the three domains)."""
        res = self._call({"op": "seal"}, 30.0)
        if "error" in res:
            raise SandboxDied(f"could not create the agent's namespaces: {res['error']}")

    def shell(self, cmd: str, timeout: float) -> Result:
        return self._result(self._call({"op": "shell", "cmd": cmd, "timeout": timeout}, timeout))

    def run(self, lang: str, code: str, args: list[str] = (), timeout: float = 30.0, view: str = "judge",
            shell: bool = False) -> Result:
        """AgentBench's independent execution: ``bash -c code -- args`` or ``python3 -c code args``.
        ``timeout``: CPU seconds of each of its processes (a busy machine does not fail a check);
        the wall clock stops it at ``WALL_FACTOR`` times that.
        Before ``seal`` a setup script; after it an example or a check, on ``view``: "pristine" (the
        task as the agent received it) or "judge" (the agent's effect; ``freeze`` first). ``shell``:
        bash code runs as the agent's shell runs a command (what an example sees matches)."""
        return self._result(self._call({"op": "run", "lang": lang, "code": code, "args": list(args), "timeout": timeout,
                                        "view": view, "shell": shell}, timeout * WALL_FACTOR + BUILD_BUDGET_S))

    def snapshot(self, close_shell: bool = False) -> None:
        """Keep the task as it stands now, before the agent acts, as the pristine view."""
        if "error" in (res := self._call({"op": "snapshot", "close_shell": close_shell}, 60.0)):
            raise SandboxDied(f"could not keep the task's state: {res['error']}")

    def freeze(self) -> None:
        """Stop every process of the agent: nothing of it runs while it is judged."""
        if "error" in (res := self._call({"op": "freeze"}, 30.0)):
            raise SandboxDied(f"could not stop the agent's processes: {res['error']}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _result(self, res: dict) -> Result:
        try:
            return Result(**res)
        except TypeError:
            raise SandboxDied(f"the sandbox answered {str(res)[:200]!r}") from None

    def _call(self, request: dict, timeout: float) -> dict:
        if not self.alive:
            raise SandboxDied("the sandbox is not running")
        rid = secrets.token_hex(8)
        try:
            self.proc.stdin.write((json.dumps({**request, "id": rid}) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise SandboxDied("the sandbox's executor exited") from None
        return self._read(rid, timeout + 10.0)  # the executor enforces ``timeout``; this guards a hung executor

    def _read(self, rid: str, timeout: float) -> dict:
        """One framed answer, ``<id> <length>\\n<json>``: the id must be the request's and the
        length bounded, and nothing past the frame is read, so whatever else appears on the pipe
        is a protocol error (the sandbox is dropped), never a result and never unbounded memory."""
        deadline = time.monotonic() + timeout
        header = self._take(lambda buf: buf.find(b"\n") + 1 or (None if len(buf) < 64 else -1), deadline)
        parts = header.split()
        limit = 2 * self.limits.output_bytes + (1 << 16)  # the executor keeps its frames under 2x + 32 KiB
        if len(parts) != 2 or parts[0].decode(errors="replace") != rid or not parts[1].isdigit() or int(parts[1]) > limit:
            self.close(1.0)
            raise SandboxDied(f"protocol error: unexpected reply header {header[:64]!r}")
        size = int(parts[1])
        payload = self._take(lambda buf: size if len(buf) >= size else None, deadline)
        try:
            res = json.loads(payload)
        except ValueError:
            res = None
        if not isinstance(res, dict):
            self.close(1.0)
            raise SandboxDied("protocol error: the reply is not a JSON object")
        return res

    def _take(self, end, deadline: float) -> bytes:
        """Read until ``end(buffer)`` gives how many bytes make the item (-1: malformed)."""
        fd = self.proc.stdout.fileno()
        while (n := end(self._pending)) is None:
            left = deadline - time.monotonic()
            if left <= 0 or not wait_readable(fd, left):
                self.close(1.0)
                raise SandboxDied("no answer from the sandbox in time")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise SandboxDied("the sandbox's executor exited")
            self._pending += chunk
        if n < 0:
            self.close(1.0)
            raise SandboxDied(f"protocol error: unexpected output {self._pending[:64]!r}")
        item, self._pending = self._pending[:n], self._pending[n:]
        return item

    def close(self, grace_s: float = 30.0) -> None:
        """End the sandbox: EOF to the executor, a kill after ``grace_s``, and its cgroups removed."""
        if self.proc is not None:
            # EOF ends the executor, and with pid 1 its whole namespace; the launcher then removes
            # the sandbox's cgroups. Killing the launcher instead would leave those behind (its
            # children still die with it, by PR_SET_PDEATHSIG).
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                _launcher.remove_cgroups(_launcher.sandbox_cgroups(self.proc.pid), 60.0)
            self.proc.stdout.close()
            self.proc.stderr.close()
            self.proc = None
        if self.unsafe and self.home != "/root":
            shutil.rmtree(self.home, ignore_errors=True)
            self.home = "/root"

    def __enter__(self) -> "Sandbox":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the launcher dies with us anyway (PR_SET_PDEATHSIG)
            pass


def _hidden_paths() -> list[str]:
    """Host directories inside the system trees the sandbox sees that hold other people's data
    (/var/tmp, mail, crontabs), or that could hold ours (a home or repo under /var): each is
    covered by an empty directory."""
    paths = {os.path.expanduser("~"), os.getcwd(), str(HERE.parents[1]), tempfile.gettempdir(),
             "/var/tmp", "/var/mail", "/var/spool", "/var/backups"}
    return sorted(p for p in paths if p.startswith(("/usr/", "/etc/", "/var/")))


def max_open_files(limits: SandboxLimits) -> int:
    """The descriptor limit sandbox processes get: ``limits.open_files``, capped by this process's
    hard limit unless the launcher may raise it (root with CAP_SYS_RESOURCE)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    try:
        with open("/proc/self/status") as f:
            caps = int(next(line.split()[1] for line in f if line.startswith("CapEff:")), 16)
        with open("/proc/sys/fs/nr_open") as f:
            nr_open = int(f.read())
    except (OSError, StopIteration, ValueError):
        caps, nr_open = 0, hard
    if os.geteuid() == 0 and caps & (1 << 24):  # CAP_SYS_RESOURCE
        hard = max(hard, nr_open)
    return min(limits.open_files, hard if hard != resource.RLIM_INFINITY else limits.open_files)


@lru_cache(maxsize=None)
def probe() -> str | None:
    """None when a sandbox can be created here; otherwise the reason (cached per process)."""
    if sys.platform != "linux":
        return f"the sandbox needs Linux namespaces (this is {sys.platform})"
    if not os.access(SANDBOX_PYTHON, os.X_OK):
        return f"{SANDBOX_PYTHON} is missing; install python3 from your distribution"
    try:
        with Sandbox(SandboxLimits()) as box:
            out = box.shell("echo ok", 10.0).output.strip()
        return None if out == "ok" else f"sandbox self-test printed {out!r}"
    except (SandboxUnavailable, SandboxDied) as e:
        return str(e)

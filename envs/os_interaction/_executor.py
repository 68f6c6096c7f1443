"""Runs commands for the env inside the sandbox: pid 1 there, framed JSON on stdin -> stdout.

Standard library only: it runs on the sandbox's own /usr/bin/python3, with ``-I -S``.

Where things run, so that nothing the agent does reaches the judge, the expected answers or the
channel to the trainer:
  setup     the executor's own namespaces: the task's init scripts run here, before the agent
            exists. What they leave is the *baseline*; the launcher's overlay layers, which hold
            what they changed, are readable at SETUP_LAYERS.
  agent     created by ``seal``: a nested user namespace, a pid namespace and a root that is an
            overlay over the baseline (the agent's writes land in a layer of their own). The agent
            cannot see the executor (parent pid namespace), has no capability over it, and the
            executor is not dumpable.
  pristine  the task as the agent received it: the baseline plus what the start program had
            written when ``snapshot`` copied it, under a throwaway layer. The task's example (its
            expected answer) runs here at reset, and checks that read the agent's *answer* run
            here when judging, so deleting or rewriting the data a question is about changes no
            expected value.
  judge     the agent's effect, for checks that test what the agent did: its files as data, but
            in the system trees (/usr, /bin, /lib...) only the changes that do not decide which
            code runs: a program under a new name (the "calc" a task asks for), new data,
            permissions and owners, new content of files the task's setup made. The system's
            programs, libraries and interpreters stay the baseline's; a program the agent adds
            under a system program's name is not seen. /etc is a copy of the agent's with the
            dynamic loader's, alternatives' and interpreters' configuration from the baseline.
Examples and checks run in the agent's pid namespace (they see the processes the agent sees, not
the executor's). Before judging, ``freeze`` stops every process of the agent (in its namespace and
in namespaces below it), so nothing of the agent runs while its work is judged; stopped
processes still show in ``ps``, so a task to stop a process is judged as the agent left it.

Requests (one JSON object per line, each with an ``id``) and what each answers:
  {"op": "run", "lang", "code", "args", "timeout", "view", "shell"}   AgentBench's independent
        execution (``bash -c code -- args``, ``python3 -c code args``; C and C++ compiled):
        before ``seal`` in the setup domain, after it in ``view`` "pristine" or "judge".
        ``shell``: run bash code the way the agent's shell runs a command (examples), so that
        what it sees of processes and the environment is what the agent sees.
  {"op": "seal"}                     build the agent domain
  {"op": "shell", "cmd", "timeout"}  run ``cmd`` in the agent's persistent shell (cd and
        variables persist)
  {"op": "snapshot", "close_shell"}  copy what the agent's layers hold now (the pristine task)
  {"op": "freeze"}                   stop every process of the agent
Every answer is framed as ``<id> <length>\\n<json>``: the client reads exactly that much and no
more, and drops the sandbox on anything else.

Why pid 1 does its own fork/exec and reaping (no subprocess): orphans are re-parented to pid 1,
so one ``waitpid(-1)`` loop must reap every child; subprocess would race it.
"""

import ctypes
import fcntl
import itertools
import json
import os
import re
import resource
import select
import shutil
import signal
import stat
import sys
import time

CONFIG = json.loads(sys.argv[1])
HOME = CONFIG["home"]
ISOLATED = CONFIG.get("isolated", False)  # False: unsafe mode, directly on the host
CODE_TREES = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
# Under these (relative to a code tree) every file is code: shared objects, interpreter modules
# and their start-up files (a .pth in dist-packages runs at every Python start).
LIB_DIRS = re.compile(r"^(lib|lib32|lib64|libx32|libexec|local/lib|local/libexec|share/perl|share/python)[^/]*(/|$)")
# In /etc, what decides which code a program runs: the dynamic loader's configuration (a preload
# file or cache could load the agent's library into every check), alternatives symlinks, name
# service modules, interpreters' site configuration and shell start-up files.
ETC_PINNED = ("ld.so.preload", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "nsswitch.conf",
              "bash.bashrc", "profile", "profile.d", "environment", "perl", "gconv")
ETC_PINNED_PREFIXES = ("python",)
STATE = "/run/lorarl"  # the executor's working area in the setup root (hidden from the agent)
SETUP_LAYERS = f"{STATE}/setup"  # the launcher's overlay layers: <tree>/upper is what init changed
HOST = f"{STATE}/host"  # the host's code trees, read-only: the system as it was before the task's init
AGENT = f"{STATE}/agent"  # a tmpfs: the agent's layers, the pristine copy and the judge's layers
SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
# Every Python a check starts: no script or working directory on sys.path (an agent's json.py in
# /root would shadow the standard library), no user site (~/.local/...pth runs code), no .pyc writes.
JUDGE_ENV = {"PATH": ":".join(SYSTEM_PATH), "PYTHONSAFEPATH": "1", "PYTHONNOUSERSITE": "1",
             "PYTHONDONTWRITEBYTECODE": "1"}
JUDGE_PYTHON = ["/usr/bin/python3", "-I"]
# The shell reads NUL-terminated commands from fd 3 and runs each with stdin on /dev/null (a
# command that reads stdin cannot swallow the next one) and without fds 3 and 4, then writes its
# status to fd 4. Nothing in this exchange is secret: a command that writes to fd 4 itself (a
# builtin can reach bash's saved copy) only ends its own wait early, and a stale status is
# drained before the next command is sent.
SHELL_LOOP = r"""
cd "$HOME"
while IFS= read -r -d '' -u 3 __lorarl_cmd; do
  eval "$__lorarl_cmd" </dev/null 3<&- 4>&-
  builtin printf '%s\n' "$?" >&4
done
"""
SHELL_ARGV = ["bash", "--noprofile", "--norc", "-c", SHELL_LOOP]
BUILD_BUDGET_S = 30.0  # building the judge's layers; an agent that makes it take longer fails its check
WALL_FACTOR = 4  # a script's wall-clock backstop, in units of its CPU-time limit

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID = 0x00020000, 0x10000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 4096, 16384, 1 << 18
MS_REMOUNT, MNT_DETACH, PR_SET_DUMPABLE = 32, 2, 4
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
libc = ctypes.CDLL(None, use_errno=True)
status = {}  # pid -> exit code (negative: killed by that signal), filled by reap()


class JudgeError(Exception):
    """A view could not be built or a script could not start: the check fails, with this reason."""


# ---- system calls ---------------------------------------------------------------------------

def check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(src, target, fstype=None, flags=0, data=None):
    check(libc.mount(src.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                     data.encode() if data else None), f"mount {fstype or 'bind'} on {target}")


def unshare(flags):
    check(libc.unshare(flags), "unshare")


def setns(fd, nstype):
    check(libc.setns(fd, nstype), "setns")


def pivot_into(new_root):
    """Make new_root the root of this mount namespace and detach the old one entirely."""
    os.chdir(new_root)
    check(libc.syscall(SYS_PIVOT_ROOT[os.uname().machine], b".", b"."), "pivot_root")
    check(libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")


def overlay(lowers, target, layers=None):
    """An overlay of ``lowers`` (top first) at target: read-only without ``layers``, else with its
    upper and work directories under ``layers``."""
    os.makedirs(target, exist_ok=True)
    if layers is None:
        mount("overlay", target, "overlay", MS_RDONLY, f"lowerdir={':'.join(lowers)},userxattr")
        return
    os.makedirs(f"{layers}/upper")
    os.makedirs(f"{layers}/work")
    mount("overlay", target, "overlay", 0,
          f"lowerdir={':'.join(lowers)},upperdir={layers}/upper,workdir={layers}/work,userxattr")


# ---- processes ------------------------------------------------------------------------------

def reap():
    while True:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        status[pid] = os.waitstatus_to_exitcode(st)


def limit_self(cpu_seconds=None):
    lim = CONFIG["limits"]
    nofile = min(lim["open_files"], resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    cpu = int(cpu_seconds or lim["cpu_seconds"])
    for res, value in ((resource.RLIMIT_AS, lim["memory_mb"] << 20), (resource.RLIMIT_CPU, cpu),
                       (resource.RLIMIT_NPROC, lim["processes"]), (resource.RLIMIT_FSIZE, lim["file_mb"] << 20),
                       (resource.RLIMIT_NOFILE, nofile), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(res, (value, value))


def oom_score(value):
    """The launcher makes the executor the last process the OOM killer picks; the processes it
    starts give that up (raising the score needs no privilege)."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError:
        pass


def fork():
    """os.fork(); when the process cap is reached (a fork bomb), kill the agent's processes first,
    so the env's own requests (the judge above all) still run."""
    for cleanup in (lambda: None, SHELL.close, DOMAINS.kill_agent):
        cleanup()
        try:
            return os.fork()
        except BlockingIOError:
            reap()
    return os.fork()


def child_setup(out_fd, err_fd=None, fds=None, cwd=None, cpu_seconds=None):
    """In a forked child: own session, default signals, stdio on the given pipes (and ``fds``:
    {target fd: fd}), limits (``cpu_seconds``: CPU time of each process, instead of the sandbox's)."""
    os.setsid()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(out_fd, 1)
    os.dup2(out_fd if err_fd is None else err_fd, 2)
    fds = fds or {}
    staged = {target: fcntl.fcntl(fd, fcntl.F_DUPFD, 256) for target, fd in fds.items()}  # above every target
    for target, fd in staged.items():
        os.dup2(fd, target)
    os.closerange(3 + len(fds), 1 << 16)
    try:
        os.chdir(cwd or HOME)
    except OSError:
        os.chdir("/")
    limit_self(cpu_seconds)


def kill_pids(pids, sig=signal.SIGKILL):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def kill_group(pgid):
    """SIGKILL a process group until it is empty; a fork bomb keeps refilling it for a moment."""
    for _ in range(200):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.005)
        reap()


def proc_stat(pid):
    """(state letter, session id) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[3])
    except (OSError, IndexError, ValueError):
        return None


def read_until(fds, deadline, max_bytes, pid):
    """Collect ``fds[0]`` (output) until ``fds[1]`` (a status pipe, optional) gives a line, or
    until ``pid`` exited and the output pipe is quiet. -> (output, status line or None, why)."""
    buf, line = bytearray(), bytearray()
    out_fd, status_fd = fds[0], (fds[1] if len(fds) > 1 else None)
    watch = [fd for fd in (out_fd, status_fd) if fd is not None]
    while True:
        reap()
        left = deadline - time.monotonic()
        if left <= 0:
            return buf, None, "timeout"
        ready = readable(watch, min(left, 0.05))
        if status_fd in ready:
            chunk = os.read(status_fd, 256)
            if chunk:
                line += chunk
                if b"\n" in line:
                    return drain(out_fd, buf, max_bytes), bytes(line.split(b"\n", 1)[0]), "done"
            else:
                watch.remove(status_fd)
        if out_fd in ready:
            chunk = os.read(out_fd, 65536)
            if chunk:
                buf += chunk
                if len(buf) > max_bytes:
                    return buf, None, "limit"
                continue
            watch.remove(out_fd)  # closed by every writer: stop watching it (it would always be ready)
        if pid in status:  # exited; a background child may still hold the pipe, so do not wait for EOF
            return drain(out_fd, buf, max_bytes), None, "exited"


def readable(fds, timeout_s):
    """Those of ``fds`` with data or end of file within ``timeout_s`` (poll: select.select fails
    on descriptor numbers past 1023)."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN | select.POLLPRI)
    return [fd for fd, _ in poller.poll(max(0, int(timeout_s * 1000 + 0.999)))]


def discard(fd, max_bytes=64 << 20, seconds=1.0):
    """Read and drop what ``fd`` holds now, and what its writers add for up to ``seconds`` (a writer
    blocked on the full pipe goes on once it is read), up to ``max_bytes``. A writer that never
    stops floods the next command's output instead, which restarts the shell and its jobs."""
    deadline, total = time.monotonic() + seconds, 0
    while total < max_bytes and time.monotonic() < deadline and readable([fd], 0):
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        total += len(chunk)


def drain(fd, buf, max_bytes):
    while len(buf) <= max_bytes and readable([fd], 0):
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
    return buf


# Control characters the agent's output may hold become U+FFFD (the escape character stays, for
# colour codes the env strips): JSON would escape each to six characters, so a megabyte of NULs
# would outgrow the reply frame.
CONTROLS = {c: 0xFFFD for c in (*range(9), 11, 12, *range(14, 27), *range(28, 32), 127)}


def as_text(raw, limit):
    """What a process printed, as text: cut to ``limit`` bytes *before* decoding, invalid UTF-8 and
    control characters replaced."""
    return bytes(raw[:limit]).decode("utf-8", "replace").translate(CONTROLS)


def exit_code(line):
    """The shell's status line; whatever else a command forged there reads as no code."""
    try:
        return int(line.strip()) if line is not None and len(line) < 16 else None
    except ValueError:
        return None


# ---- the agent domain ---------------------------------------------------------------------------

def id_map(kind):
    """Map the child namespace's ids onto ours one to one (0 -> 0, as many as we have)."""
    with open(f"/proc/self/{kind}_map") as f:
        count = sum(int(line.split()[2]) for line in f if line.strip())
    return f"0 0 {count}\n"


def handshake_child(to_parent, from_parent):
    """In a child that just unshared its user namespace: have the executor write its id maps."""
    os.write(to_parent, b"u")
    if os.read(from_parent, 1) != b"m":
        os._exit(125)
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def handshake_parent(pid, from_child, to_child):
    if os.read(from_child, 1) != b"u":
        return False
    try:
        for kind in ("uid", "gid"):
            with open(f"/proc/{pid}/{kind}_map", "w") as f:
                f.write(id_map(kind))
    except OSError:
        return False
    os.write(to_child, b"m")
    return True


class Domains:
    """The agent's namespaces (after ``seal``) and the processes that belong to the agent."""

    def __init__(self):
        self.sealed = False
        self.init_pid = None  # the agent pid namespace's init, as seen from here
        self.own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY) if ISOLATED else None
        self.agent_ns = {}
        self.trees = []  # the system trees that are real directories here (not /bin -> usr/bin links)
        self.helpers = set()  # sessions of the examples and checks running in the agent's pid namespace
        self.judge_built = False

    def seal(self):
        if not ISOLATED:
            self.sealed = True
            return
        merged = f"{AGENT}/merged"
        os.makedirs(AGENT, exist_ok=True)
        mount("tmpfs", AGENT, "tmpfs", MS_NOSUID, f"size={CONFIG['limits']['disk_mb']}m,mode=700")
        self.trees = [t for t in CONFIG["trees"] if os.path.isdir(f"/{t}") and not os.path.islink(f"/{t}")]
        for name in ["root", *self.trees]:
            base, target = ("/", merged) if name == "root" else (f"/{name}", f"{merged}/{name}")
            overlay([base], target, f"{AGENT}/{name}")
        mask_hidden(merged, f"{AGENT}/masks")  # an overlay's lower layer shows what masks cover
        private_dev(f"{merged}/dev")  # the agent's own: what it writes there, no check sees
        if os.path.ismount("/sys"):
            mount("/sys", f"{merged}/sys", None, MS_BIND | MS_REC)
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        unshare(CLONE_NEWPID)  # our next child is pid 1 of the agent's pid namespace
        pid = os.fork()
        if pid == 0:
            os.close(to_child_w)
            os.close(from_child_r)
            agent_init(merged, from_child_w, to_child_r)
        setns(self.own_pid_ns, CLONE_NEWPID)
        os.close(to_child_r)
        os.close(from_child_w)
        ok = handshake_parent(pid, from_child_r, to_child_w) and os.read(from_child_r, 1) == b"r"
        os.close(to_child_w)
        os.close(from_child_r)
        if not ok:
            raise OSError("the agent's namespaces could not be set up")
        self.init_pid = pid
        self.agent_ns = {k: os.open(f"/proc/{pid}/ns/{k}", os.O_RDONLY) for k in ("pid", "user", "mnt")}
        self.sealed = True

    def fork_in_agent_pid_ns(self):
        """fork(): the child is a process of the agent's pid namespace (after seal)."""
        if not (ISOLATED and self.sealed):
            return fork()
        setns(self.agent_ns["pid"], CLONE_NEWPID)
        pid = -1
        try:
            pid = fork()
        finally:
            if pid != 0:  # the child stays: its own children belong to the agent's namespace too
                setns(self.own_pid_ns, CLONE_NEWPID)
        return pid

    def spawn_agent(self, argv, out_fd, fds):
        """fork + exec in the agent's namespaces (or directly, before seal / in unsafe mode)."""
        if not (ISOLATED and self.sealed):
            return spawn(argv, out_fd, fds=fds)
        pid = self.fork_in_agent_pid_ns()
        if pid == 0:
            try:
                setns(self.agent_ns["mnt"], CLONE_NEWNS)
                setns(self.agent_ns["user"], CLONE_NEWUSER)
                oom_score(1000)
                child_setup(out_fd, fds=fds)
                os.execvpe(argv[0], argv, os.environ)
            finally:
                os._exit(127)
        return pid

    def agent_pids(self):
        """Every process in the agent's pid namespace or in one below it (an agent can unshare its
        own), but its init and our examples and checks: from here those have two or more pids."""
        if not self.agent_ns:
            return []
        pids = []
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == self.init_pid:
                continue
            try:
                with open(f"/proc/{name}/status") as f:
                    nspid = next((line.split()[1:] for line in f if line.startswith("NSpid:")), [])
            except OSError:
                continue
            if len(nspid) >= 2:
                st = proc_stat(name)
                if st and st[1] not in self.helpers:
                    pids.append(int(name))
        return pids

    def kill_agent(self):
        """Every process of the agent but its pid namespace's init (a fork bomb refills for a while)."""
        for _ in range(200):
            pids = self.agent_pids()
            if not pids:
                return
            kill_pids(pids)
            time.sleep(0.005)
            reap()

    def freeze(self):
        """SIGSTOP every process of the agent until none runs (new ones may appear while we go)."""
        if not ISOLATED:
            SHELL.close()  # unsafe mode: the agent's processes are the shell's group
            return
        for _ in range(400):
            running = [pid for pid in self.agent_pids() if (proc_stat(pid) or ("X",))[0] not in "TtZX"]
            if not running:
                return
            kill_pids(running, signal.SIGSTOP)
            time.sleep(0.002)
        self.kill_agent()  # still running after that (uninterruptible, or a race): no longer an agent


def agent_init(merged, to_parent, from_parent):
    """pid 1 of the agent's pid namespace: finish its root, enter its own user namespace, reap."""
    try:
        unshare(CLONE_NEWNS)
        mount("none", "/", None, MS_REC | MS_PRIVATE)
        # A /proc of this pid namespace, mounted while the executor's is still visible (the kernel
        # wants one fully visible proc before it allows another); the old one goes with the old root.
        mount("proc", f"{merged}/proc", "proc", MS_NOSUID | MS_NODEV)
        mask_cmdline(f"{merged}/proc")
        pivot_into(merged)
        unshare(CLONE_NEWUSER)
        handshake_child(to_parent, from_parent)
        os.write(to_parent, b"r")
    except Exception as e:  # noqa: BLE001  reported as a failed seal
        print(f"agent domain: {e}", file=sys.stderr, flush=True)
        os._exit(125)
    os.closerange(0, 1 << 16)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            time.sleep(1.0)


def mask_hidden(root, scratch, prefix="/"):
    """Cover each hidden host path under ``prefix`` (as seen at ``root``) with an empty directory
    made in ``scratch``, as the launcher did in the baseline (the home directory, the repository,
    /var/tmp...)."""
    for i, path in enumerate(CONFIG.get("hide", [])):
        target = root + path[len(prefix) - 1:] if path.startswith(prefix) else None
        if target and os.path.isdir(target) and not os.path.islink(target):
            empty = f"{scratch}/{root.replace('/', '_')}{i}"
            os.makedirs(empty)
            os.chmod(empty, os.stat(target).st_mode & 0o7777)
            mount(empty, target, None, MS_BIND)


def spawn(argv, out_fd, err_fd=None, fds=None, cpu_seconds=None):
    """fork + exec ``argv`` in the setup domain (the executor's own namespaces)."""
    pid = fork()
    if pid:
        return pid
    try:
        oom_score(0)
        child_setup(out_fd, err_fd, fds, cpu_seconds=cpu_seconds)
        os.execvpe(argv[0], argv, os.environ)
    finally:
        os._exit(127)


# ---- layers: the pristine copy and the judge's view of the system trees -------------------------

def is_whiteout(st):
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def copy_meta(src_st, dst, src=None):
    os.chown(dst, src_st.st_uid, src_st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(src_st.st_mode):
        os.chmod(dst, stat.S_IMODE(src_st.st_mode))
        os.utime(dst, ns=(src_st.st_atime_ns, src_st.st_mtime_ns))
    for name in os.listxattr(src, follow_symlinks=False) if src else ():
        if name.startswith("user.overlay."):  # opaque directories, xattr whiteouts
            try:
                os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
            except OSError:
                pass


def copy_layer(src, dst):
    """A copy of an overlay upper layer (files, links, whiteouts, opaque marks): the pristine task.
    Hard links would not do: the agent writes later files of its upper layer in place."""
    os.makedirs(dst, exist_ok=True)
    for entry in os.scandir(src):
        s, d = entry.path, f"{dst}/{entry.name}"
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(d)
            copy_layer(s, d)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(s), d)
        elif stat.S_ISREG(st.st_mode):
            shutil.copyfile(s, d, follow_symlinks=False)
        elif is_whiteout(st):
            try:
                os.mknod(d, stat.S_IFCHR, 0)
            except OSError:
                continue
        else:
            continue  # fifos, sockets, devices: not part of a task's files
        copy_meta(st, d, s)
    copy_meta(os.stat(src), dst, src)


def is_code(rel, st):
    """A baseline file whose content decides what code runs: links (alternatives, /bin/sh),
    executables, and everything in library and interpreter directories."""
    return stat.S_ISLNK(st.st_mode) or bool(LIB_DIRS.match(rel)) or (
        stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111))


def shadows_system_program(tree, rel):
    """A new file in a PATH directory under the name of a program the baseline has on PATH."""
    path = f"/{tree}/{rel}"
    return os.path.dirname(path) in SYSTEM_PATH + ("/usr/games", "/usr/local/games") and any(
        os.path.lexists(f"{d}/{os.path.basename(path)}") for d in SYSTEM_PATH)


def same_content(a, b):
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def task_made(tree, rel):
    """Whether the task's init created this file or changed its content (not only its mode): then
    it is the task's, and the agent's version of it is what the judge sees."""
    if not os.path.lexists(f"{SETUP_LAYERS}/{tree}/upper/{rel}"):
        return False
    made, host = f"/{tree}/{rel}", f"{HOST}/{tree}/{rel}"
    try:
        a, b = os.lstat(made), os.lstat(host)
    except OSError:
        return True
    if stat.S_ISLNK(a.st_mode) and stat.S_ISLNK(b.st_mode):
        return os.readlink(made) != os.readlink(host)
    if stat.S_ISREG(a.st_mode) and stat.S_ISREG(b.st_mode):
        return not same_content(made, host)
    return stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode)


def judge_layer(tree, upper, out, deadline, rel=""):
    """The agent's changes to a system tree that the judge may see, as hard links into ``out``
    (same tmpfs: nothing is copied), to lie over the baseline. Left out: replaced or deleted
    programs and libraries of the system, new files in library directories, and new files that
    would be found on PATH before a system program of the same name. Changes to files the task's
    setup made or rewrote are the agent's to make (a script it was asked to fix)."""
    for entry in os.scandir(f"{upper}/{rel}" if rel else upper):
        if time.monotonic() > deadline:
            raise JudgeError(f"the agent's changes to /{tree} are too many to judge in {BUILD_BUDGET_S:g} s")
        r = f"{rel}/{entry.name}" if rel else entry.name
        st = entry.stat(follow_symlinks=False)
        try:
            base = os.lstat(f"/{tree}/{r}")
        except OSError:
            base = None
        system = base is not None and not task_made(tree, r)
        if stat.S_ISDIR(st.st_mode):
            if base is None and LIB_DIRS.match(r):
                continue
            os.mkdir(f"{out}/{r}")
            copy_meta(st, f"{out}/{r}")
            judge_layer(tree, upper, out, deadline, r)
            continue
        if base is None:
            if LIB_DIRS.match(r) or shadows_system_program(tree, r):
                continue
        elif system and is_code(r, base):
            if is_whiteout(st) or stat.S_ISDIR(base.st_mode) or stat.S_ISLNK(base.st_mode) \
                    or not stat.S_ISREG(st.st_mode) or not same_content(entry.path, f"/{tree}/{r}"):
                continue  # the system's version stays; a mode or owner change of the same file shows
        os.link(entry.path, f"{out}/{r}", follow_symlinks=False)


def build_judge_layers():
    """Once per judging, after ``freeze``: the system trees' layers and the /etc copy."""
    if DOMAINS.judge_built or not ISOLATED:
        return
    deadline = time.monotonic() + BUILD_BUDGET_S
    out = f"{AGENT}/judge"
    shutil.rmtree(out, ignore_errors=True)
    for tree in DOMAINS.trees:
        if tree in CODE_TREES:
            os.makedirs(f"{out}/{tree}")
            judge_layer(tree, f"{AGENT}/{tree}/upper", f"{out}/{tree}", deadline)
    snapshot_etc(f"{AGENT}/merged/etc", f"{out}/etc", deadline)
    DOMAINS.judge_built = True


# The identity databases the judge resolves names with, and the field of each that holds the
# numeric id (None: no id). The agent may add users and groups and change memberships, shells and
# homes, but a name that existed before it acted keeps that id: a line that gave the task's user
# uid 0 would make ``stat -c %U`` name that user on a file that is still root's.
IDENTITY_FILES = {"passwd": 2, "group": 2, "shadow": None, "gshadow": None}


def pin_identities(baseline, agent, id_field):
    """Rewrite the judge's copy ``agent`` of an identity database: the names the baseline has come
    first, in its order, with its ids (their other fields as the agent left them; names the agent
    deleted stay deleted); then the names the agent added, once each. A copy that is missing or
    not a regular file becomes the baseline's."""
    try:
        with open(baseline) as f:
            base = [ln.rstrip("\n") for ln in f if ln.strip()]
    except OSError:
        return
    try:
        if not stat.S_ISREG(os.lstat(agent).st_mode):
            os.unlink(agent)
            raise FileNotFoundError
        with open(agent, errors="replace") as f:
            mine = [ln.rstrip("\n") for ln in f if ln.strip() and not ln.startswith(("+", "-"))]  # no NIS includes
    except OSError:
        mine = base
    by_name = {}
    for line in mine:
        by_name.setdefault(line.split(":", 1)[0], line)
    known = [ln.split(":", 1)[0] for ln in base]
    out = []
    for line in base:
        name = line.split(":", 1)[0]
        if name in by_name:
            fields = by_name[name].split(":")
            if id_field is not None and len(fields) > id_field:
                fields[id_field] = line.split(":")[id_field]
            out.append(":".join(fields))
    out += [by_name[n] for n in by_name if n not in known]
    with open(agent, "w") as f:
        f.write("".join(ln + "\n" for ln in out))
    shutil.copymode(baseline, agent)


def snapshot_etc(agent_etc, target, deadline):
    """A copy of the agent's /etc (what checks read: users, groups, hosts, the task's files) with
    every entry that decides which code runs taken from the baseline instead."""
    pinned = lambda n: n in ETC_PINNED or n.startswith(ETC_PINNED_PREFIXES)  # noqa: E731

    def in_time():
        if time.monotonic() > deadline:
            raise JudgeError(f"the agent's /etc is too large to copy in {BUILD_BUDGET_S:g} s")

    def ignore(d, names):
        in_time()
        return [n for n in names if pinned(n)] if d == agent_etc else []

    def copy_regular(src, dst):  # regular files only: a FIFO or device in /etc would block or leak
        in_time()
        if stat.S_ISREG(os.lstat(src).st_mode):
            shutil.copy2(src, dst, follow_symlinks=False)

    if os.path.isdir(agent_etc) and not os.path.islink(agent_etc):
        shutil.copytree(agent_etc, target, symlinks=True, ignore=ignore, ignore_dangling_symlinks=True,
                        copy_function=copy_regular)
    else:
        os.mkdir(target)
    for name, id_field in IDENTITY_FILES.items():
        pin_identities(f"/etc/{name}", f"{target}/{name}", id_field)
    for name in os.listdir("/etc"):
        if pinned(name):
            src = f"/etc/{name}"
            if os.path.isdir(src) and not os.path.islink(src):
                shutil.copytree(src, f"{target}/{name}", symlinks=True)
            else:
                shutil.copy2(src, f"{target}/{name}", follow_symlinks=False)


# ---- views: the roots examples and checks run on ------------------------------------------------

def pristine_root(root):
    """The task as the agent received it, under a throwaway layer (writes vanish)."""
    merged = f"{root}/m"
    for name in ["root", *DOMAINS.trees]:
        base, target = ("/", merged) if name == "root" else (f"/{name}", f"{merged}/{name}")
        overlay([f"{AGENT}/pristine/{name}", base], target, f"{root}/layers/{name}")
    mask_hidden(merged, f"{root}/masks")
    return merged


def judge_root(root):
    """The agent's state for checks of its effect: its files as data, the system trees as
    ``judge_layer`` filtered them over the baseline (read-only), /etc as ``snapshot_etc`` made it."""
    agent, layers = f"{AGENT}/merged", f"{AGENT}/judge"
    merged = f"{root}/m"
    os.mkdir(merged)
    mount(merged, merged, None, MS_BIND)  # pivot_root needs a mount point
    for name in sorted((set(os.listdir("/")) | set(os.listdir(agent))) - {"proc", "dev", "sys"}):
        base, mine, target = f"/{name}", f"{agent}/{name}", f"{merged}/{name}"
        if name in CODE_TREES and os.path.islink(base):
            os.symlink(os.readlink(base), target)  # merged /usr: /bin -> usr/bin, as in the baseline
        elif name in CODE_TREES and name in DOMAINS.trees:
            overlay([f"{layers}/{name}", base], target)
            mask_hidden(target, f"{root}/masks", f"/{name}/")
        elif name == "etc":
            os.mkdir(target)
            mount(f"{layers}/etc", target, None, MS_BIND)
        elif name not in CODE_TREES:
            attach(mine, target)
    return merged


def attach(source, target):
    """The agent's entry as it is: a directory or file bound in, a symlink copied as a symlink."""
    try:
        st = os.lstat(source)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(source), target)
    elif stat.S_ISDIR(st.st_mode):
        os.mkdir(target)
        mount(source, target, None, MS_BIND | MS_REC)
    elif stat.S_ISREG(st.st_mode):
        open(target, "w").close()
        mount(source, target, None, MS_BIND)


def enter_view(view, root, to_parent, from_parent):
    """In a child forked into the agent's pid namespace: a mount namespace with ``view`` as its
    root and a /proc of that pid namespace, then a user namespace of its own. The view's own
    files live in ``root``, on the agent's tmpfs, so ``df /`` reads there what the agent reads."""
    unshare(CLONE_NEWNS)
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    os.makedirs(root)
    merged = pristine_root(root) if view == "pristine" else judge_root(root)
    for name, flags in (("dev", MS_REC), ("sys", MS_REC)):
        os.makedirs(f"{merged}/{name}", exist_ok=True)
        if os.path.ismount(f"/{name}"):
            mount(f"/{name}", f"{merged}/{name}", None, MS_BIND | flags)
    os.makedirs(f"{merged}/proc", exist_ok=True)
    mount("proc", f"{merged}/proc", "proc", MS_NOSUID | MS_NODEV)
    mask_cmdline(f"{merged}/proc")
    pivot_into(merged)
    unshare(CLONE_NEWUSER)
    handshake_child(to_parent, from_parent)


DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
CMDLINE = f"{STATE}/cmdline"  # what /proc/cmdline shows in the sandbox: not the host's boot line


def private_dev(target):
    """A /dev of its own at ``target``: a small tmpfs with the device nodes bound in from the
    executor's /dev, the usual links and /dev/shm. (The launcher's ``populate_dev`` does the same
    for the sandbox's root; this file runs alone on the sandbox's Python and imports nothing of it.)"""
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755")
    for name in DEVICES:
        if os.path.exists(f"/dev/{name}"):
            open(f"{target}/{name}", "w").close()
            mount(f"/dev/{name}", f"{target}/{name}", None, MS_BIND)
    os.mkdir(f"{target}/shm", 0o1777)
    os.chmod(f"{target}/shm", 0o1777)
    for name, link in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                       ("stderr", "/proc/self/fd/2")):
        os.symlink(link, f"{target}/{name}")


def mask_cmdline(proc):
    if os.path.exists(CMDLINE):
        mount(CMDLINE, f"{proc}/cmdline", None, MS_BIND)


def argv_for(lang, code, args, judge=False):
    """AgentBench's languages: bash gets ``-- args`` ($1 is the first), python gets argv, C and
    C++ are compiled in a fresh temporary directory and run with args. Judges name their
    interpreters by absolute path."""
    bash = "/bin/bash" if judge else "bash"
    if lang == "python":
        return [*(JUDGE_PYTHON if judge else ["python3"]), "-c", code, *args]
    if lang in ("c", "c++", "cpp"):  # AgentBench says c++, LifelongAgentBench cpp
        cc, ext = ("gcc", "c") if lang == "c" else ("g++", "cpp")
        build = (f'd=$(mktemp -d) && printf "%s" "$1" > "$d/main.{ext}" && {cc} -o "$d/a.out" "$d/main.{ext}" '
                 '&& shift && exec "$d/a.out" "$@"')
        return [bash, "-c", build, "--", code, *args]
    return [bash, "-c", code, "--", *args] if args else [bash, "-c", code]


def view_child(view, root, argv, env, out_w, err_w, fds, to_parent, from_parent, cpu_seconds=None):
    try:
        oom_score(0)
        if ISOLATED:
            enter_view(view, root, to_parent, from_parent)
        os.environ.clear()
        os.environ.update(env)
        child_setup(out_w, err_w, fds, cpu_seconds=cpu_seconds)
        os.execve(argv[0], argv, os.environ) if argv[0].startswith("/") else os.execvpe(argv[0], argv, os.environ)
    except Exception as e:  # noqa: BLE001  the view could not be set up: the check fails
        os.write(err_w, f"judge setup failed: {e}".encode()[:4000])
    finally:
        os._exit(125)


# ---- the shell ----------------------------------------------------------------------------------

class Shell:
    def __init__(self):
        self.pid = None

    def ensure(self):
        if self.pid is not None and self.pid not in status:
            return False
        self.close()
        self.out_r, out_w = os.pipe()
        cmd_r, self.cmd_w = os.pipe()
        self.status_r, status_w = os.pipe()
        self.pid = DOMAINS.spawn_agent(SHELL_ARGV, out_w, {3: cmd_r, 4: status_w})
        for fd in (out_w, cmd_r, status_w):
            os.close(fd)
        return True

    def close(self):
        if self.pid is None:
            return
        kill_group(self.pid)
        for fd in (self.out_r, self.cmd_w, self.status_r):
            os.close(fd)
        self.pid = None

    def run(self, cmd, timeout, max_bytes):
        restarted = self.ensure()
        drain(self.status_r, bytearray(), 1 << 16)  # a status a command forged earlier is stale now
        discard(self.out_r)  # what background jobs printed since the last command is not this command's output
        try:
            os.write(self.cmd_w, cmd.replace("\0", "").encode("utf-8", "replace") + b"\0")
        except BrokenPipeError:
            status.setdefault(self.pid, -9)
        buf, line, why = read_until((self.out_r, self.status_r), time.monotonic() + timeout, max_bytes, self.pid)
        if why != "done":  # timed out, flooded or exited: the shell and its jobs go; the next command restarts it
            self.close()
        return {"output": as_text(buf, max_bytes), "exit_code": exit_code(line),
                "timed_out": why == "timeout", "output_limited": why == "limit", "shell_restarted": restarted,
                "shell_ended": why == "exited"}


# ---- independent runs: setup scripts, examples, checks --------------------------------------------

def run(req, max_bytes):
    """An independent script. stdout and stderr are kept apart (checks pass stdout on to the next
    check, as AgentBench does). A failure to set it up is the script's failure, with the reason."""
    try:
        return _run(req, max_bytes)
    except Exception as e:  # noqa: BLE001  what the agent left (a tree too deep to copy, a name too long) fails the check
        return {"output": "", "stderr": f"judge setup failed: {type(e).__name__}: {e}"[:4096], "exit_code": None,
                "timed_out": False, "output_limited": False}


def _run(req, max_bytes):
    view = req.get("view", "setup") if DOMAINS.sealed else "setup"
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    mine, theirs, fds, status_r = [out_r, err_r], [out_w, err_w], {}, None
    try:
        if req.get("shell") and req["lang"] == "bash":  # the example, run the way the agent's commands are
            argv, env = SHELL_ARGV, dict(os.environ)
            cmd_r, cmd_w = os.pipe()
            status_r, status_w = os.pipe()
            mine.append(status_r)
            theirs += [cmd_r, status_w]
            os.write(cmd_w, req["code"].replace("\0", "").encode("utf-8", "replace") + b"\0")
            os.close(cmd_w)  # one command, then EOF ends the loop
            fds = {3: cmd_r, 4: status_w}
        else:
            argv = argv_for(req["lang"], req["code"], req.get("args", []), judge=view != "setup")
            env = {**os.environ, **JUDGE_ENV} if view == "judge" else dict(os.environ)
        if view == "judge":
            build_judge_layers()
        root = f"{AGENT}/views/{next(VIEW_IDS)}"
        pid = start_script(view, root, argv, env, out_w, err_w, fds, req["timeout"])
    finally:
        for fd in theirs:
            os.close(fd)
    try:
        # ``timeout`` is CPU time (each process's RLIMIT_CPU): a script that needs 30 s of CPU passes
        # on a busy machine too. The wall clock only bounds scripts that wait, at WALL_FACTOR times it.
        out, line, why = read_until(mine[::2] if status_r is None else [out_r, status_r],
                                    time.monotonic() + req["timeout"] * WALL_FACTOR, max_bytes, pid)
        if why != "exited":
            kill_group(pid)  # timed out or flooded; or the shell loop, which is done
        err = drain(err_r, bytearray(), 65536)
        reap()
        code = exit_code(line) if why == "done" else status.get(pid) if why == "exited" else None
        status.pop(pid, None)
        DOMAINS.helpers.discard(pid)
        shutil.rmtree(root, ignore_errors=True)
    finally:
        for fd in mine:
            os.close(fd)
    return {"output": as_text(out, max_bytes), "stderr": as_text(err, 4096),
            "exit_code": code, "timed_out": why == "timeout", "output_limited": why == "limit"}


def start_script(view, root, argv, env, out_w, err_w, fds, cpu_seconds=None):
    """Fork the script: in the setup domain, or into the agent's pid namespace and ``view``."""
    if view == "setup":
        return spawn(argv, out_w, err_w, fds, cpu_seconds)
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    pid = DOMAINS.fork_in_agent_pid_ns()
    if pid == 0:
        os.close(to_child_w)
        os.close(from_child_r)
        view_child(view, root, argv, env, out_w, err_w, fds, from_child_w, to_child_r, cpu_seconds)
    DOMAINS.helpers.add(pid)  # its session id: setsid() makes it the leader
    os.close(to_child_r)
    os.close(from_child_w)
    if ISOLATED:
        handshake_parent(pid, from_child_r, to_child_w)
    os.close(to_child_w)
    os.close(from_child_r)
    return pid


def snapshot(req):
    """The pristine task: a copy of the agent's layers before it acts (what the start program
    wrote by now). With ``close_shell`` the shell that ran the start program ends (its jobs run
    on), so that examples see the processes the agent's first command will see."""
    if req.get("close_shell"):
        SHELL.close()
    if ISOLATED:
        for name in ["root", *DOMAINS.trees]:
            copy_layer(f"{AGENT}/{name}/upper", f"{AGENT}/pristine/{name}")
    return {"snapshot": True}


SHELL = Shell()
DOMAINS = None
VIEW_IDS = itertools.count()


def reply(out, rid, res):
    """One frame. Never larger than ``frame_limit()``: an output that would make it larger (escape
    characters JSON writes as six) is cut, and ``output_cut`` says so."""
    payload = json.dumps(res, ensure_ascii=False).encode()
    limit = frame_limit()
    while len(payload) > limit and res.get("output"):
        keep = int(len(res["output"]) * limit / len(payload) * 0.9)
        res = {**res, "output": res["output"][:keep], "output_cut": True}
        payload = json.dumps(res, ensure_ascii=False).encode()
    if len(payload) > limit:  # nothing left to cut: an error message or request gone wrong
        payload = json.dumps({"error": "the reply outgrew its frame"}).encode()
    out.write(f"{rid} {len(payload)}\n".encode() + payload)
    out.flush()


def frame_limit():
    """The largest reply the client accepts (``Sandbox._read``), less a margin."""
    return 2 * CONFIG["limits"]["output_bytes"] + (1 << 15)


def handle(req, max_bytes):
    op = req.get("op")
    if op == "shell":
        return SHELL.run(req["cmd"], req["timeout"], max_bytes)
    if op == "run":
        return run(req, max_bytes)
    if op == "seal":
        DOMAINS.seal()
        return {"sealed": True}
    if op == "snapshot":
        return snapshot(req)
    if op == "freeze":
        DOMAINS.freeze()
        return {"frozen": True}
    return {"error": f"unknown op {op!r}"}


def main():
    global DOMAINS
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    if ISOLATED:
        check(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl")  # /proc/1/fd, /proc/1/mem: closed to all
    if os.path.exists(f"{STATE}/executor.py"):
        os.remove(f"{STATE}/executor.py")  # already in memory; keep the agent's view tidy
    if ISOLATED:
        with open(CMDLINE, "w") as f:
            f.write("ro quiet\n")
    DOMAINS = Domains()
    out = os.fdopen(1, "wb", buffering=0)
    max_bytes = CONFIG["limits"]["output_bytes"]
    reply(out, "ready", {"ready": True})
    for line in sys.stdin:
        try:
            req = json.loads(line)
            rid = str(req["id"])
        except (ValueError, KeyError, TypeError):
            continue  # not from the client (it never sends these): nothing to answer
        try:
            res = handle(req, max_bytes)
        except Exception as e:  # noqa: BLE001  one request failing must not end the executor
            res = {"error": f"{type(e).__name__}: {e}"}
        reply(out, rid, res)
    SHELL.close()


if __name__ == "__main__":
    main()

"""Runs commands for the env inside the sandbox: pid 1 there, framed JSON on stdin -> stdout.

Standard library only: it runs on the sandbox's own /usr/bin/python3, with ``-I -S``.

Three domains, so that nothing the agent does reaches the judge or the channel to the trainer:
  setup  the executor's own namespaces: the task's init scripts run here, before the agent exists.
         What they leave is the *baseline*.
  agent  created by ``seal``: a nested user namespace and pid namespace, and a root that is an
         overlay over the baseline (the agent's writes land in a layer of their own). The agent
         cannot see the executor or the judge (other pid namespace, no way back to their /proc),
         has no capability over them (child user namespace), and the executor is not dumpable,
         so its file descriptors cannot be opened through /proc even by a process that could see it.
  judge  one process per check script, in a user namespace of its own, on a root put together for
         it: the agent's files as data, but the system trees (/usr, /bin, /lib...) are the baseline
         with the agent's *new* files beneath it (an agent's /usr/local/bin/calc is found, its
         replacement of /usr/bin/python3 is not), /etc is a snapshot of the agent's /etc with the
         dynamic loader's and interpreters' configuration taken from the baseline, interpreters
         run by absolute path with system directories first on PATH, Python without site or
         bytecode caches. It sees the agent's processes; the agent cannot see it.

Requests (one JSON object per line, each with an ``id``) and what each answers:
  {"op": "run", "lang", "code", "args", "timeout"}   a fresh ``bash -c code -- args`` or
        ``python3 -c code args``: in the setup domain before ``seal``, in the judge domain after
  {"op": "seal"}                                     build the agent domain
  {"op": "shell", "cmd", "timeout"}  run ``cmd`` in the agent's persistent shell (cd and
        variables persist)
Every answer is framed as ``<id> <length>\\n<json>``: the client reads exactly that much and no
more, and drops the sandbox on anything else.

Why pid 1 does its own fork/exec and reaping (no subprocess): orphans are re-parented to pid 1,
so one ``waitpid(-1)`` loop must reap every child; subprocess would race it.
"""

import ctypes
import json
import os
import resource
import secrets
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
# In /etc, what decides which code a program runs: the dynamic loader's configuration (a preload
# file or cache could load the agent's library into every check), alternatives symlinks, name
# service modules, interpreters' site configuration and shell start-up files.
ETC_PINNED = ("ld.so.preload", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "nsswitch.conf",
              "bash.bashrc", "profile", "profile.d", "environment", "perl", "gconv")
ETC_PINNED_PREFIXES = ("python",)
STATE = "/run/lorarl"  # the executor's working area in the setup root (hidden from the agent)
AGENT_CODE = ".lorarl-agent"  # in the judge's root: the agent's /usr (and /bin...), read-only
_SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
# The baseline's programs first, so an agent's python3 or grep never stands in for the system's;
# then the agent's own programs (a "calc" it installed), found only where the system has none.
JUDGE_PATH = ":".join([*_SYSTEM_PATH[2:], *_SYSTEM_PATH[:2], *(f"/{AGENT_CODE}{d}" for d in _SYSTEM_PATH)])
# Every Python a check starts: no script or working directory on sys.path (an agent's json.py in
# /root would shadow the standard library), no user site (~/.local/...pth runs code), no .pyc writes.
JUDGE_ENV = {"PATH": JUDGE_PATH, "PYTHONSAFEPATH": "1", "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
JUDGE_PYTHON = ["/usr/bin/python3", "-I"]
# The shell reads NUL-terminated (nonce, command) pairs from fd 3 and runs each with stdin on
# /dev/null, so a command that reads stdin cannot swallow the next request.
SHELL_LOOP = r"""
cd "$HOME"
while IFS= read -r -d '' -u 3 __lorarl_nonce && IFS= read -r -d '' -u 3 __lorarl_cmd; do
  eval "$__lorarl_cmd" </dev/null
  builtin printf '\n\036%s %d\n' "$__lorarl_nonce" "$?"
done
"""

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID = 0x00020000, 0x10000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 4096, 16384, 1 << 18
MS_REMOUNT, MNT_DETACH, PR_SET_DUMPABLE = 32, 2, 4
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
libc = ctypes.CDLL(None, use_errno=True)
status = {}  # pid -> exit code (negative: killed by that signal), filled by reap()


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


def limit_self():
    lim = CONFIG["limits"]
    nofile = min(lim["open_files"], resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    for res, value in ((resource.RLIMIT_AS, lim["memory_mb"] << 20), (resource.RLIMIT_CPU, lim["cpu_seconds"]),
                       (resource.RLIMIT_NPROC, lim["processes"]), (resource.RLIMIT_FSIZE, lim["file_mb"] << 20),
                       (resource.RLIMIT_NOFILE, nofile), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(res, (value, value))


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


def child_setup(out_fd, err_fd=None, extra_fd=None, cwd=None):
    """In a forked child: own session, default signals, stdio on the given pipes, limits."""
    os.setsid()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(out_fd, 1)
    os.dup2(out_fd if err_fd is None else err_fd, 2)
    if extra_fd is not None:
        os.dup2(extra_fd, 3)
    os.closerange(4 if extra_fd is not None else 3, 1 << 16)
    try:
        os.chdir(cwd or HOME)
    except OSError:
        os.chdir("/")
    limit_self()


def kill_pids(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
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


def read_until(fd, deadline, done, max_bytes, pid):
    """Collect output until ``done(buf)`` or until ``pid`` exited and its pipe is quiet."""
    buf = bytearray()
    while True:
        reap()
        left = deadline - time.monotonic()
        if left <= 0:
            return buf, "timeout"
        ready, _, _ = select.select([fd], [], [], min(left, 0.05))
        if ready:
            chunk = os.read(fd, 65536)
            if chunk:
                buf += chunk
                if done(buf):
                    return buf, "done"
                if len(buf) > max_bytes:
                    return buf, "limit"
                continue
        if pid in status:  # exited; a background child may still hold the pipe, so do not wait for EOF
            return buf, "exited"


def drain(fd, buf, max_bytes):
    while len(buf) <= max_bytes and select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
    return buf


# ---- the agent and judge domains ----------------------------------------------------------------

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
    """The agent's namespaces (after ``seal``) and how to start processes in each domain."""

    def __init__(self):
        self.sealed = False
        self.init_pid = None  # the agent pid namespace's init, as seen from here
        self.own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY) if ISOLATED else None
        self.agent_ns = {}

    def seal(self):
        if not ISOLATED:
            self.sealed = True
            return
        layers, merged = f"{STATE}/agent", f"{STATE}/agent/merged"
        os.makedirs(layers, exist_ok=True)
        mount("tmpfs", layers, "tmpfs", MS_NOSUID, f"size={CONFIG['limits']['disk_mb']}m,mode=700")
        self.trees = [t for t in CONFIG["trees"] if os.path.isdir(f"/{t}") and not os.path.islink(f"/{t}")]
        self._overlay("/", "root", merged)
        for tree in self.trees:
            self._overlay(f"/{tree}", tree, f"{merged}/{tree}")
        mask_hidden(merged, "/", f"{layers}/masks")  # an overlay's lower layer shows what masks cover
        mount("/dev", f"{merged}/dev", None, MS_BIND | MS_REC)
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
        self.agent_pid_ns_ino = os.fstat(self.agent_ns["pid"]).st_ino
        self.sealed = True

    def _overlay(self, lower, name, target):
        upper, work = f"{STATE}/agent/{name}/upper", f"{STATE}/agent/{name}/work"
        os.makedirs(upper)
        os.makedirs(work)
        os.makedirs(target, exist_ok=True)
        mount("overlay", target, "overlay", 0, f"lowerdir={lower},upperdir={upper},workdir={work},userxattr")

    def spawn_agent(self, argv, out_fd, extra_fd):
        """fork + exec in the agent's namespaces (or directly, before seal / in unsafe mode)."""
        if not (ISOLATED and self.sealed):
            return spawn(argv, out_fd, extra_fd=extra_fd)
        setns(self.agent_ns["pid"], CLONE_NEWPID)
        try:
            pid = fork()
            if pid == 0:
                try:
                    setns(self.agent_ns["mnt"], CLONE_NEWNS)
                    setns(self.agent_ns["user"], CLONE_NEWUSER)
                    child_setup(out_fd, extra_fd=extra_fd)
                    os.execvpe(argv[0], argv, os.environ)
                finally:
                    os._exit(127)
        finally:
            setns(self.own_pid_ns, CLONE_NEWPID)
        return pid

    def agent_pids(self):
        if not self.agent_ns:
            return []
        pids = []
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) != self.init_pid:
                try:
                    if os.stat(f"/proc/{name}/ns/pid").st_ino == self.agent_pid_ns_ino:
                        pids.append(int(name))
                except OSError:
                    pass
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


def agent_init(merged, to_parent, from_parent):
    """pid 1 of the agent's pid namespace: finish its root, enter its own user namespace, reap."""
    try:
        unshare(CLONE_NEWNS)
        mount("none", "/", None, MS_REC | MS_PRIVATE)
        # A /proc of this pid namespace, mounted while the executor's is still visible (the kernel
        # wants one fully visible proc before it allows another); the old one goes with the old root.
        mount("proc", f"{merged}/proc", "proc", MS_NOSUID | MS_NODEV)
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


def mask_hidden(root, prefix, scratch):
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


def spawn(argv, out_fd, err_fd=None, extra_fd=None):
    """fork + exec ``argv`` in the setup domain (the executor's own namespaces)."""
    pid = fork()
    if pid:
        return pid
    try:
        child_setup(out_fd, err_fd, extra_fd)
        os.execvpe(argv[0], argv, os.environ)
    finally:
        os._exit(127)


def judge_root(root):
    """Assemble the judge's root at ``root`` (a fresh tmpfs): the agent's files as data, the system
    trees as the baseline left them, and the agent's own versions of those trees, read-only, under
    ``/.lorarl-agent`` (their bin directories come last on the judge's PATH)."""
    agent = f"{STATE}/agent/merged"
    os.mkdir(f"{root}/{AGENT_CODE}")
    for name in sorted((set(os.listdir("/")) | set(os.listdir(agent))) - {"proc", "dev", "sys"}):
        base, mine, target = f"/{name}", f"{agent}/{name}", f"{root}/{name}"
        if name in CODE_TREES:  # as in the baseline, whatever the agent did to these names
            if os.path.islink(base):
                os.symlink(os.readlink(base), target)  # merged /usr: /bin -> usr/bin
            elif os.path.isdir(base):
                os.mkdir(target)
                bind_read_only(base, target)
            if name in DOMAINS.trees:
                mine_ro = f"{root}/{AGENT_CODE}/{name}"
                os.mkdir(mine_ro)
                mount("overlay", mine_ro, "overlay", MS_RDONLY, f"lowerdir={STATE}/agent/{name}/upper:{base}")
                mask_hidden(mine_ro, f"/{name}/", f"{root}/{AGENT_CODE}/.masks")
        elif name == "etc":
            snapshot_etc(mine, target)
        else:
            attach(mine, target)
    for name, flags in (("proc", 0), ("dev", MS_REC), ("sys", MS_REC)):
        os.mkdir(f"{root}/{name}")
        if os.path.ismount(f"/{name}"):
            mount(f"/{name}", f"{root}/{name}", None, MS_BIND | flags)


def bind_read_only(source, target):
    """A read-only bind. The judge then enters a user namespace without power over this mount
    namespace, so it cannot make it writable again."""
    mount(source, target, None, MS_BIND | MS_REC)
    mount("none", target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)


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


def snapshot_etc(agent_etc, target):
    """A copy of the agent's /etc (what checks read: users, groups, hosts, the task's files) with
    every entry that decides which code runs taken from the baseline instead."""
    st = os.lstat(agent_etc)
    pinned = lambda n: n in ETC_PINNED or n.startswith(ETC_PINNED_PREFIXES)
    if stat.S_ISDIR(st.st_mode):
        shutil.copytree(agent_etc, target, symlinks=True, ignore=lambda d, names: [n for n in names if pinned(n)]
                        if d == agent_etc else [], ignore_dangling_symlinks=True, copy_function=copy_regular)
    else:
        os.mkdir(target)
    for name in os.listdir("/etc"):
        if pinned(name):
            src = f"/etc/{name}"
            if os.path.isdir(src) and not os.path.islink(src):
                shutil.copytree(src, f"{target}/{name}", symlinks=True)
            else:
                shutil.copy2(src, f"{target}/{name}", follow_symlinks=False)


def copy_regular(src, dst):
    """copytree's copy: regular files only (a FIFO or device in /etc would block or leak)."""
    if stat.S_ISREG(os.lstat(src).st_mode):
        shutil.copy2(src, dst, follow_symlinks=False)


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


def judge_child(argv, out_w, err_w, to_parent, from_parent):
    try:
        if ISOLATED:
            unshare(CLONE_NEWNS)
            mount("none", "/", None, MS_REC | MS_PRIVATE)
            root = f"{STATE}/judge"
            os.makedirs(root, exist_ok=True)
            mount("tmpfs", root, "tmpfs", MS_NOSUID, "size=64m,mode=755")
            judge_root(root)
            pivot_into(root)
            unshare(CLONE_NEWUSER)
            handshake_child(to_parent, from_parent)
        os.environ.update(JUDGE_ENV, HOME=HOME)
        child_setup(out_w, err_w)
        os.execve(argv[0], argv, os.environ) if ISOLATED else os.execvpe(argv[0], argv, os.environ)
    except Exception as e:  # noqa: BLE001  the judge could not be set up: the check fails
        os.write(err_w, f"judge setup failed: {e}".encode())
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
        self.pid = DOMAINS.spawn_agent(["bash", "--noprofile", "--norc", "-c", SHELL_LOOP], out_w, cmd_r)
        os.close(out_w)
        os.close(cmd_r)
        return True

    def close(self):
        if self.pid is None:
            return
        kill_group(self.pid)
        os.close(self.out_r)
        os.close(self.cmd_w)
        self.pid = None

    def run(self, cmd, timeout, max_bytes):
        restarted = self.ensure()
        nonce = secrets.token_hex(8)
        marker = b"\n\x1e" + nonce.encode() + b" "
        try:
            os.write(self.cmd_w, nonce.encode() + b"\0" + cmd.replace("\0", "").encode() + b"\0")
        except BrokenPipeError:
            status.setdefault(self.pid, -9)
        end = lambda b: marker in b and b.endswith(b"\n") and b.rfind(marker) < len(b) - len(marker)
        buf, why = read_until(self.out_r, time.monotonic() + timeout, end, max_bytes, self.pid)
        code = None
        if why == "done":
            head, _, tail = bytes(buf).rpartition(marker)
            buf, code = head, int(tail.split()[0])
        else:  # timed out, flooded or exited: the shell and its jobs go; the next command restarts it
            self.close()
        return {"output": bytes(buf).decode("utf-8", "replace"), "exit_code": code, "timed_out": why == "timeout",
                "output_limited": why == "limit", "shell_restarted": restarted, "shell_ended": why == "exited"}


def run(req, max_bytes):
    """An independent script: setup domain before seal, judge domain after. stdout and stderr are
    kept apart (checks pass stdout on to the next check, as AgentBench does)."""
    judge = DOMAINS.sealed
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    argv = argv_for(req["lang"], req["code"], req.get("args", []), judge)
    if judge:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        pid = fork()
        if pid == 0:
            os.close(to_child_w)
            os.close(from_child_r)
            judge_child(argv, out_w, err_w, from_child_w, to_child_r)
        os.close(to_child_r)
        os.close(from_child_w)
        if ISOLATED:
            handshake_parent(pid, from_child_r, to_child_w)
        os.close(to_child_w)
        os.close(from_child_r)
    else:
        pid = spawn(argv, out_w, err_w)
    os.close(out_w)
    os.close(err_w)
    out, why = read_until(out_r, time.monotonic() + req["timeout"], lambda b: False, max_bytes, pid)
    if why != "exited":
        kill_group(pid)
    out = drain(out_r, out, max_bytes) if why == "exited" else out
    err = drain(err_r, bytearray(), 65536)
    os.close(out_r)
    os.close(err_r)
    reap()
    code = status.pop(pid, None) if why == "exited" else None
    return {"output": bytes(out).decode("utf-8", "replace"), "stderr": bytes(err[:4096]).decode("utf-8", "replace"),
            "exit_code": code, "timed_out": why == "timeout", "output_limited": why == "limit"}


SHELL = Shell()
DOMAINS = None


def reply(out, rid, res):
    payload = json.dumps(res).encode()
    out.write(f"{rid} {len(payload)}\n".encode() + payload)
    out.flush()


def main():
    global DOMAINS
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    if ISOLATED:
        check(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl")  # /proc/1/fd, /proc/1/mem: closed to all
    if os.path.exists(f"{STATE}/executor.py"):
        os.remove(f"{STATE}/executor.py")  # already in memory; keep the agent's view tidy
    DOMAINS = Domains()
    out = os.fdopen(1, "wb", buffering=0)
    max_bytes = CONFIG["limits"]["output_bytes"]
    reply(out, "ready", {"ready": True})
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["op"] == "shell":
                res = SHELL.run(req["cmd"], req["timeout"], max_bytes)
            elif req["op"] == "run":
                res = run(req, max_bytes)
            elif req["op"] == "seal":
                DOMAINS.seal()
                res = {"sealed": True}
            else:
                res = {"error": f"unknown op {req['op']!r}"}
        except OSError as e:
            res = {"error": str(e)}
        reply(out, req["id"], res)
    SHELL.close()


if __name__ == "__main__":
    main()

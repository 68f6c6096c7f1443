"""Build one sandbox and exec the executor inside it. Linux only; standard library only.

Run as a fresh, single-threaded Python process (``python -I -S _launcher.py CONFIG_JSON``), never
imported: unsharing a user namespace and forking are only safe in a process with no other threads,
and the env's own process may hold torch's thread pools.

Process tree:
  launcher   host namespaces; writes the child's uid/gid maps, then waits for it
  └─ child   new user, mount, pid, net, ipc and uts namespaces; forks once more so that
     └─ init pid 1 of the new pid namespace: builds the root, pivot_root()s into it and execs
             the executor. When it exits the kernel kills every process left in the namespace.

The root: every run gets a tmpfs (size-capped) holding overlayfs upper layers over the host's
system trees (/usr, /etc, /var and the /bin, /lib... links), fresh empty /root, /home, /tmp, /run,
/opt..., a /dev with only null/zero/full/random/urandom/tty bound in, and a /proc of its own. Host
paths outside the system trees (the home directory, the repository, /work, /mnt) are not in it;
writes land in the tmpfs and vanish with it. There is no network (a fresh net namespace, loopback
only). stdin/stdout are the executor's protocol pipes; setup errors go to stderr, exit status 3.
"""

import ctypes
import fcntl
import json
import os
import platform
import resource
import signal
import socket
import struct
import sys
import time

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_BIND, MS_REC, MS_PRIVATE, MS_REMOUNT = 4096, 16384, 1 << 18, 32
MNT_DETACH, PR_SET_PDEATHSIG = 2, 1
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
SYSTEM_TREES = ("usr", "etc", "var", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
CODE_TREES = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")  # the trees programs and libraries live in
EMPTY_DIRS = ("root", "home", "tmp", "run", "mnt", "srv", "opt", "media", "proc", "sys", "dev")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# Every module is imported before pivot_root: afterwards the host Python's library is out of reach.
STAGE = "/tmp"  # mount point of the per-run tmpfs; mounting over it changes nothing on the host

libc = ctypes.CDLL(None, use_errno=True)


def check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(src, target, fstype=None, flags=0, data=None):
    check(libc.mount(src.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                     data.encode() if data else None), f"mount {fstype or 'bind'} on {target}")


def die_with_parent():
    check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")


def write_maps(pid, uid, gid):
    """Root on the host: map container ids 0-65535 onto the same host ids, so system files stay
    owned by root inside and tasks can add users; the user namespace still confines every
    capability to the sandbox's own mounts and processes. Otherwise map only our own id to 0."""
    if uid == 0:
        maps = ("0 0 65536\n", "0 0 65536\n")
    else:
        with open(f"/proc/{pid}/setgroups", "w") as f:
            f.write("deny")
        maps = (f"0 {uid} 1\n", f"0 {gid} 1\n")
    for name, text in zip(("uid_map", "gid_map"), maps):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(text)


def overlay(tree, new_root):
    host = "/" + tree
    target = f"{new_root}/{tree}"
    if os.path.islink(host):  # merged-/usr systems: /bin -> usr/bin
        os.symlink(os.readlink(host), target)
        return
    if not os.path.isdir(host):
        return
    upper, work = f"{STAGE}/layers/{tree}/upper", f"{STAGE}/layers/{tree}/work"
    os.makedirs(upper)
    os.makedirs(work)
    os.mkdir(target)
    mount("overlay", target, "overlay", 0, f"lowerdir={host},upperdir={upper},workdir={work},userxattr")


def mask(path, new_root, index):
    """Hide a host directory that lies inside a system tree under an empty one."""
    target = new_root + path
    if not os.path.isdir(target) or os.path.islink(target):
        return
    empty = f"{STAGE}/masks/{index}"
    os.makedirs(empty)
    os.chmod(empty, os.stat(target).st_mode & 0o7777)  # /var/tmp stays sticky and world-writable
    mount(empty, target, None, MS_BIND)


def read_only_bind(source, target):
    os.makedirs(target, 0o700, exist_ok=True)
    mount(source, target, None, MS_BIND)
    mount("none", target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)


def populate_dev(new_root):
    dev = f"{new_root}/dev"
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755")
    for name in DEVICES:
        if os.path.exists(f"/dev/{name}"):
            open(f"{dev}/{name}", "w").close()
            mount(f"/dev/{name}", f"{dev}/{name}", None, MS_BIND)
    os.mkdir(f"{dev}/shm", 0o1777)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")


def sanitize_etc(new_root, hostname):
    """The host's /etc is the lower layer: blank its password hashes and drop private keys, and let
    the sandbox's host name resolve (sudo looks it up). When the sandbox maps only a non-root user,
    these files are not writable, and not readable either."""
    etc = f"{new_root}/etc"
    try:
        drop_host_accounts(etc)
        with open(f"{etc}/hosts", "a+") as f:
            f.seek(0)
            if hostname not in f.read().split():
                f.write(f"127.0.1.1\t{hostname}\n")
        for shadow, src, fmt in (("shadow", "passwd", "{}:*:19000:0:99999:7:::"), ("gshadow", "group", "{}:*::")):
            if os.path.exists(f"{etc}/{shadow}"):
                with open(f"{etc}/{src}") as f:
                    names = [line.split(":", 1)[0] for line in f if ":" in line]
                with open(f"{etc}/{shadow}", "w") as f:
                    f.write("".join(fmt.format(n) + "\n" for n in names))
        for d in (f"{etc}/ssh", f"{etc}/ssl/private"):
            if os.path.isdir(d):
                for name in os.listdir(d):
                    if "key" in name or d.endswith("private"):
                        os.remove(f"{d}/{name}")
    except PermissionError:
        pass


HUMAN_IDS = range(1000, 65534)  # the host's people (nobody, 65534, stays: system tools expect it)


def drop_host_accounts(etc):
    """The host's own users and their groups are no business of the task: the sandbox keeps the
    system accounts only (so ``ls -l`` shows no host user's name, and the first user a task
    creates gets uid 1000, as in a fresh image)."""
    with open(f"{etc}/passwd") as f:
        users = [ln for ln in f if ln.count(":") >= 6]
    people = {ln.split(":")[0] for ln in users if _id(ln) in HUMAN_IDS}
    with open(f"{etc}/group") as f:
        groups = [ln for ln in f if ln.count(":") >= 3]
    kept = []
    for ln in groups:
        if _id(ln) in HUMAN_IDS:
            continue
        name, pw, gid, members = ln.rstrip("\n").split(":", 3)
        members = ",".join(m for m in members.split(",") if m and m not in people)
        kept.append(f"{name}:{pw}:{gid}:{members}\n")
    with open(f"{etc}/passwd", "w") as f:
        f.writelines(ln for ln in users if ln.split(":")[0] not in people)
    with open(f"{etc}/group", "w") as f:
        f.writelines(kept)


def _id(line):
    try:
        return int(line.split(":")[2])
    except (IndexError, ValueError):
        return -1


def loopback_up():
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))


def build_root(cfg):
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", STAGE, "tmpfs", MS_NOSUID, f"size={cfg['tmpfs_mb']}m,mode=755")
    new_root = f"{STAGE}/root"
    os.mkdir(new_root, 0o755)
    mount(new_root, new_root, None, MS_BIND)  # pivot_root needs a mount point
    for tree in SYSTEM_TREES:
        overlay(tree, new_root)
    for name in EMPTY_DIRS:
        if not os.path.lexists(f"{new_root}/{name}"):
            os.mkdir(f"{new_root}/{name}", 0o700 if name == "root" else 0o755)
    os.chmod(f"{new_root}/tmp", 0o1777)
    for i, path in enumerate(cfg["hide"]):
        mask(path, new_root, i)
    populate_dev(new_root)
    mount("proc", f"{new_root}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    try:
        mount("sysfs", f"{new_root}/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:
        pass  # some kernels refuse sysfs in a user namespace; tasks rarely need it
    sanitize_etc(new_root, cfg["hostname"])
    os.makedirs(f"{new_root}/run/lorarl/setup", 0o700)
    with open(f"{new_root}/run/lorarl/executor.py", "w") as f:
        f.write(cfg["executor_source"])
    # What the task's init scripts change lands in these upper layers, and the host's code trees lie
    # under them: the executor reads both (read-only) to tell the task's own files from the
    # system's when it builds the judge's view. The agent's overlays do not show these mounts.
    read_only_bind(f"{STAGE}/layers", f"{new_root}/run/lorarl/setup")
    for tree in CODE_TREES:
        if os.path.isdir(f"/{tree}") and not os.path.islink(f"/{tree}"):
            read_only_bind(f"/{tree}", f"{new_root}/run/lorarl/host/{tree}")
    for i, path in enumerate(cfg["hide"]):
        mask(path, f"{new_root}/run/lorarl/host", len(cfg["hide"]) + i)
    old = f"{new_root}/.oldroot"
    os.mkdir(old)
    check(libc.syscall(SYS_PIVOT_ROOT[platform.machine()], new_root.encode(), old.encode()), "pivot_root")
    os.chdir("/")
    check(libc.umount2(b"/.oldroot", MNT_DETACH), "umount old root")
    os.rmdir("/.oldroot")


def init(cfg):
    die_with_parent()
    try:
        build_root(cfg)
        hostname = cfg["hostname"].encode()
        check(libc.sethostname(hostname, len(hostname)), "sethostname")
        loopback_up()
    except Exception as e:  # one line on stderr: the env turns it into its refusal message
        print(f"sandbox setup failed: {e}", file=sys.stderr, flush=True)
        os._exit(3)
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
           "LANG": "C.UTF-8", "USER": "root", "HOSTNAME": cfg["hostname"], "TERM": "dumb"}
    os.execve(cfg["python"], [cfg["python"], "-I", "-S", "/run/lorarl/executor.py", json.dumps(cfg["limits"])], env)


def child(cfg, ready_r, go_w):
    die_with_parent()
    flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    try:
        check(libc.unshare(flags), "unshare")
    except OSError as e:
        print(f"sandbox setup failed: {e}", file=sys.stderr, flush=True)
        os._exit(3)
    os.write(go_w, b"u")
    if os.read(ready_r, 1) != b"m":  # the launcher failed to write our id maps
        os._exit(3)
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    pid = os.fork()
    if pid == 0:
        init(cfg)
    _, status = os.waitpid(pid, 0)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _own_cgroups():
    """{controller or "unified": directory of this process's cgroup there}."""
    mounts = {}
    for line in open("/proc/self/mountinfo"):
        left, right = line.split(" - ", 1)
        fstype, _, opts = right.split()[:3]
        point = left.split()[4]
        if fstype == "cgroup2":
            mounts["unified"] = point
        elif fstype == "cgroup":
            mounts.update({c: point for c in ("pids", "memory") if c in opts.split(",")})
    dirs = {}
    for line in open("/proc/self/cgroup"):
        _, controllers, path = line.rstrip("\n").split(":", 2)
        for key in controllers.split(",") if controllers else ["unified"]:
            if key in mounts:
                dirs[key] = mounts[key] + path.rstrip("/")
    return dirs


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def cgroup_name(launcher_pid):
    return f"lorarl-{launcher_pid}"


def make_cgroups(pid, limits):
    """Put the sandbox in cgroups of its own that cap its process count and memory. Root needs
    this: the kernel exempts host uid 0, which sandbox root maps to, from RLIMIT_NPROC, so a fork
    bomb would exhaust the host's pids. Returns the directories made (empty: none possible)."""
    pids_max, memory_max = str(limits["processes"]), str(limits["total_memory_mb"] << 20)
    own, made, name = _own_cgroups(), [], cgroup_name(os.getpid())
    sweep_stale_cgroups(own)
    try:
        if "pids" in own:  # cgroup v1: one hierarchy per controller
            v1 = {"pids": ("pids.max", pids_max), "memory": ("memory.limit_in_bytes", memory_max)}
            for controller, (limit_file, value) in v1.items():
                if controller in own:
                    made.append(f"{own[controller]}/{name}")
                    os.mkdir(made[-1])
                    _write(f"{made[-1]}/{limit_file}", value)
        elif "unified" in own:  # cgroup v2: controllers must be enabled in the parent
            try:
                _write(f"{own['unified']}/cgroup.subtree_control", "+pids +memory")
            except OSError:
                pass
            made.append(f"{own['unified']}/{name}")
            os.mkdir(made[-1])
            _write(f"{made[-1]}/pids.max", pids_max)
            _write(f"{made[-1]}/memory.max", memory_max)
        for d in made:
            _write(f"{d}/cgroup.procs", str(pid))
        return made
    except OSError:
        remove_cgroups(made, 1.0)
        return []


def _members(d):
    try:
        with open(f"{d}/cgroup.procs") as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


def remove_cgroups(dirs, wait_s=120.0):
    """Remove the sandbox's cgroups, killing whatever is still in them (a process that outlived
    the namespace, a slow exit on a loaded machine) for as long as that takes, up to ``wait_s``."""
    deadline = time.monotonic() + wait_s
    for d in dirs:
        while os.path.isdir(d):
            try:
                os.rmdir(d)
            except OSError:  # busy until its last process is gone
                if time.monotonic() > deadline:
                    break
                try:
                    _write(f"{d}/cgroup.kill", "1")  # cgroup v2: the whole group at once
                except OSError:
                    for member in _members(d):
                        try:
                            os.kill(member, signal.SIGKILL)
                        except OSError:
                            pass
                time.sleep(0.02)


def sandbox_cgroups(launcher_pid, own=None):
    """The cgroup directories the launcher with this pid made (whether or not it still runs)."""
    own = _own_cgroups() if own is None else own
    name = cgroup_name(launcher_pid)
    return [f"{d}/{name}" for d in set(own.values()) if os.path.isdir(f"{d}/{name}")]


def sweep_stale_cgroups(own=None):
    """Remove the cgroups of launchers that are gone (killed before they could clean up)."""
    own = _own_cgroups() if own is None else own
    for d in set(own.values()):
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            if name.startswith("lorarl-") and name[7:].isdigit() and not _alive_launcher(int(name[7:])):
                remove_cgroups([f"{d}/{name}"], 10.0)


def _alive_launcher(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"_launcher.py" in f.read()
    except OSError:
        return False


def main():
    cfg = json.loads(sys.argv[1])
    # The executor overlays these trees again for the agent, and must hide the same paths there.
    cfg["limits"].update(trees=list(SYSTEM_TREES), hide=cfg["hide"])
    with open(cfg["executor"]) as f:
        cfg["executor_source"] = f.read()
    if os.getppid() != cfg["parent_pid"]:
        os._exit(3)
    die_with_parent()
    if os.getuid() == 0:
        try:  # the executor is the last process the OOM killer may pick; it gives up the rest
            _write("/proc/self/oom_score_adj", "-1000")
        except OSError:
            pass
        try:  # Docker's limit (AgentBench's init scripts use file descriptors past 100000); the
            # executor caps each process at limits.open_files
            with open("/proc/sys/fs/nr_open") as f:
                nofile = min(int(f.read()), cfg["limits"]["limits"]["open_files"])
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        except (OSError, ValueError):
            pass
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    uid, gid = os.getuid(), os.getgid()
    pid = os.fork()
    if pid == 0:
        os.close(to_child_w)
        os.close(from_child_r)
        child(cfg, to_child_r, from_child_w)
    os.close(to_child_r)
    os.close(from_child_w)
    cgroups = []
    if os.read(from_child_r, 1) == b"u":
        try:
            cgroups = make_cgroups(pid, cfg["limits"]["limits"])
            if uid == 0 and not cgroups:
                raise OSError("as root the sandbox needs a cgroup (v1 pids or v2) to cap its processes, "
                              "and none could be created")
            write_maps(pid, uid, gid)
            os.write(to_child_w, b"m")
        except OSError as e:
            print(f"sandbox setup failed: {e}", file=sys.stderr, flush=True)
    os.close(to_child_w)
    _, status = os.waitpid(pid, 0)
    remove_cgroups(cgroups)
    sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)


if __name__ == "__main__":
    main()

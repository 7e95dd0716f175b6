"""Linux isolation primitives for the sandbox worker (stdlib + ctypes only): namespaces, mounts, capabilities.

Loaded by `_sandbox_worker.py` by path. `setup_zygote` enters the zygote's namespaces once and reports what the
kernel granted; the rest is called per run. libc is reached through ctypes, loaded once in the zygote; runners drop
every reference before the program starts.
"""

import os
import platform
import struct
import sys


CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = (
    0x20000,
    0x8000000,
    0x10000000,
    0x20000000,
    0x40000000,
)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1,
    2,
    4,
    8,
    32,
    4096,
    16384,
    1 << 18,
)
MNT_DETACH, AT_RECURSIVE, MOUNT_ATTR_RDONLY, SYS_MOUNT_SETATTR = 2, 0x8000, 1, 442  # 442 on x86_64 and arm64 alike
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 36, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, LINUX_CAPABILITY_VERSION_3 = 47, 4, 0x20080522
PIDNS_FD = None  # the zygote's own PID namespace, to return to after each fork into a new one
PROC_FD = None  # the zygote's handle on the real /proc once its own /proc is covered


LIBC = None
CTYPES = None  # the ctypes module, still ours once the zygote has taken it out of sys.modules


def load_ctypes():
    global CTYPES
    if CTYPES is None:
        import ctypes

        CTYPES = ctypes
    return CTYPES


def load_libc():
    """libc through ctypes, loaded once in the zygote; runners drop every reference before the program starts."""
    global LIBC
    if LIBC is None:
        LIBC = load_ctypes().CDLL(None, use_errno=True)
    return LIBC


def check(ret):
    if ret != 0:
        err = load_ctypes().get_errno()
        raise OSError(err, os.strerror(err))


def unshare(flags):
    check(load_libc().unshare(flags))


def mount(source, target, fstype, flags, data=None):
    check(load_libc().mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                         data.encode() if data else None))  # fmt: skip


def _write_file(path, text):
    with open(path, "w") as f:
        f.write(text)


def setup_zygote(uid, use_namespaces, tmpfs_bytes):
    """Enter fresh network + IPC namespaces (as root directly, else inside a user namespace), check that each run
    can get a PID namespace of its own, and report what the kernel granted (`refused` says why it did not).

    Not root: the user namespace comes with a PID namespace, and the process that continues as the zygote is its
    PID 1 (the one that made it only waits). A zygote must own the PID namespace it lives in to switch back to it
    after each `fork_in_new_pid_namespace` (`setns` needs CAP_SYS_ADMIN over it); root owns the host's."""
    global PIDNS_FD
    root = os.geteuid() == 0
    info = {"root": root, "drop_uid": root, "uid": uid, "userns": False, "netns": False, "mountns": False,
            "pidns": False, "readonly_fs": False, "refused": None, "landlock": landlock_abi(),
            "seccomp": seccomp_filter() is not None}  # fmt: skip
    if not use_namespaces:
        info["refused"] = "namespaces=False was requested"
    else:
        try:
            if root:
                unshare(CLONE_NEWNET | CLONE_NEWIPC)
            else:
                real_uid, real_gid = os.geteuid(), os.getegid()
                unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWPID)
                _write_file("/proc/self/setgroups", "deny")
                _write_file("/proc/self/uid_map", f"{real_uid} {real_uid} 1")  # the program sees its own uid
                _write_file("/proc/self/gid_map", f"{real_gid} {real_gid} 1")
                _become_pid1()
                info["userns"] = True  # one uid is mapped in it: programs drop capabilities instead of the uid
            info["netns"] = True
        except OSError as exc:
            what = "unshare(CLONE_NEWNET)" if root else "unshare(CLONE_NEWUSER | CLONE_NEWPID)"
            info["refused"] = f"{what} failed: {exc.strerror} (errno {exc.errno})"
    check(load_libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))  # orphans of our runners become our children
    if not info["netns"]:
        return info
    PIDNS_FD = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    info["pidns"] = _probe(_pidns_probe)
    if not info["pidns"]:
        info["refused"] = "a PID namespace per program was refused inside the sandbox's namespaces"
    info["mountns"] = _probe(_mountns_probe)
    if info["mountns"]:
        hidden = _hidden_prefix() if info["drop_uid"] else _caller_home()
        info["readonly_fs"] = _prepare_mounts(hidden, tmpfs_bytes, root)
    if info["pidns"] and not info["mountns"]:
        info["refused"] = "a mount namespace was refused inside the sandbox's namespaces"
    elif info["pidns"] and not info["readonly_fs"]:
        info["refused"] = "mount_setattr() failed, so host mounts cannot be made read-only (needs Linux >= 5.12)"
    return info


def _become_pid1():
    """fork(): the child, PID 1 of the PID namespace we just unshared, returns and goes on as the zygote; we hand
    our stdin/stdout to it alone, wait, and exit with its status. Each dies with the other."""
    pid = os.fork()
    if pid == 0:
        check(load_libc().prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0))
        return
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)
    status = os.waitpid(pid, 0)[1]
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def fork_in_new_pid_namespace():
    """fork() whose child is PID 1 of a fresh PID namespace. The caller stays in its own, and so do its later
    children: `unshare(CLONE_NEWPID)` applies to children only, and `setns` puts that back after the fork."""
    unshare(CLONE_NEWPID)
    try:
        pid = os.fork()
    except BaseException:
        check(load_libc().setns(PIDNS_FD, CLONE_NEWPID))
        raise
    if pid != 0:
        check(load_libc().setns(PIDNS_FD, CLONE_NEWPID))
    return pid


def _probe(fn):
    """Run `fn` in a forked child; True when it exits 0."""
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(fn())
        except BaseException:
            os._exit(1)
    return os.waitpid(pid, 0)[1] == 0


def _pidns_probe():
    for _ in range(2):  # twice: switching back between runs works too
        pid = fork_in_new_pid_namespace()
        if pid == 0:
            os._exit(0 if os.getpid() == 1 else 1)
        if os.waitpid(pid, 0)[1] != 0:
            return 1
    return 0


def _mountns_probe():
    unshare(CLONE_NEWNS)
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m")
    return 0


def _prepare_mounts(hidden, tmpfs_bytes, root):
    """The zygote's own mount namespace, set up once and shared by its runners (one at a time):

    - /tmp is a private tmpfs of `tmpfs_bytes` and one inode per 16 KiB of it, owned by root; each run gets a fresh /tmp/run owned by the sandbox
      uid, removed afterwards. Nothing a program writes reaches the host's disk or the host's /tmp.
    - every host mount is read-only (`mount_setattr`, Linux >= 5.12): a program cannot change a host file, not even
      one its uid owns (which matters when the caller is not root and the program runs as the caller's uid);
    - /proc and the other world-writable dirs (/var/tmp, /dev/shm, /run/lock) are empty read-only tmpfs: a program
      sees no process at all in /proc (the zygote keeps a handle on the real one for its cleanup scans).
    - when the interpreter sits below a dir others cannot enter (e.g. /root/.pyenv), that dir becomes an empty
      tmpfs holding only the Python prefix, so the rest of it stays hidden. Not root, the program runs as the
      caller's uid and file permissions protect nothing: the caller's home (tokens, keys) is hidden the same way.

    Returns whether the host mounts could be made read-only.
    """
    global PROC_FD
    unshare(CLONE_NEWNS)
    mount("none", "/", None, MS_REC | MS_PRIVATE)  # nothing we mount propagates back to the host
    if not root:  # our PID namespace's own /proc, for our cleanup scans (it names processes as we see them)
        try:
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError:
            pass
    PROC_FD = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)  # runners close it; programs see an empty /proc
    readonly = _readonly_tree("/")
    # nr_inodes: empty files cost no bytes, but each costs kernel memory and cleanup time after the timeout
    inodes = max(1024, tmpfs_bytes >> 14)
    held = _hold_prefixes_below("/tmp")
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmpfs_bytes},nr_inodes={inodes},mode=0755")
    _bind_back_read_only(held)  # a venv or checkout below /tmp (CI, scratch clones) stays usable by programs
    if hidden is not None:
        _expose_prefix(*hidden)
    for path in ("/var/tmp", "/dev/shm", "/run/lock", "/proc"):
        if os.path.isdir(path):
            mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k")
    return readonly


def _readonly_tree(path):
    """Make every mount at and below `path` read-only in our mount namespace (one `mount_setattr` call)."""
    ctypes = load_ctypes()
    attr = struct.pack("=QQQQ", MOUNT_ATTR_RDONLY, 0, 0, 0)  # struct mount_attr: attr_set, attr_clr, propagation, fd
    libc = load_libc()
    libc.syscall.restype = ctypes.c_long
    ret = libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(-100), path.encode(),
                       ctypes.c_uint(AT_RECURSIVE), attr, ctypes.c_size_t(len(attr)))  # fmt: skip
    return ret == 0


def _hold_prefixes_below(top):
    """O_PATH handles on the Python prefixes below `top`, taken before a tmpfs covers it."""
    return [(p, os.open(p, os.O_PATH | os.O_DIRECTORY)) for p in _prefixes() if p.startswith(top + "/")]


KEPT_IN_TMP: set[str] = set()  # names in our private /tmp that hold bound-back prefixes: cleanup leaves them


def _bind_back_read_only(held):
    """Bind each held directory back at its own path (through /proc/self/fd, as its path is now covered)."""
    for path, fd in held:
        KEPT_IN_TMP.add(path.split("/")[2])
        os.makedirs(path, mode=0o755, exist_ok=True)
        mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        mount("none", path, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
        os.close(fd)


def _prefixes():
    """The directories the interpreter needs: its installation and, in a venv, the venv (site-packages)."""
    venv = os.path.dirname(os.path.dirname(os.path.abspath(sys.executable)))  # known under -S too (no site)
    dirs = {sys.base_prefix, sys.prefix, *([venv] if os.path.isfile(os.path.join(venv, "pyvenv.cfg")) else [])}
    return sorted({os.path.realpath(d) for d in dirs})


def _hidden_prefix():
    """(top, prefixes) when a Python prefix sits below a directory the sandbox uid cannot traverse, else None."""
    for prefix in _prefixes():
        top, path = None, "/"
        for part in prefix.strip("/").split("/"):
            path = os.path.join(path, part)
            if top is None and not os.stat(path).st_mode & 0o001:
                top = path
        if top is not None:
            return top, [p for p in _prefixes() if p.startswith(top + "/")]
    return None


def _caller_home():
    """(home, prefixes below it) for the caller's home directory, when it can be hidden (not / nor a prefix)."""
    import pwd

    try:
        home = os.path.realpath(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        return None
    if home == "/" or not os.path.isdir(home) or home in _prefixes():
        return None
    return home, [p for p in _prefixes() if p.startswith(home + "/")]


def _expose_prefix(top, prefixes):
    """Over `top` put an empty read-only tmpfs holding only `prefixes` (paths below it), bound back read-only: the
    Python prefixes, so the interpreter works and the rest stays hidden (also `tests/nonroot.py`'s exposure)."""
    stages = []
    for i, prefix in enumerate(prefixes):
        stage = f"/tmp/.python-stage-{i}"
        os.mkdir(stage)
        mount(prefix, stage, None, MS_BIND | MS_REC)
        stages.append((stage, prefix))
    mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
    for stage, prefix in stages:
        os.makedirs(prefix, mode=0o755, exist_ok=True)
        mount(stage, prefix, None, MS_BIND | MS_REC)
        mount("none", prefix, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
        check(load_libc().umount2(stage.encode(), MNT_DETACH))
        os.rmdir(stage)
    mount("none", top, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)  # nothing to write there


def drop_bounding_set():
    """Empty the capability bounding set (and the ambient set), so that nothing a program execs can bring a
    capability back. Done once in the zygote, which never execs: its own effective capabilities stay, and every
    runner it forks inherits the empty bounding set."""
    libc = load_libc()
    cap = 0
    while libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)


def capset_args():
    """Arguments of `capset(2)` that empty the effective, permitted and inheritable sets (built once, in the
    zygote)."""
    ctypes = load_ctypes()
    return struct.pack("=Ii", LINUX_CAPABILITY_VERSION_3, 0), ctypes.create_string_buffer(24)  # zero, x2 words


def drop_capabilities(args=None):
    """Empty every capability set of this process. Used in a user namespace, where the program keeps the mapped
    uid 0 but must hold no power over the namespace's mounts or members. The bounding set must be empty already
    (`drop_bounding_set`), so nothing an exec'd program runs brings them back."""
    check(load_libc().capset(*(args or capset_args())))


# seccomp: no AF_UNIX socket of the program's own. The network namespace hides abstract unix sockets and every
# interface, but not the host's unix sockets on the file system (a D-Bus or Docker socket, a user's systemd bus), and
# read-only mounts do not stop connect(). socketpair() stays allowed; io_uring (which would bypass seccomp) does not.
PR_SET_SECCOMP, SECCOMP_MODE_FILTER, AF_UNIX = 22, 2, 1
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
# audit arch, socket, memfd_create, (add_key, request_key, keyctl)
SECCOMP_ARCH = {"x86_64": (0xC000003E, 41, 319, (248, 249, 250)), "aarch64": (0xC00000B7, 198, 279, (217, 218, 219))}
SYS_IO_URING_SETUP, X32_SYSCALL_BIT, EPERM, ENOSYS = 425, 0x40000000, 1, 38


def seccomp_filter():
    """The seccomp program (a `struct sock_filter` array, as bytes) that fails `socket(AF_UNIX, ...)`,
    `memfd_create` (memory no rlimit counts: 16 MiB per fd, 2 GiB per process), the kernel keyrings (`add_key`,
    `request_key`, `keyctl`: a key belongs to the uid, not the process, so it would outlive the run and reach the next
    program, and it is charged to the caller's own key quota when not root) and `io_uring_setup` with EPERM /
    ENOSYS, and every syscall of another ABI (i386, x32) with EPERM; None on an architecture we have no syscall
    numbers for."""
    if platform.machine() not in SECCOMP_ARCH:
        return None
    arch, socket_nr, memfd_nr, (add_key, request_key, keyctl) = SECCOMP_ARCH[platform.machine()]
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    program = [
        (ld, 0, 0, 4),  # seccomp_data.arch
        (jeq, 1, 0, arch),
        (ret, 0, 0, SECCOMP_RET_ERRNO | EPERM),
        (ld, 0, 0, 0),  # seccomp_data.nr
        (jge, 9, 0, X32_SYSCALL_BIT),  # -> deny
        (jeq, 9, 0, SYS_IO_URING_SETUP),  # -> ENOSYS
        (jeq, 7, 0, memfd_nr),  # -> deny
        (jeq, 6, 0, add_key),  # -> deny
        (jeq, 5, 0, request_key),  # -> deny
        (jeq, 4, 0, keyctl),  # -> deny
        (jeq, 0, 2, socket_nr),  # else -> allow
        (ld, 0, 0, 16),  # low word of args[0]: the address family
        (jeq, 1, 0, AF_UNIX),  # -> deny
        (ret, 0, 0, SECCOMP_RET_ALLOW),
        (ret, 0, 0, SECCOMP_RET_ERRNO | EPERM),
        (ret, 0, 0, SECCOMP_RET_ERRNO | ENOSYS),
    ]
    return b"".join(struct.pack("=HBBI", *insn) for insn in program)


def install_seccomp(code):
    """Install a seccomp filter (bytes, as from `seccomp_filter`) on this process and its future children. Needs
    `PR_SET_NO_NEW_PRIVS` (or CAP_SYS_ADMIN)."""
    ctypes = load_ctypes()
    buf = ctypes.create_string_buffer(code, len(code))
    prog = struct.pack("@HP", len(code) // 8, ctypes.addressof(buf))  # struct sock_fprog
    check(load_libc().prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, prog, 0, 0))


# Landlock (Linux >= 5.13, unprivileged): the weak mode's kernel-side protection when namespaces are refused.
# https://docs.kernel.org/userspace-api/landlock.html
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446  # all arches alike
LANDLOCK_WRITE = sum(1 << bit for bit in (1, 4, 5, 6, 7, 8, 9, 10, 11, 12))  # write file, remove, make *
LANDLOCK_REFER, LANDLOCK_TRUNCATE, LANDLOCK_FS_WRITE_FILE = 1 << 13, 1 << 14, 1 << 1
LANDLOCK_NET_TCP = (1 << 0) | (1 << 1)  # bind, connect (ABI 4)
LANDLOCK_SCOPE = (1 << 0) | (1 << 1)  # abstract unix sockets, signals (ABI 6)


def _syscall(nr, *args):
    ctypes = load_ctypes()
    libc = load_libc()
    libc.syscall.restype = ctypes.c_long
    return libc.syscall(ctypes.c_long(nr), *args)


def landlock_abi() -> int:
    """The Landlock ABI version the kernel offers (0: none)."""
    ctypes = load_ctypes()
    return max(0, _syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint(1)))


def landlock_confine(workdir, abi):
    """Confine this process and its children: file-system writes only below `workdir` (and to /dev/null); with ABI 4
    no TCP bind/connect; with ABI 6 no signal to, and no abstract unix socket of, any process outside the domain.
    Landlock also denies ptrace (and so /proc/<pid>/mem) of processes outside the domain at every ABI."""
    ctypes = load_ctypes()
    fs = LANDLOCK_WRITE | (LANDLOCK_REFER if abi >= 2 else 0) | (LANDLOCK_TRUNCATE if abi >= 3 else 0)
    attr = struct.pack("=QQQ", fs, LANDLOCK_NET_TCP if abi >= 4 else 0, LANDLOCK_SCOPE if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = _syscall(SYS_LANDLOCK_CREATE_RULESET, attr, ctypes.c_size_t(size), ctypes.c_uint(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        for path, allowed in ((workdir, fs), (os.devnull, LANDLOCK_FS_WRITE_FILE | (fs & LANDLOCK_TRUNCATE))):
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = struct.pack("=Qi", allowed, fd)  # struct landlock_path_beneath_attr (packed)
                check(_syscall(SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(1), rule, ctypes.c_uint(0)))
            finally:
                os.close(fd)
        check(_syscall(SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint(0)))
    finally:
        os.close(ruleset)

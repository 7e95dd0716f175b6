"""Sandbox worker: a zygote that forks one locked-down runner per execution and supervises it (stdlib only).

Started by `sandbox.LocalSandboxProvider` as `python -I -S _sandbox_worker.py --uid N [--no-namespaces]`.
The in-process test harness that runs inside the runner lives in `_sandbox_harness.py`.

    provider (the training process)
      └─ zygote   long-lived clean interpreter, modules preloaded, tests compiled here; its own network, IPC
           │      and mount namespace when allowed; child subreaper; supervises one job at a time: wall-clock timer,
           │      capped output capture, token check, cleanup
           └─ runner  new session; fresh working dir on the zygote's private tmpfs (/proc empty, host /tmp and
                      other world-writable dirs covered); rlimits; its own unprivileged uid; no_new_privs;
                      then the harness runs the program and its tests.

Cleanup: when the runner exits or times out, its process group is killed; anything that escaped the group
(daemonized grandchildren) was reparented to the zygote (subreaper) and dies by uid (`kill(-1)` as the sandbox uid)
or by parent-pid scan. "No children left" is checked with `waitpid`, so the usual case costs nothing.

Protocol, provider <-> zygote over stdin/stdout: 4-byte big-endian length + JSON; a list of jobs, then the list of
their results.
"""

import gc
import importlib.util
import json
import math
import os
import resource
import secrets
import select
import shutil
import signal
import struct
import sys
import time


def _load_harness():
    # By path, never via sys.path: this directory holds `math.py`, which must not shadow the stdlib for anyone.
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_harness.py")
    spec = importlib.util.spec_from_file_location("_sandbox_harness", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


harness = _load_harness()


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
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 24, 36, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, LINUX_CAPABILITY_VERSION_3 = 47, 4, 0x20080522
_PROC_FD = None  # the zygote's handle on the real /proc once its own /proc is covered
_SNAPSHOT = None


_LIBC = None


def _libc():
    """libc through ctypes, loaded once in the zygote; runners drop every reference before the program starts."""
    global _LIBC
    if _LIBC is None:
        import ctypes

        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def _check(ret):
    if ret != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _unshare(flags):
    _check(_libc().unshare(flags))


def _mount(source, target, fstype, flags, data=None):
    _check(_libc().mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                         data.encode() if data else None))  # fmt: skip


def _write_file(path, text):
    with open(path, "w") as f:
        f.write(text)


def _setup_zygote(uid, use_namespaces, tmpfs_bytes):
    """Enter fresh network + IPC namespaces (as root directly, else inside a user namespace), check that each run
    can get a PID namespace of its own, and report what the kernel granted (`refused` says why it did not)."""
    root = os.geteuid() == 0
    info = {"root": root, "drop_uid": root, "uid": uid, "userns": False, "netns": False, "mountns": False,
            "pidns": False, "readonly_fs": False, "refused": None}  # fmt: skip
    _check(_libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))  # orphans of our runners become our children
    if not use_namespaces:
        info["refused"] = "namespaces=False was requested"
        return info
    try:
        if root:
            _unshare(CLONE_NEWNET | CLONE_NEWIPC)
        else:
            real_uid, real_gid = os.geteuid(), os.getegid()
            _unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWIPC)
            _write_file("/proc/self/setgroups", "deny")
            _write_file("/proc/self/uid_map", f"{real_uid} {real_uid} 1")  # the program sees its own uid
            _write_file("/proc/self/gid_map", f"{real_gid} {real_gid} 1")
            info["userns"] = True  # one uid is mapped in it: runners drop capabilities instead of the uid
        info["netns"] = True
    except OSError as exc:
        what = "unshare(CLONE_NEWNET)" if root else "unshare(CLONE_NEWUSER)"
        info["refused"] = f"{what} failed: {exc.strerror} (errno {exc.errno})"
        return info
    info["pidns"] = _probe(_pidns_probe)
    if not info["pidns"]:
        info["refused"] = "unshare(CLONE_NEWPID) failed inside the sandbox's namespaces"
    info["mountns"] = _probe(_mountns_probe)
    if info["mountns"]:
        info["readonly_fs"] = _prepare_mounts(_hidden_prefix() if info["drop_uid"] else None, tmpfs_bytes)
    return info


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
    _unshare(CLONE_NEWPID)
    pid = os.fork()
    if pid == 0:
        os._exit(0 if os.getpid() == 1 else 1)
    return 0 if os.waitpid(pid, 0)[1] == 0 else 1


def _mountns_probe():
    _unshare(CLONE_NEWNS)
    _mount("none", "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m")
    return 0


def _prepare_mounts(hidden, tmpfs_bytes):
    """The zygote's own mount namespace, set up once and shared by its runners (one at a time):

    - /tmp is a private tmpfs of `tmpfs_bytes`, owned by root; each run gets a fresh /tmp/run owned by the sandbox
      uid, removed afterwards. Nothing a program writes reaches the host's disk or the host's /tmp.
    - every host mount is read-only (`mount_setattr`, Linux >= 5.12): a program cannot change a host file, not even
      one its uid owns (which matters when the caller is not root and the program runs as the caller's uid);
    - /proc and the other world-writable dirs (/var/tmp, /dev/shm, /run/lock) are empty read-only tmpfs: a program
      sees no process at all in /proc (the zygote keeps a handle on the real one for its cleanup scans).
    - when the interpreter sits below a dir others cannot enter (e.g. /root/.pyenv), that dir becomes an empty
      tmpfs holding only the Python prefix, so the rest of it stays hidden.

    Returns whether the host mounts could be made read-only.
    """
    global _PROC_FD
    _PROC_FD = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)  # our own view for cleanup scans; runners close it
    _unshare(CLONE_NEWNS)
    _mount("none", "/", None, MS_REC | MS_PRIVATE)  # nothing we mount propagates back to the host
    readonly = _readonly_tree("/")
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmpfs_bytes},mode=0755")
    if hidden is not None:
        _expose_prefix(*hidden)
    for path in ("/var/tmp", "/dev/shm", "/run/lock", "/proc"):
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k")
    return readonly


def _readonly_tree(path):
    """Make every mount at and below `path` read-only in our mount namespace (one `mount_setattr` call)."""
    import ctypes

    attr = struct.pack("=QQQQ", MOUNT_ATTR_RDONLY, 0, 0, 0)  # struct mount_attr: attr_set, attr_clr, propagation, fd
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    ret = libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(-100), path.encode(),
                       ctypes.c_uint(AT_RECURSIVE), attr, ctypes.c_size_t(len(attr)))  # fmt: skip
    return ret == 0


def _hidden_prefix():
    """(top, prefix) when the Python prefix sits below a directory the sandbox uid cannot traverse, else None."""
    prefix, top, path = os.path.realpath(sys.base_prefix), None, "/"
    for part in prefix.strip("/").split("/"):
        path = os.path.join(path, part)
        if top is None and not os.stat(path).st_mode & 0o001:
            top = path
    return None if top is None else (top, prefix)


def _expose_prefix(top, prefix):
    """Over `top` put an empty tmpfs holding only the Python prefix: the interpreter works, the rest stays hidden."""
    stage = "/tmp/.python-stage"
    os.mkdir(stage)
    _mount(prefix, stage, None, MS_BIND | MS_REC)
    _mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
    os.makedirs(prefix, mode=0o755)
    _mount(stage, prefix, None, MS_BIND | MS_REC)
    _mount("none", prefix, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    _check(_libc().umount2(stage.encode(), MNT_DETACH))
    os.rmdir(stage)


def _runner(job, compiled, info, workdir, fds):
    """Child of the zygote. With a PID namespace (the normal case) it forks the program into a fresh one, where the
    program is PID 1, and waits for it: when PID 1 dies the kernel kills everything else in that namespace, so once
    the wait returns nothing of the program is left. Its exit code carries the program's (128 + signal when killed;
    a program's own exit codes above 127 read as 127). Never returns."""
    code = 70
    try:
        if not info["pidns"]:
            _program(job, compiled, info, workdir, fds, supervisors=1)
        os.setsid()  # our own group: the zygote's backstop kill reaches us
        _unshare(CLONE_NEWPID)  # for our children only: the first one is PID 1 of the new namespace
        pid = os.fork()
        if pid == 0:
            _program(job, compiled, info, workdir, fds, supervisors=3)
        os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])  # the program's pipes: EOF once it is gone
        _, status, usage = os.wait4(pid, 0)
        if os.WIFEXITED(status):
            code = min(os.WEXITSTATUS(status), 127)
        else:
            sig = os.WTERMSIG(status)
            if sig == signal.SIGKILL and usage.ru_utime + usage.ru_stime >= job["cpu_seconds"]:
                sig = signal.SIGXCPU  # PID 1 ignores SIGXCPU, so the CPU limit ends it at the hard limit (SIGKILL)
            code = 128 + sig
    except BaseException:
        pass
    os._exit(code)


def _drop_capabilities():
    """Empty every capability set of this process (and the bounding set, so nothing an exec'd program runs
    brings them back). Used in a user namespace, where the program keeps the mapped uid 0 but must hold no power
    over the namespace's mounts or members."""
    import ctypes

    libc = _libc()
    cap = 0
    while libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = struct.pack("=Ii", LINUX_CAPABILITY_VERSION_3, 0)
    _check(libc.capset(header, ctypes.create_string_buffer(24)))  # effective, permitted, inheritable = 0 (x2 words)


def _program(job, compiled, info, workdir, fds, supervisors):
    """The process that runs the program: move fds into place, lock it down, hand over to the harness. Never returns.

    `supervisors`: how many of our own processes share its RLIMIT_NPROC count in a user namespace (zygote, runner,
    this one), so that `processes` means processes of the program."""
    try:
        os.setsid()  # own session and process group: kill(0) and killpg() reach the program's processes only
        out_w, err_w, res_w, tok_r = fds
        high = [os.dup(fd) for fd in (out_w, err_w, res_w, tok_r)]
        null = os.open(os.devnull, os.O_RDONLY)
        for target, fd in zip((0, 1, 2, 3, 4), (null, *high)):
            os.dup2(fd, target)
        os.closerange(5, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        os.set_inheritable(3, False)  # result + token channels never reach programs the user code execs
        os.set_inheritable(4, False)
        os.chdir(workdir)
        lim = job["limits"]
        cpu = job["cpu_seconds"]
        nproc = lim["processes"] + (supervisors - 1 if info["userns"] else 0)
        for res, value in (
            (resource.RLIMIT_CPU, (cpu, cpu + 1)),
            (resource.RLIMIT_AS, (lim["memory_bytes"],) * 2),
            (resource.RLIMIT_FSIZE, (lim["file_bytes"],) * 2),
            (resource.RLIMIT_NOFILE, (lim["open_files"],) * 2),
            (resource.RLIMIT_CORE, (0, 0)),
            (resource.RLIMIT_NPROC, (nproc, nproc)),  # enforced only once we are not root (below)
        ):
            resource.setrlimit(res, value)
        if info["drop_uid"]:
            os.setgroups([])
            os.setgid(info["uid"])
            os.setuid(info["uid"])  # a uid of our own: RLIMIT_NPROC applies, host files are read-only to us
        elif info["userns"]:
            _drop_capabilities()
        libc = _libc()
        _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))  # setuid binaries cannot raise privileges
        _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0))  # supervisor gone -> we are gone
        del libc
        globals()["_LIBC"] = None
        for name in ("ctypes", "_ctypes", "ctypes._endian"):  # a fresh `import ctypes` now hits the audit hook
            sys.modules.pop(name, None)
        os.environ.clear()
        os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
                           "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"})  # fmt: skip
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversized writes fail with EFBIG instead of killing us
        harness.run(job, compiled, _SNAPSHOT, network_block=not info["netns"], proc_visible=not info["mountns"])
    except BaseException:
        pass
    os._exit(70)


def _read_capped(fd, buf, cap):
    """Read what is available; keep at most `cap` bytes. Returns False at EOF."""
    try:
        chunk = os.read(fd, 65536)
    except BlockingIOError:
        return True
    if not chunk:
        return False
    if len(buf) < cap:
        buf += chunk[: cap - len(buf)]
    return True


def _kill_uid(uid):
    """Kill every process of the sandbox uid, escaped daemons included (a helper running as that uid does it)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)  # everything this uid may signal: the sandbox's own processes only
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _children_left():
    """Reap dead children; True while a live one remains. We are a child subreaper, so every descendant of a runner
    that outlived it (daemonized grandchildren included) was reparented to us: no children = nothing left."""
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return True
        except ChildProcessError:
            return False


def _kill_children():
    me, proc = str(os.getpid()), _PROC_FD if _PROC_FD is not None else "/proc"
    for pid in filter(str.isdigit, os.listdir(proc)):
        try:
            fd = os.open(f"{pid}/stat", os.O_RDONLY, dir_fd=_PROC_FD) if _PROC_FD is not None else None
            fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY) if fd is None else fd
            try:
                stat = os.read(fd, 4096).decode()
            finally:
                os.close(fd)
            if stat.rsplit(")", 1)[1].split()[1] == me:
                os.kill(int(pid), signal.SIGKILL)
        except (OSError, IndexError):
            pass


def _cleanup(info, deadline):
    """After the runner is gone: kill and reap whatever it left behind. Cheap when it left nothing (the usual case)."""
    if not _children_left():
        return
    if info["drop_uid"]:
        _kill_uid(info["uid"])
    while _children_left() and time.monotonic() < deadline:
        _kill_children()
        time.sleep(0.002)


_COMPILED = {}


def _compile_tests(job):
    """Tests compiled in the zygote, before any program runs, cached across the completions that share them."""
    if job["kind"] != "asserts":
        return None
    key = (job["setup"], tuple(job["tests"]), bool(job["strict"]))
    if key not in _COMPILED:
        if len(_COMPILED) > 512:
            _COMPILED.clear()
        try:
            setup = harness.compile_setup(key[0], key[2])
            tests = tuple(harness.compile_test(t, key[2]) for t in key[1])
            _COMPILED[key] = (setup, tests, None, harness.names_used(setup, *(t[0] for t in tests)))
        except BaseException as exc:  # a broken test is the dataset's fault; reported, never a pass
            _COMPILED[key] = (None, (), "invalid test code: " + harness._describe(exc), frozenset())
    return _COMPILED[key]


def _supervise(job, info):
    """Run one job: fork the runner, feed it the token, watch the clock, capture output, clean up, decode."""
    limits, compiled = job["limits"], _compile_tests(job)
    job["cpu_seconds"] = int(math.ceil(job["timeout"])) + 1
    if info["mountns"]:
        workdir = "/tmp/run"  # inside our private tmpfs
        shutil.rmtree(workdir, ignore_errors=True)  # normally gone already
        os.mkdir(workdir, 0o700)
        if info["drop_uid"]:
            os.chown(workdir, info["uid"], info["uid"])
    else:
        import tempfile

        workdir = tempfile.mkdtemp(prefix="trl-sandbox-")
        if info["drop_uid"]:
            os.chown(workdir, info["uid"], info["uid"])
    pipes = [os.pipe() for _ in range(4)]  # stdout, stderr, result, token
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _runner(job, compiled, info, workdir, (pipes[0][1], pipes[1][1], pipes[2][1], pipes[3][0]))
    for _r, w in pipes[:3]:
        os.close(w)
    os.close(pipes[3][0])
    token = secrets.token_hex(16).encode()  # generated after the fork: it never existed in the child's memory
    os.write(pipes[3][1], token)
    os.close(pipes[3][1])

    caps = {pipes[0][0]: limits["output_bytes"], pipes[1][0]: limits["output_bytes"], pipes[2][0]: 1 << 26}
    bufs = {fd: bytearray() for fd in caps}
    for fd in caps:
        os.set_blocking(fd, False)
    pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
    deadline = start + job["timeout"]
    open_fds, timed_out, status = set(caps), False, None
    while status is None:
        now = time.monotonic()
        if now >= deadline:
            timed_out = True
            break
        watch = list(open_fds) + ([pidfd] if pidfd is not None else [])
        ready, _, _ = select.select(watch, [], [], min(deadline - now, 0.01 if pidfd is None else 1.0))
        for fd in ready:
            if fd in open_fds and not _read_capped(fd, bufs[fd], caps[fd]):
                open_fds.discard(fd)
        if pidfd is None or pidfd in ready:
            done, raw = os.waitpid(pid, os.WNOHANG)
            status = raw if done else None
    try:
        os.killpg(pid, signal.SIGKILL)  # on timeout: the runner; with it goes its PID namespace (PR_SET_PDEATHSIG)
    except ProcessLookupError:
        pass
    if status is None:
        status = os.waitpid(pid, 0)[1]
    wall = time.monotonic() - start
    _cleanup(info, time.monotonic() + 2.0)
    while open_fds:  # every writer is dead now: drain to EOF
        for fd in select.select(list(open_fds), [], [], 0.1)[0] or list(open_fds):
            if not _read_capped(fd, bufs[fd], caps[fd]) or not select.select([fd], [], [], 0)[0]:
                open_fds.discard(fd)
    for fd in (*caps, *([pidfd] if pidfd is not None else [])):
        os.close(fd)
    try:
        os.rmdir(workdir)  # the usual case: the program wrote nothing
    except OSError:
        shutil.rmtree(workdir, ignore_errors=True)
    if info["mountns"] and info["userns"]:  # the program owns our /tmp in a user namespace: leave nothing behind
        for name in os.listdir("/tmp"):
            shutil.rmtree(os.path.join("/tmp", name), ignore_errors=True)

    out, err, res = (bytes(bufs[p[0]]) for p in pipes[:3])
    exit_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    if info["pidns"] and exit_code is not None and exit_code >= 128:  # the runner reports the program's signal
        exit_code, sig = None, exit_code - 128
    result = {"wall_time": wall, "stdout": out.decode("utf-8", "replace"), "stderr": err.decode("utf-8", "replace"),
              "exit_code": exit_code, "signal": sig}  # fmt: skip
    if timed_out or result["signal"] == signal.SIGXCPU:
        total = len(job["inputs"]) if job["kind"] == "stdio" else len(job["tests"])
        return dict(result, status="timeout", passed=0, total=total, detail="time limit exceeded")
    return dict(result, **harness.decode(res, token, job))


# --------------------------------------------------------------------------------------------------------- zygote
def _recv(fd):
    head = _read_exact(fd, 4)
    if head is None:
        return None
    return json.loads(_read_exact(fd, struct.unpack(">I", head)[0]))


def _read_exact(fd, n):
    data = bytearray()
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def _send(fd, obj):
    data = json.dumps(obj).encode()
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data) :]


def _run_one(job, info):
    try:
        return _supervise(job, info)
    except Exception as exc:  # a supervisor bug must not look like a verdict
        return {"status": "error", "detail": f"sandbox failure: {exc!r}"}


def main(argv):
    uid = int(argv[argv.index("--uid") + 1])
    tmpfs_bytes = int(argv[argv.index("--tmpfs-bytes") + 1]) if "--tmpfs-bytes" in argv else 64 << 20
    info = _setup_zygote(uid, "--no-namespaces" not in argv, tmpfs_bytes)
    harness.preload()
    global _SNAPSHOT
    _SNAPSHOT = harness.snapshot()  # the interpreter state every runner starts from, taken once
    gc.freeze()  # forked runners then share these pages instead of copying them on the first collection
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    _send(1, info)
    while (jobs := _recv(0)) is not None:
        _send(1, [_run_one(job, info) for job in jobs])


if __name__ == "__main__":
    main(sys.argv)

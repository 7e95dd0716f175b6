"""Sandbox worker: a zygote that forks one locked-down program per execution and supervises it (stdlib only).

Started by `sandbox.LocalSandboxProvider` as `python -I -S _sandbox_worker.py --uid N [--no-namespaces]`.
The in-process test harness lives in `_sandbox_harness.py`; namespaces, mounts, capabilities and Landlock in
`_sandbox_kernel.py`.

    provider (the training process)
      └─ zygote   long-lived clean interpreter, modules preloaded, tests compiled here; its own network, IPC and
           │      mount namespaces (inside a user namespace when not root); host mounts read-only, private /tmp,
           │      empty /proc; child subreaper; supervises one job at a time: wall-clock timer, capped output,
           │      token check, cleanup
           └─ program  forked straight into a fresh PID namespace (the zygote `setns`-es back after the fork):
                       its PID 1, own session; fresh working dir; rlimits; its own uid (root) or no capabilities
                       (user namespace); no_new_privs; then the harness runs the program and its tests.

Cleanup: when the program exits or times out, it is killed; as PID 1 it takes its whole namespace with it, and the
zygote's `waitpid` returns only once that namespace is empty. In the weak mode (no PID namespace) its group is killed,
and anything that escaped the group was reparented to the zygote (subreaper) and dies by uid (`kill(-1)` as the
sandbox uid) or by parent-pid scan. "No children left" is checked with `waitpid`, so the usual case costs nothing.

Protocol, provider <-> zygote over stdin/stdout: 4-byte big-endian length + JSON; a list of jobs, then the list of
their results.
"""

import gc
import importlib.util
import json
import math
import os
import resource
import select
import shutil
import signal
import struct
import sys
import time


def _load(name):
    # By path, never via sys.path: this directory holds `math.py`, which must not shadow the stdlib for anyone.
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


harness = _load("_sandbox_harness")
kernel = _load("_sandbox_kernel")


_SNAPSHOT = None
_SECCOMP = kernel.seccomp_filter()
_CAPSET = None  # capset(2) arguments that empty every capability set (user namespace only)
RUN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}  # + HOME, TMPDIR
WORKDIR = "/tmp/run"  # each run's working dir inside the private tmpfs (namespaces granted)


def _prepare_runners(info):
    """What every runner would otherwise redo: done once in the zygote, and inherited through fork. A runner then
    only does what depends on its own run (fds, working dir, rlimits) and the privilege drop. The zygote itself never
    execs and runs no untrusted code, so none of this weakens it. The seccomp filter (no connect() to the host's unix
    sockets, even from a program a runner execs) is the zygote's own from here on, so every runner starts under it."""
    global _CAPSET
    os.environ.clear()  # the runner's environment, scrubbed (the zygote was started with PATH and LANG only)
    os.environ.update(RUN_ENV)
    if info["mountns"]:
        os.environ.update({"HOME": WORKDIR, "TMPDIR": WORKDIR})
    # every signal is at its default (`_default_signals`) but this one:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversized writes fail with EFBIG instead of killing the runner
    libc = kernel.load_libc()
    if _SECCOMP is not None:  # no AF_UNIX socket(), memfd_create, keyrings, io_uring: for us and every runner
        kernel.check(libc.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))  # we never exec: nothing to lose
        kernel.install_seccomp(_SECCOMP)  # once here: the kernel compiles each filter it is given
    for name in ("unshare", "prctl", "capset"):  # resolved once here, not in every runner
        getattr(libc, name)
    for name in ("ctypes", "_ctypes", "ctypes._endian"):  # a fresh `import ctypes` in a program hits the audit hook
        sys.modules.pop(name, None)  # (`kernel.CTYPES` keeps ours)
    if info["userns"]:
        kernel.drop_bounding_set()  # runners drop the rest of their capabilities with one capset
        _CAPSET = kernel.capset_args()


def _program(job, compiled, info, workdir, fds):
    """Child of the zygote that runs the program: PID 1 of a fresh PID namespace (except in the weak mode). Moves
    fds into place, locks itself down, hands over to the harness. Never returns."""
    try:
        os.setsid()  # own session and process group: kill(0) and killpg() reach the program's processes only
        libc = kernel.load_libc()
        if info["netns"]:  # SysV shared memory, semaphores and message queues of its own, freed when the run ends
            kernel.check(libc.unshare(kernel.CLONE_NEWIPC))
        out_w, err_w, res_w, tok_r = fds
        high = [os.dup(fd) for fd in (out_w, err_w, res_w, tok_r)]
        null = os.open(os.devnull, os.O_RDONLY)
        for target, fd in zip((0, 1, 2, 3, 4), (null, *high)):
            os.dup2(fd, target, inheritable=target < 3)  # result + token channels never reach programs it execs
        os.closerange(5, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        os.chdir(workdir)
        lim = job["limits"]
        cpu = job["cpu_seconds"]
        nproc = lim["processes"] + (2 if info["userns"] else 0)  # the zygote and its parent share our count there
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
            kernel.drop_capabilities(_CAPSET)  # the bounding set is empty already (`_prepare_runners`)
        kernel.check(libc.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))  # setuid binaries cannot raise privileges
        kernel.check(libc.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0))  # supervisor gone -> we are gone
        # Not dumpable: no process of ours (the program's own children included) may ptrace or process_vm_readv us,
        # which would read the token. As root the uid change already did this; in a user namespace nothing did.
        kernel.check(libc.prctl(kernel.PR_SET_DUMPABLE, 0, 0, 0, 0))
        if not info["pidns"] and info["landlock"]:  # weak mode: Landlock keeps signals, ptrace and writes inside
            kernel.landlock_confine(workdir, info["landlock"])
        del libc
        kernel.LIBC = kernel.CTYPES = None
        if not info["mountns"]:  # the environment is the zygote's (`_prepare_runners`), but for the working dir
            os.environ.update({"HOME": workdir, "TMPDIR": workdir})
        harness.run(job, compiled, _SNAPSHOT)
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
    proc = kernel.PROC_FD if kernel.PROC_FD is not None else "/proc"
    try:  # our pid as that /proc names it (the zygote may be PID 1 of its own namespace)
        me = os.readlink("self", dir_fd=kernel.PROC_FD) if kernel.PROC_FD is not None else os.readlink("/proc/self")
    except OSError:
        return
    for pid in filter(str.isdigit, os.listdir(proc)):
        try:
            fd = os.open(f"{pid}/stat", os.O_RDONLY, dir_fd=kernel.PROC_FD) if kernel.PROC_FD is not None else None
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


def _remove(path):
    """Remove what a program left at `path`: a directory tree, a file, or a symlink (removed, never followed). A file
    or symlink left behind would reach the next program, and one in place of the working dir would fail every run."""
    try:
        os.unlink(path)
    except IsADirectoryError:
        shutil.rmtree(path, ignore_errors=True)
    except OSError:
        pass


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
        workdir = WORKDIR  # inside our private tmpfs
        try:
            os.mkdir(workdir, 0o700)
        except FileExistsError:  # normally removed after the last run
            _remove(workdir)
            os.mkdir(workdir, 0o700)
        if info["drop_uid"]:
            os.chown(workdir, info["uid"], info["uid"])
    else:
        import tempfile

        workdir = tempfile.mkdtemp(prefix="trl-sandbox-")
        if info["drop_uid"]:
            os.chown(workdir, info["uid"], info["uid"])
    pipes = [os.pipe() for _ in range(4)]  # stdout, stderr, result, token
    caps = {pipes[0][0]: limits["output_bytes"], pipes[1][0]: limits["output_bytes"], pipes[2][0]: 1 << 26}
    bufs = {fd: bytearray() for fd in caps}
    for fd in caps:
        os.set_blocking(fd, False)
    open_fds, timed_out, status = set(caps), False, None
    start = time.monotonic()
    deadline = start + job["timeout"]
    # A fresh PID namespace per program: kill(-1), getppid(), killpg() and ptrace reach only its own processes, and
    # when its PID 1 (the program) dies, the kernel kills the rest.
    pid = kernel.fork_in_new_pid_namespace() if info["pidns"] else os.fork()
    if pid == 0:
        _program(job, compiled, info, workdir, (pipes[0][1], pipes[1][1], pipes[2][1], pipes[3][0]))
    # Little work while the runner lives (each page written now is copied for us), most of it prepared above.
    for _r, w in pipes[:3]:
        os.close(w)
    os.close(pipes[3][0])
    token = os.urandom(16).hex().encode()  # generated after the fork: it never existed in the child's memory
    os.write(pipes[3][1], token)
    os.close(pipes[3][1])
    pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
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
            done, raw, usage = os.wait4(pid, os.WNOHANG)
            status = raw if done else None
    try:
        os.killpg(pid, signal.SIGKILL)  # on timeout: the program (PID 1: its whole namespace goes with it)
    except ProcessLookupError:
        pass
    if status is None:
        _, status, usage = os.wait4(pid, 0)
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
        _remove(workdir)
    if info["mountns"] and info["userns"]:  # the program owns our /tmp in a user namespace: leave nothing behind
        for name in set(os.listdir("/tmp")) - kernel.KEPT_IN_TMP:
            _remove(os.path.join("/tmp", name))

    out, err, res = (bytes(bufs[p[0]]) for p in pipes[:3])
    exit_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    if sig == signal.SIGKILL and usage.ru_utime + usage.ru_stime >= job["cpu_seconds"]:
        sig = signal.SIGXCPU  # PID 1 ignores SIGXCPU: the CPU limit ends it at the hard limit, with SIGKILL
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


def _default_signals():
    """Every signal at its default disposition, none blocked. SIG_IGN and the signal mask survive execve, and `Popen`
    restores only SIGPIPE and SIGXFSZ: a caller that ignores SIGCHLD would break our `waitpid`, and one that ignores
    or blocks SIGTERM or SIGHUP would pass that on to every program (and to what it execs)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    for sig in signal.valid_signals():
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):  # signals the C library reserves for itself
                pass


def main(argv):
    _default_signals()  # first: `setup_zygote` waits for children
    uid = int(argv[argv.index("--uid") + 1])
    tmpfs_bytes = int(argv[argv.index("--tmpfs-bytes") + 1]) if "--tmpfs-bytes" in argv else 64 << 20
    info = kernel.setup_zygote(uid, "--no-namespaces" not in argv, tmpfs_bytes)
    _prepare_runners(info)
    harness.preload()
    global _SNAPSHOT
    _SNAPSHOT = harness.snapshot(network_block=not info["netns"], proc_visible=not info["mountns"])
    gc.freeze()  # forked runners then share these pages instead of copying them on the first collection
    _send(1, info)
    while (jobs := _recv(0)) is not None:
        _send(1, [_run_one(job, info) for job in jobs])


if __name__ == "__main__":
    main(sys.argv)

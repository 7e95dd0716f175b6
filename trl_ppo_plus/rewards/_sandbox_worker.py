"""Sandbox worker: a zygote that forks one supervised, namespaced, rlimited child per execution (stdlib only).

Started by `sandbox.LocalSandboxProvider` as `python -I -S _sandbox_worker.py --uid N [--no-namespaces]`.
The in-process test harness that runs inside the child lives in `_sandbox_harness.py`.

Process tree of one execution:

    provider (the training process)
      └─ zygote       long-lived clean interpreter, modules preloaded; own network + IPC namespace when allowed
           └─ supervisor  one per execution: new session, new PID + mount namespace, private tmpfs on /tmp,
                │         wall-clock timer, capped output capture, checks the harness token
                └─ runner PID 1 of that namespace: rlimits, unprivileged uid, no_new_privs, then the harness.
                          When it exits or is killed, the kernel kills everything left in the namespace.

Protocol, provider <-> zygote over stdin/stdout: 4-byte big-endian length + JSON, one job, one result.
"""

import importlib.util
import json
import math
import os
import resource
import secrets
import select
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


CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER = 0x00020000, 0x08000000, 0x10000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
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
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38
WORLD_WRITABLE = ("/var/tmp", "/dev/shm", "/run/lock")  # bound to the private tmpfs so nothing lands on the host


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


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


def _setup_zygote(uid, use_namespaces):
    """Enter a fresh network + IPC namespace (as root directly, else via a user namespace), report what worked."""
    info = {"netns": False, "namespaces": False, "root": os.geteuid() == 0, "uid": uid}
    if not use_namespaces:
        return info
    try:
        if os.geteuid() == 0:
            _unshare(CLONE_NEWNET | CLONE_NEWIPC)
        else:
            real_uid, real_gid = os.geteuid(), os.getegid()
            _unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWIPC)
            _write_file("/proc/self/setgroups", "deny")
            _write_file("/proc/self/uid_map", f"0 {real_uid} 1")
            _write_file("/proc/self/gid_map", f"0 {real_gid} 1")
        info["netns"] = True
    except OSError:
        return info
    # Probe once whether each execution can get its own PID + mount namespace.
    pid = os.fork()
    if pid == 0:
        try:
            _unshare(CLONE_NEWPID | CLONE_NEWNS)
            _mount("none", "/", None, MS_REC | MS_PRIVATE)
            _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m")
            os._exit(0)
        except BaseException:
            os._exit(1)
    info["namespaces"] = os.waitpid(pid, 0)[1] == 0
    info["hidden"] = _hidden_prefix() if info["root"] else None
    return info


# ----------------------------------------------------------------------------------------------------- supervisor
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


def _enter_job_namespaces(uid, tmpfs_bytes, hidden):
    """New PID + mount namespace; a private, size-capped tmpfs is /tmp (and every world-writable dir), /proc is empty."""
    _unshare(CLONE_NEWPID | CLONE_NEWNS)
    _mount("none", "/", None, MS_REC | MS_PRIVATE)  # nothing we mount propagates back to the host
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmpfs_bytes},mode=0700,uid={uid},gid={uid}")
    for path in WORLD_WRITABLE:
        if os.path.isdir(path):
            try:
                _mount("/tmp", path, None, MS_BIND)
            except OSError:
                pass
    if hidden is not None:  # the interpreter lives under a dir others cannot enter (e.g. /root/.pyenv)
        _expose_prefix(*hidden)
    # An empty read-only /proc: no /proc/self/mem, no view of host processes.
    _mount("tmpfs", "/proc", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k")


def _runner(job, info, workdir, fds):
    """Child side: move fds into place, lock the process down, hand over to the harness. Never returns."""
    try:
        os.setpgid(0, 0)  # our own process group, so the fallback path can kill it as a whole
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
        cpu = int(math.ceil(job["timeout"])) + 1
        for res, value in (
            (resource.RLIMIT_CPU, (cpu, cpu + 1)),
            (resource.RLIMIT_AS, (lim["memory_bytes"],) * 2),
            (resource.RLIMIT_FSIZE, (lim["file_bytes"],) * 2),
            (resource.RLIMIT_NOFILE, (lim["open_files"],) * 2),
            (resource.RLIMIT_CORE, (0, 0)),
            (resource.RLIMIT_NPROC, (lim["processes"],) * 2),  # enforced only once we are not root (below)
        ):
            resource.setrlimit(res, value)
        libc = _libc()
        if os.geteuid() == 0 and not info.get("userns"):
            os.setgroups([])
            os.setgid(info["uid"])
            os.setuid(info["uid"])  # a uid of our own: RLIMIT_NPROC applies, host files are read-only to us
        _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))  # setuid binaries cannot raise privileges
        _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0))  # supervisor gone -> we are gone
        del libc
        for name in ("ctypes", "_ctypes", "ctypes._endian"):  # a fresh `import ctypes` now hits the audit hook
            sys.modules.pop(name, None)
        os.environ.clear()
        os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
                           "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"})  # fmt: skip
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversized writes fail with EFBIG instead of killing us
        harness.run(job, network_block=not info["netns"], proc_visible=not info["namespaces_in_job"])
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
    """Fallback without a PID namespace: kill every process of the sandbox uid (escaped daemons included)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)  # everything this uid may signal, i.e. the sandbox's own processes
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _reap_orphans(deadline):
    """Fallback: as child subreaper, every escaped descendant ends up our child. Kill and reap until none is left."""
    me = str(os.getpid())
    while time.monotonic() < deadline:
        try:
            if os.waitpid(-1, os.WNOHANG)[0]:
                continue
        except ChildProcessError:
            return
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == me:
                        os.kill(int(pid), signal.SIGKILL)
            except (OSError, IndexError):
                pass
        time.sleep(0.005)


def _supervise(job, info):
    os.setsid()
    uid, limits = info["uid"], job["limits"]
    in_ns = False
    if info["namespaces"]:
        try:
            _enter_job_namespaces(uid, limits["tmpfs_bytes"], info.get("hidden"))
            in_ns = True
        except OSError:
            pass
    info = dict(info, namespaces_in_job=in_ns)
    if in_ns:
        workdir = "/tmp"
    else:
        import tempfile

        workdir = tempfile.mkdtemp(prefix="trl-sandbox-")
        if info["root"]:
            os.chown(workdir, uid, uid)
        _check(_libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))  # orphans become ours to kill and reap
    pipes = [os.pipe() for _ in range(4)]  # stdout, stderr, result, token
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _runner(job, info, workdir, (pipes[0][1], pipes[1][1], pipes[2][1], pipes[3][0]))
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
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    deadline = start + job["timeout"]
    open_fds, timed_out, status = set(caps), False, None
    while True:
        now = time.monotonic()
        if now >= deadline:
            timed_out = True
            break
        watch = list(open_fds) + ([pidfd] if pidfd is not None else [])
        ready, _, _ = select.select(watch, [], [], min(deadline - now, 0.05 if pidfd is None else 1.0))
        for fd in ready:
            if fd in open_fds and not _read_capped(fd, bufs[fd], caps[fd]):
                open_fds.discard(fd)
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            status = raw
            break
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    if status is None:
        status = os.waitpid(pid, 0)[1]
    wall = time.monotonic() - start
    if not in_ns:  # no PID namespace: kill the group, then anything else still running as the sandbox uid
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if info["root"]:
            _kill_uid(uid)
        _reap_orphans(time.monotonic() + 2.0)
    drain_until = time.monotonic() + 0.2
    while open_fds and time.monotonic() < drain_until:
        ready, _, _ = select.select(list(open_fds), [], [], 0.02)
        for fd in ready:
            if not _read_capped(fd, bufs[fd], caps[fd]):
                open_fds.discard(fd)
    if not in_ns:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)

    result = {"wall_time": wall, "stdout": bytes(bufs[pipes[0][0]]).decode("utf-8", "replace"),
              "stderr": bytes(bufs[pipes[1][0]]).decode("utf-8", "replace"),
              "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
              "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None}  # fmt: skip
    if timed_out or result["signal"] == signal.SIGXCPU:
        total = len(job["inputs"]) if job["kind"] == "stdio" else len(job["tests"])
        return dict(result, status="timeout", passed=0, total=total, detail="time limit exceeded")
    return dict(result, **harness.decode(bytes(bufs[pipes[2][0]]), token, job))


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
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            result = _supervise(job, info)
        except BaseException as exc:  # a supervisor bug must not look like a verdict
            result = {"status": "error", "detail": f"supervisor failure: {exc!r}"}
        try:
            _send(w, result)
        finally:
            os._exit(0)
    os.close(w)
    deadline = time.monotonic() + job["timeout"] + 10.0  # backstop: the supervisor has its own timer
    data = bytearray()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([r], [], [], 0.5)
        if ready:
            chunk = os.read(r, 1 << 20)
            if not chunk:
                break
            data += chunk
    else:
        os.killpg(pid, signal.SIGKILL)
    os.close(r)
    os.waitpid(pid, 0)
    if len(data) < 4:
        return {"status": "error", "detail": "supervisor returned no result"}
    return json.loads(bytes(data[4:]))


def main(argv):
    uid = int(argv[argv.index("--uid") + 1])
    info = _setup_zygote(uid, use_namespaces="--no-namespaces" not in argv)
    info["userns"] = info["netns"] and not info["root"]
    harness.preload()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    _send(1, info)
    while (job := _recv(0)) is not None:
        _send(1, _run_one(job, info))


if __name__ == "__main__":
    main(sys.argv)

"""Run untrusted programs against tests: a local sandbox behind a one-method provider interface.

The interface follows open-r1's `utils/code_providers.py` idea: `CodeExecutionProvider.execute(requests)` runs a
batch and returns one `ExecutionResult` per request, so a remote sandbox service can replace local execution.

`LocalSandboxProvider` (the default) keeps one pre-started, clean interpreter ("zygote", `python -I -S`) per worker
and forks a fresh child per execution, so no interpreter starts per program. The kernel does the isolation, the same
way whether the caller is root or not:

1. each program runs as PID 1 of a PID namespace of its own, in its own session: `kill(-1)`, `kill(getppid())`,
   `killpg()` of the caller's group, ptrace and `/proc` reach only the program's own processes, and when PID 1 dies
   the kernel kills the rest, and its own IPC namespace (SysV shared memory goes with it). The zygote sits in fresh
   network + IPC + mount namespaces; when the caller is not root
   all of this lives inside a user namespace (the zygote's), and the program holds no capability in it and is not
   dumpable (its own children cannot ptrace it or read its memory);
2. rlimits: `RLIMIT_CPU`, `RLIMIT_AS` (1 GiB), `RLIMIT_NPROC`, `RLIMIT_FSIZE`, `RLIMIT_NOFILE`, `RLIMIT_CORE=0`.
   As root the program also drops to a uid of its own (one per worker), because root ignores `RLIMIT_NPROC`;
   `PR_SET_NO_NEW_PRIVS` keeps setuid binaries from giving privileges back;
3. the host file system is read-only to the program; it writes only to a fresh working directory on a private,
   size- and inode-capped tmpfs that is /tmp, removed afterwards. /proc, /var/tmp, /dev/shm and /run/lock are empty
   and read-only, and a Python installed below an unreadable home is exposed alone; when the caller is not root
   (the program then has the caller's uid), the caller's home is hidden the same way (tokens, keys);
4. a scrubbed environment (no `HF_TOKEN`, no proxies), Python in isolated mode (`-I`);
5. no network: the zygote's own network namespace (only a loopback that is down), and no AF_UNIX socket of its
   own (a seccomp filter; `socketpair` works), since a network namespace does not hide the host's unix sockets on
   the file system (D-Bus, Docker, a user's systemd);
6. a wall-clock timeout that kills the program's whole PID namespace, and stdout/stderr capped.

Where the kernel refuses these namespaces (`kernel.unprivileged_userns_clone=0`, Ubuntu 24.04's
`kernel.apparmor_restrict_unprivileged_userns=1`, a container's seccomp profile), the first execution raises
`SandboxIsolationError`, naming the cause and the fix. `allow_weak_isolation=True` accepts the weak mode instead
(warned once): the program then runs as the caller's uid in its own session only, so it can signal and ptrace the
caller's processes; only an audit hook blocks sockets and program execution.

Not a proof of security: it shares the host kernel (seccomp filters only AF_UNIX sockets, memfd_create, the keyrings
and io_uring), world-readable host files stay readable, and `memory_bytes` bounds each process, not their sum (up to `processes` of them).
Verdict integrity inside the process is the harness's job, see `_sandbox_harness.py`.
"""

import itertools
import json
import os
import queue
import select
import signal
import struct
import subprocess
import sys
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field


WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_worker.py")
STATUSES = ("passed", "failed", "timeout", "error", "memory")


@dataclass
class SandboxConfig:
    """Limits of one execution and of the worker pool.

    Args:
        timeout (`float`, *optional*, defaults to `5.0`): wall-clock seconds per execution (all of its tests).
        memory_bytes (`int`, *optional*, defaults to `1 << 30`): `RLIMIT_AS`, address space per process.
        processes (`int`, *optional*, defaults to `64`): `RLIMIT_NPROC`, processes + threads (stops fork bombs).
        file_bytes (`int`, *optional*, defaults to `16 << 20`): `RLIMIT_FSIZE`, largest file a program may write.
        open_files (`int`, *optional*, defaults to `128`): `RLIMIT_NOFILE`.
        output_bytes (`int`, *optional*, defaults to `65536`): stdout / stderr / each stdin-stdout case are cut here.
        tmpfs_bytes (`int`, *optional*, defaults to `64 << 20`): size of each worker's private /tmp (all files a
            program writes), with one inode per 16 KiB of it (4096 by default).
        max_workers (`int` or `None`, *optional*, defaults to `None`): parallel executions; `None` = `os.cpu_count()`.
        namespaces (`bool`, *optional*, defaults to `True`): use Linux namespaces; `False` asks for the weak mode
            (own session, temp dir, socket-blocking audit hook), which also needs `allow_weak_isolation=True`.
        allow_weak_isolation (`bool`, *optional*, defaults to `False`): where the kernel refuses namespaces, run in
            the weak mode (warned once) instead of raising `SandboxIsolationError`. In the weak mode a program can
            signal and ptrace every process of the caller's uid, the trainer included: use it only for trusted code.
        site_packages (`bool`, *optional*, defaults to `False`): let programs import installed packages (numpy ...).
    """

    timeout: float = field(default=5.0, metadata={"help": "Wall-clock seconds per execution."})
    memory_bytes: int = field(default=1 << 30, metadata={"help": "RLIMIT_AS per process (1 GiB)."})
    processes: int = field(default=64, metadata={"help": "RLIMIT_NPROC: processes + threads, stops fork bombs."})
    file_bytes: int = field(default=16 << 20, metadata={"help": "RLIMIT_FSIZE: largest file a program may write."})
    open_files: int = field(default=128, metadata={"help": "RLIMIT_NOFILE."})
    output_bytes: int = field(default=1 << 16, metadata={"help": "Cap on captured stdout/stderr per stream."})
    tmpfs_bytes: int = field(default=64 << 20, metadata={"help": "Size of the private /tmp (one inode per 16 KiB)."})
    max_workers: int | None = field(default=None, metadata={"help": "Parallel executions; None = os.cpu_count()."})
    namespaces: bool = field(default=True, metadata={"help": "Use Linux namespaces; False asks for the weak mode."})
    allow_weak_isolation: bool = field(
        default=False,
        metadata={
            "help": "Where the kernel refuses namespaces, run weakly isolated (warned once) instead of raising."
        },
    )
    site_packages: bool = field(default=False, metadata={"help": "Let programs import installed packages."})


@dataclass
class ExecutionRequest:
    """One program and its tests.

    `kind="asserts"`: run `program`, then `setup` (e.g. a HumanEval `check` definition) in a copy of its namespace,
    then each snippet of `tests` as one test (a test passes when the snippet raises nothing).
    `kind="stdio"`: run `program` once per entry of `inputs` on stdin; a case passes when it exits cleanly and its
    stdout matches `expected_outputs` up to whitespace. Expected outputs never enter the sandbox.
    """

    program: str
    kind: str = "asserts"
    setup: str = ""
    tests: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    expected_outputs: list[str] | None = None
    strict: bool = True  # compared values must be exact builtin types (defeats always-equal objects)
    timeout: float | None = None  # None: the provider's `SandboxConfig.timeout`


@dataclass
class ExecutionResult:
    """What happened. `status` is one of passed / failed / timeout / error / memory."""

    status: str
    passed: int = 0
    total: int = 0
    wall_time: float = 0.0
    stdout: str = ""
    stderr: str = ""
    detail: str = ""

    @property
    def fraction(self) -> float:
        return self.passed / self.total if self.total else 0.0


class CodeExecutionProvider(ABC):
    """Runs a batch of programs with their tests. Implement `execute` to plug in a remote sandbox service."""

    @abstractmethod
    def execute(self, requests: Sequence[ExecutionRequest]) -> list[ExecutionResult]:
        """Run every request; return one result per request, in order. Must never raise for a bad program."""

    def close(self) -> None:  # noqa: B027 - optional hook, most providers hold nothing
        """Release workers / connections."""


class SandboxIsolationError(RuntimeError):
    """The kernel refused the namespaces (or read-only mounts) the sandbox needs, and weak isolation was not allowed."""


def weak_isolation_summary(info: dict) -> str:
    """What the weak mode does and does not isolate, given what the kernel granted (as measured by the attack suite
    run with user namespaces refused)."""
    abi, uid = info.get("landlock", 0), os.geteuid()
    if info.get("pidns"):  # a PID namespace, but no private mounts or no read-only host file system
        who = "the sandbox uid" if info.get("drop_uid") else f"uid {uid}"
        return (f"Programs get a PID namespace of their own, but NOT a read-only host file system: they may change "
                f"or delete every file {who} may write"
                + ("" if info.get("mountns") else ", see every process in /proc, and share the caller's /tmp")
                + ".")  # fmt: skip
    if info.get("drop_uid"):
        return ("Programs run as a uid of their own (the caller is root), which keeps signals, ptrace and writes off "
                "the caller's processes and files. Not isolated: they share the caller's PID namespace and see every "
                "process in /proc, read world-readable files, may not start programs, and are kept off the network "
                "by an in-process audit hook only.")  # fmt: skip
    if abi >= 6:
        kernel = (f"Landlock (ABI {abi}) stops signals, ptrace and /proc/<pid> writes aimed at processes outside the "
                  "sandbox, TCP, and file writes outside its working directory")  # fmt: skip
    elif abi >= 1:
        kernel = (f"Landlock (ABI {abi}) stops ptrace and file writes outside the working directory, but NOT signals: "
                  f"programs can kill or SIGSTOP every process of uid {uid}, this trainer included")  # fmt: skip
    else:
        kernel = (f"no Landlock: programs can kill, SIGSTOP and ptrace every process of uid {uid}, this trainer "
                  "included, and write every file that uid may write")  # fmt: skip
    return (f"{kernel}. Not isolated: programs run as uid {uid} in the caller's PID namespace, see every process in "
            f"/proc, read every file uid {uid} may read (the caller's /tmp included), count all of that uid's "
            "processes against `processes`, may not start programs, and are kept off the network by an in-process "
            "audit hook only.")  # fmt: skip


_warned = set()


def _userns_hint() -> str:
    """The kernel switches that refuse user namespaces, as set on this machine."""
    found = []
    for path in ("/proc/sys/kernel/unprivileged_userns_clone", "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
                 "/proc/sys/user/max_user_namespaces"):  # fmt: skip
        try:
            with open(path) as f:
                found.append(f"{path.removeprefix('/proc/sys/').replace('/', '.')}={f.read().strip()}")
        except OSError:
            pass
    return ", ".join(found) or "no user-namespace sysctl found"


def _check_isolation(info: dict, allow_weak: bool) -> None:
    """Raise `SandboxIsolationError` when programs would not get a PID namespace and a read-only host file system
    under a private mount namespace, unless weak mode is allowed."""
    if info["pidns"] and info["mountns"] and info["readonly_fs"]:
        return
    cause = info.get("refused") or "no PID namespace"
    if allow_weak:
        if cause not in _warned:
            _warned.add(cause)
            warnings.warn(f"trl_ppo_plus code sandbox: weak isolation (allow_weak_isolation=True), because {cause}. "
                          + weak_isolation_summary(info), stacklevel=4)  # fmt: skip
        return
    raise SandboxIsolationError(
        f"The code sandbox cannot isolate programs on this machine: {cause} ({_userns_hint()}). Without a user + PID "
        "namespace, a program under evaluation could kill or ptrace this process; without read-only private mounts, "
        "change files. Fix: allow unprivileged user "
        "namespaces (`sysctl -w kernel.unprivileged_userns_clone=1`; on Ubuntu >= 23.10 "
        "`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` or an AppArmor profile with `userns,` for this "
        "Python; `user.max_user_namespaces` > 0; in Docker, a seccomp profile that allows unshare(CLONE_NEWUSER)), "
        "or run as root. To accept weak isolation for trusted code instead, pass allow_weak_isolation=True."
    )


def outputs_match(got: str, expected: str) -> bool:
    """Whitespace-normalised comparison: the same tokens in the same order."""
    return got.split() == expected.split()


def _clean_env():
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}  # no tokens, no proxies, no PYTHON*


_uid_counter = itertools.count()


def _sandbox_uid():
    """A uid no one else uses, one per worker: its own RLIMIT_NPROC budget, and siblings cannot signal each other."""
    return 0x40000000 + ((os.getpid() & 0xFFFF) << 10) + (next(_uid_counter) & 0x3FF)


class _Zygote:
    def __init__(self, config: SandboxConfig):
        cmd = [sys.executable, "-I", *([] if config.site_packages else ["-S"]), WORKER, "--uid", str(_sandbox_uid()),
               "--tmpfs-bytes", str(config.tmpfs_bytes)]  # fmt: skip
        if not config.namespaces:
            cmd.append("--no-namespaces")
        env = {**_clean_env(), "LD_BIND_NOW": "1"}  # no lazy symbol binding in every runner (the zygote scrubs it)
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
            close_fds=True, start_new_session=True, cwd="/",
        )  # fmt: skip
        self.info = self._recv(60.0)
        if self.info is None:
            self.kill()
            raise RuntimeError("the sandbox worker failed to start")
        try:
            _check_isolation(self.info, config.allow_weak_isolation)
        except SandboxIsolationError:
            self.kill(grace=2.0)  # idle: it exits at once
            raise

    def _recv(self, timeout):
        head = self._read(4, timeout)
        return None if head is None else json.loads(self._read(struct.unpack(">I", head)[0], timeout))

    def _read(self, n, timeout):
        fd, data = self.proc.stdout.fileno(), bytearray()
        while len(data) < n:
            if not select.select([fd], [], [], timeout)[0]:
                return None
            chunk = os.read(fd, n - len(data))
            if not chunk:
                return None
            data += chunk
        return bytes(data)

    def run(self, jobs: list[dict]) -> list[dict] | None:
        """Send a few jobs, get their results in order; `None` if the worker died or hung."""
        data = json.dumps(jobs).encode()
        try:
            self.proc.stdin.write(struct.pack(">I", len(data)) + data)
            self.proc.stdin.flush()
            results = self._recv(sum(job["timeout"] for job in jobs) + 30.0)
        except (OSError, ValueError):
            return None
        return results if isinstance(results, list) and len(results) == len(jobs) else None

    def kill(self, grace: float = 0.0):
        """Stop the worker. With `grace`, first let it exit (EOF on its stdin) for that long: then it and, not root,
        the PID 1 of its namespace are reaped by their own parents. Killed outright, that PID 1 is orphaned and stays
        a zombie until the machine's init reaps it."""
        if grace:
            try:
                self.proc.stdin.close()
                self.proc.wait(grace)
                return  # the whole group is gone: its pid may be reused, so no killpg now
            except (OSError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


class LocalSandboxProvider(CodeExecutionProvider):
    """Executes requests on this machine in sandboxed child processes, `max_workers` at a time.

    Usage:
    ```python
    provider = LocalSandboxProvider(timeout=2.0)
    [result] = provider.execute([ExecutionRequest("def f(): return 1", tests=["assert f() == 1"])])
    result.status, result.passed, result.total  # ('passed', 1, 1)
    ```
    """

    def __init__(self, config: SandboxConfig | None = None, **overrides):
        self.config = SandboxConfig(**{**asdict(config or SandboxConfig()), **overrides})
        self.max_workers = self.config.max_workers or os.cpu_count() or 1
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self._started = 0
        self._lock = threading.Lock()
        self._info = None

    def __getstate__(self):  # picklable: workers are per process and restart lazily
        return {"config": self.config}

    def __setstate__(self, state):
        self.__init__(state["config"])

    @property
    def isolation(self) -> dict:
        """What the OS granted: `pidns` (a PID namespace per program), `userns` (all inside a user namespace: the
        caller is not root), `netns`, `mountns`, `readonly_fs`, `drop_uid` (root: a uid per worker), `root` and `uid`
        (the caller's), `landlock` (the kernel's Landlock ABI version, 0 without), `seccomp` (the syscall filter
        loaded), and `refused` (why a namespace was not granted, else `None`)."""
        if self._info is None:
            self._release(self._acquire())
        return dict(self._info)

    @property
    def network_isolation(self) -> str:
        """`"netns"` (a network namespace with no interfaces up) or `"socket-block"` (audit hook fallback)."""
        return "netns" if self.isolation["netns"] else "socket-block"

    def _acquire(self) -> _Zygote:
        with self._lock:
            start = self._idle.empty() and self._started < self.max_workers
            self._started += start
        if not start:
            return self._idle.get()
        try:
            zygote = _Zygote(self.config)
        except BaseException:
            with self._lock:
                self._started -= 1
            raise
        self._info = self._info or zygote.info
        return zygote

    def _release(self, zygote: _Zygote, alive: bool = True):
        if alive:
            self._idle.put(zygote)
            return
        zygote.kill()
        with self._lock:
            self._started -= 1

    def _job(self, req: ExecutionRequest) -> dict:
        c = self.config
        limits = {"memory_bytes": c.memory_bytes, "processes": c.processes, "file_bytes": c.file_bytes,
                  "open_files": c.open_files, "output_bytes": c.output_bytes}  # fmt: skip
        return {"kind": req.kind, "program": req.program, "setup": req.setup, "tests": list(req.tests),
                "inputs": list(req.inputs), "strict": req.strict, "limits": limits,
                "timeout": float(req.timeout if req.timeout is not None else c.timeout)}  # fmt: skip

    def _result(self, req: ExecutionRequest, raw: dict) -> ExecutionResult:
        result = ExecutionResult(
            status=raw["status"], passed=raw.get("passed", 0), total=raw.get("total", 0),
            wall_time=raw.get("wall_time", 0.0), stdout=raw.get("stdout", ""), stderr=raw.get("stderr", ""),
            detail=raw.get("detail", ""),
        )  # fmt: skip
        if req.kind == "stdio" and result.status in ("passed", "failed"):  # judged here, outside the sandbox
            expected = req.expected_outputs or []
            outs, ran_ok = raw.get("outputs", []), raw.get("ran_ok", [])
            result.total = len(expected)
            result.passed = sum(ok and outputs_match(o, e) for ok, o, e in zip(ran_ok, outs, expected))
            result.status = "passed" if result.total and result.passed == result.total else "failed"
        return result

    def _execute_chunk(self, requests: list[ExecutionRequest]) -> list[ExecutionResult]:
        zygote = self._acquire()
        raws = zygote.run([self._job(r) for r in requests])
        self._release(zygote, alive=raws is not None)
        if raws is None:
            return [
                ExecutionResult("error", total=len(r.inputs or r.tests), detail="sandbox worker died")
                for r in requests
            ]
        return [self._result(r, raw) for r, raw in zip(requests, raws)]

    def execute(self, requests: Sequence[ExecutionRequest]) -> list[ExecutionResult]:
        requests = list(requests)
        if not requests:
            return []
        workers = min(self.max_workers, len(requests))
        # A few jobs per round trip keep each zygote busy between replies; chunks shrink towards the end of the batch
        # (guided scheduling), so that no worker is left with a long last chunk while the others are idle.
        chunks, start = [], 0
        while start < len(requests):
            size = max(1, min(8, (len(requests) - start) // (2 * workers)))
            chunks.append(requests[start : start + size])
            start += size
        if len(chunks) == 1:
            return self._execute_chunk(chunks[0])
        with ThreadPoolExecutor(workers) as pool:
            return [result for part in pool.map(self._execute_chunk, chunks) for result in part]

    def close(self) -> None:
        zygotes = []
        while not self._idle.empty():
            zygotes.append(self._idle.get())
        for zygote in zygotes:  # all told at once: they exit side by side
            try:
                zygote.proc.stdin.close()
            except OSError:
                pass
        for zygote in zygotes:
            zygote.kill(grace=2.0)
        self._started = 0

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


_default: LocalSandboxProvider | None = None


def default_provider() -> LocalSandboxProvider:
    """The process-wide local provider with default limits (started lazily)."""
    global _default
    if _default is None:
        _default = LocalSandboxProvider()
    return _default


def network_isolation() -> str:
    """Which network isolation the local sandbox gets on this machine: `"netns"` or `"socket-block"`."""
    return default_provider().network_isolation

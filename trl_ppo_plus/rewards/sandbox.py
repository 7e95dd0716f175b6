"""Run untrusted programs against tests: a local sandbox behind a one-method provider interface.

The interface follows open-r1's `utils/code_providers.py` idea: `CodeExecutionProvider.execute(requests)` runs a
batch and returns one `ExecutionResult` per request, so a remote sandbox service can replace local execution.

`LocalSandboxProvider` (the default) keeps one pre-started, clean interpreter ("zygote", `python -I -S`) per worker
and forks a fresh child per execution, so no interpreter starts per program. The kernel does the isolation:

1. each execution runs in a fresh child process in its own session / process group; the zygote is a child
   subreaper, so anything that escapes the group (a daemonized grandchild) is reparented to it and killed, by uid
   (`kill(-1)` run as the sandbox uid) and by a parent-pid scan;
2. rlimits: `RLIMIT_CPU`, `RLIMIT_AS` (1 GiB), `RLIMIT_NPROC`, `RLIMIT_FSIZE`, `RLIMIT_NOFILE`, `RLIMIT_CORE=0`.
   As root the child also drops to a uid of its own (one per worker), because root ignores `RLIMIT_NPROC` and can
   write anywhere; `PR_SET_NO_NEW_PRIVS` keeps setuid binaries from giving privileges back;
3. the working directory is fresh per execution and removed afterwards. With a mount namespace (the usual case)
   it lives on a private, size-capped tmpfs that is /tmp; /proc, /var/tmp, /dev/shm and /run/lock are empty and
   read-only, and a Python installed below an unreadable home is exposed alone. Without one: a temp directory;
4. a scrubbed environment (no `HF_TOKEN`, no proxies), Python in isolated mode (`-I`);
5. no network: the zygote's own network namespace (only a loopback that is down) where the OS allows it, else an
   audit hook that blocks socket creation and program execution. `network_isolation()` says which is in force;
6. a wall-clock timeout that kills the whole group, and stdout/stderr capped.

Not a proof of security: it shares the host kernel (no seccomp filter), and world-readable host files stay readable.
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
            program writes).
        max_workers (`int` or `None`, *optional*, defaults to `None`): parallel executions; `None` = `os.cpu_count()`.
        namespaces (`bool`, *optional*, defaults to `True`): use Linux namespaces when the OS allows; `False` forces
            the fallback (process group + uid kill, temp dir, socket-blocking audit hook).
        site_packages (`bool`, *optional*, defaults to `False`): let programs import installed packages (numpy ...).
    """

    timeout: float = field(default=5.0, metadata={"help": "Wall-clock seconds per execution."})
    memory_bytes: int = field(default=1 << 30, metadata={"help": "RLIMIT_AS per process (1 GiB)."})
    processes: int = field(default=64, metadata={"help": "RLIMIT_NPROC: processes + threads, stops fork bombs."})
    file_bytes: int = field(default=16 << 20, metadata={"help": "RLIMIT_FSIZE: largest file a program may write."})
    open_files: int = field(default=128, metadata={"help": "RLIMIT_NOFILE."})
    output_bytes: int = field(default=1 << 16, metadata={"help": "Cap on captured stdout/stderr per stream."})
    tmpfs_bytes: int = field(default=64 << 20, metadata={"help": "Size of the private /tmp working directory."})
    max_workers: int | None = field(default=None, metadata={"help": "Parallel executions; None = os.cpu_count()."})
    namespaces: bool = field(default=True, metadata={"help": "Use Linux namespaces where the OS allows."})
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
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_clean_env(),
            close_fds=True, start_new_session=True, cwd="/",
        )  # fmt: skip
        self.info = self._recv(60.0)
        if self.info is None:
            self.kill()
            raise RuntimeError("the sandbox worker failed to start")

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

    def kill(self):
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
        """What the OS granted: `netns`, `namespaces` (per-execution PID + mount), `root` (uid dropping)."""
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
        # A few jobs per round trip keep each zygote busy between replies; small chunks keep the load balanced.
        size = max(1, min(8, len(requests) // (4 * workers)))
        chunks = [requests[i : i + size] for i in range(0, len(requests), size)]
        if len(chunks) == 1:
            return self._execute_chunk(chunks[0])
        with ThreadPoolExecutor(workers) as pool:
            return [result for part in pool.map(self._execute_chunk, chunks) for result in part]

    def close(self) -> None:
        while not self._idle.empty():
            self._idle.get().kill()
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

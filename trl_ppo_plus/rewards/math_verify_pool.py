"""Symbolic answer checking (math-verify) in worker processes, with a hard per-item deadline from any thread.

Why processes: math-verify times out with `signal.alarm`, which only works in the main thread (TRL disables its
timeouts elsewhere; in veRL's Ray workers it scored every MATH answer 0, veRL PR #5635), and sympy can hang inside
one C-level call (`2003^{2002^{2001}}`) that no signal interrupts. A process can always be killed.

The protocol, per `SymbolicPool.check_many` call:
    1. Check out idle workers (starting new ones up to `num_workers`); other threads' calls hold other workers.
    2. Send one item to each; its clock starts when the worker has said it is ready (so startup is not charged).
    3. Wait on all their pipes at once (`multiprocessing.connection.wait`) until the next deadline.
    4. A worker that answers gets the next queued item; one past its deadline is SIGKILLed, its item scored as a
       timeout, and a fresh worker takes its place in the pool.
A single item therefore never blocks the caller longer than `timeout` plus a few milliseconds; a batch of n items
whose every item hangs takes at most ceil(n / num_workers) * timeout.

Workers are fresh interpreters started with fork+exec (no bare fork of a multi-threaded torch process, no
re-import of the caller's `__main__`), each importing only math-verify. The shared pool is created on first use,
once per process (a forked child gets its own), and shut down at exit.
"""

import atexit
import importlib.util
import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from multiprocessing.connection import Connection, wait


_READY = "ready"
_STARTUP_TIMEOUT = 120.0  # seconds a new worker may take to import math-verify on a loaded machine
_HARD_LIMIT_FACTOR = 3.0  # an orphaned worker ends itself after this many deadlines (SIGALRM backstop)
TIMED_OUT = "timeout"  # result of an item that overran its deadline or whose worker died


def check_symbolic(pred: str | None, gold: str) -> tuple[bool, bool]:
    """(gold parses, pred is equivalent to gold) with math-verify; no timeout of its own, so run it in a worker."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    # Math-Verify's own normalization (units, and `malformed_operators` / `nits`: `\frac34`, `10\sqrt3`,
    # `\frac1{\cos x}`, `.5`), applied to both sides alike.
    config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]

    def _parse(answer: str) -> list:
        # The answer is already extracted; boxing it makes math-verify read it whole (a bare `\{1,2\}` or
        # `[1,2)` is not found without delimiters).
        return parse(f"\\boxed{{{answer}}}", config, parsing_timeout=None) or parse(answer, parsing_timeout=None)

    gold_parsed = _parse(gold)
    if not gold_parsed:
        return False, False
    if pred is None:
        return True, False
    pred_parsed = _parse(pred)
    return True, bool(pred_parsed) and bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def _limit_memory(max_memory_mb: int) -> None:
    """Cap the worker's address space at its size after imports plus `max_memory_mb` (Linux; best effort)."""
    if max_memory_mb <= 0:
        return
    try:
        import resource

        with open("/proc/self/statm") as f:
            current = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = current + max_memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, OSError, ValueError):
        pass


def _worker_main(read_fd: int, write_fd: int, max_memory_mb: int) -> None:
    """Serve (task_id, pred, gold, hard_limit_s) requests until EOF; answers (task_id, result)."""
    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # "timeout is disabled": the parent is the timeout
    import math_verify  # noqa: F401

    _limit_memory(max_memory_mb)
    has_timer = hasattr(signal, "setitimer")
    if has_timer:  # default SIGALRM action ends the process even inside one long C call; no Python handler runs
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    outbox.send((_READY, None))
    while True:
        try:
            message = inbox.recv()
        except (EOFError, OSError):  # the parent went away
            return
        task_id, pred, gold, hard_limit_s = message
        if has_timer:  # backstop for an orphaned worker; the parent normally kills us at the deadline
            signal.setitimer(signal.ITIMER_REAL, hard_limit_s)
        try:
            result = check_symbolic(pred, gold)
        except Exception:  # RecursionError on 500-deep \frac, MemoryError under the rlimit, sympy bugs
            result = TIMED_OUT
        if has_timer:
            signal.setitimer(signal.ITIMER_REAL, 0)
        outbox.send((task_id, result))


class _Worker:
    """One worker: a fresh interpreter running this file as a script (`-P`: this folder, which holds `math.py`,
    must not shadow the stdlib). It never imports `trl_ppo_plus` (torch, trl: seconds) nor the caller's `__main__`,
    and starting it is a fork+exec, which is safe in a multi-threaded torch process, unlike a bare fork."""

    def __init__(self, max_memory_mb: int):
        parent_read, child_write = os.pipe()
        child_read, parent_write = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-P", __file__, str(child_read), str(child_write), str(max_memory_mb)],
                pass_fds=(child_read, child_write),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            for fd in (parent_read, child_write, child_read, parent_write):
                os.close(fd)
            raise
        os.close(child_read)
        os.close(child_write)
        self.inbox = Connection(parent_read, writable=False)
        self.outbox = Connection(parent_write, readable=False)
        self.created = time.monotonic()
        self.ready = False

    def poll_ready(self) -> bool:
        """Read the READY message if it has arrived (without blocking); False while starting or if dead."""
        if not self.ready and self.process.poll() is None and self.inbox.poll():
            try:
                self.ready = self.inbox.recv()[0] == _READY
            except (EOFError, OSError):
                return False
        return self.ready

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=5)
        self.inbox.close()
        self.outbox.close()

    def stop(self) -> None:
        self.outbox.close()  # EOF: the worker returns from its loop
        try:
            self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.inbox.close()


class SymbolicPool:
    """Worker processes running `check_symbolic`, with a per-item deadline; safe to call from many threads.

    Args:
        num_workers: processes at most, started lazily. Defaults to min(4, cpu count): symbolic checks are the
            rare case once the numeric fast path has run, so a few workers suffice.
        max_memory_mb: address space each worker may add after its imports (Linux rlimit; 0 for no cap), so that
            `9**9**9**9` fails with MemoryError instead of swapping the machine before its deadline.
    """

    def __init__(self, num_workers: int | None = None, max_memory_mb: int = 2048):
        self.num_workers = num_workers or max(1, min(4, os.cpu_count() or 1))
        self.max_memory_mb = max_memory_mb
        self.pid = os.getpid()
        self.restarts = 0  # workers killed (overdue or dead) and replaced, for tests and logs
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._alive = 0
        self._closed = False
        self._task_ids = itertools.count()

    def _acquire(self, block: bool) -> "_Worker | None":
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("SymbolicPool is closed")
                if self._idle:  # a started worker first: a fresh replacement may still be importing
                    ready = [i for i, w in enumerate(self._idle) if w.poll_ready()]
                    return self._idle.pop(ready[-1] if ready else -1)
                if self._alive < self.num_workers:
                    self._alive += 1
                    break
                if not block:
                    return None
                self._cond.wait()
        try:
            return _Worker(self.max_memory_mb)
        except BaseException:
            with self._cond:
                self._alive -= 1
                self._cond.notify()
            raise

    def _release(self, worker: _Worker) -> None:
        with self._cond:
            if not self._closed:
                self._idle.append(worker)
                self._cond.notify()
                return
        worker.stop()

    def _discard(self, worker: _Worker, replace: bool) -> None:
        worker.kill()
        fresh = None
        if replace and not self._closed:
            try:
                fresh = _Worker(self.max_memory_mb)  # starts in the background; its READY is read on first use
            except OSError:
                fresh = None
        with self._cond:
            self.restarts += 1
            if fresh is not None and not self._closed:
                self._idle.append(fresh)
            else:
                self._alive -= 1
            self._cond.notify()

    def check_many(self, items: list[tuple[str | None, str]], timeout: float) -> list:
        """`check_symbolic` on each (pred, gold) item in parallel: a (gold_ok, correct) tuple or `TIMED_OUT`."""
        results: list = [TIMED_OUT] * len(items)
        queue = deque(range(len(items)))
        active: dict[_Worker, list] = {}  # worker -> [item index, task id, start time or None until it is ready]
        hard_limit = _HARD_LIMIT_FACTOR * timeout + 1.0

        failed_sends = 0

        def send(worker: _Worker) -> None:
            nonlocal failed_sends
            index = queue.popleft()
            task_id = next(self._task_ids)
            try:
                worker.outbox.send((task_id, *items[index], hard_limit))
            except OSError:  # it died while idle (killed from outside): requeue the item, replace the worker
                queue.appendleft(index)
                self._discard(worker, replace=True)
                failed_sends += 1
                if failed_sends > 2 * self.num_workers:
                    raise RuntimeError("math-verify workers keep dying; see their errors above") from None
                return
            active[worker] = [index, task_id, time.monotonic() if worker.ready else None]

        try:
            while queue or active:
                while queue:  # 1. check out workers and 2. send them items
                    worker = self._acquire(block=not active)
                    if worker is None:
                        break
                    send(worker)
                deadlines = [start + timeout if start is not None else w.created + _STARTUP_TIMEOUT
                             for w, (_, _, start) in active.items()]  # fmt: skip
                by_inbox = {w.inbox: w for w in active}
                # 3. wait on every pipe at once, until the nearest deadline
                for inbox in wait(list(by_inbox), timeout=max(0.0, min(deadlines) - time.monotonic())):
                    worker = by_inbox[inbox]
                    try:
                        tag, payload = inbox.recv()
                    except (EOFError, OSError):  # died: OOM killer, segfault, or it never started
                        index, _, start = active.pop(worker)
                        self._discard(worker, replace=start is not None)
                        if start is None:
                            raise RuntimeError(
                                f"a math-verify worker exited at startup (code {worker.process.returncode}); "
                                "its error is printed above. Is math-verify installed (`pip install math-verify`)?"
                            ) from None
                        continue
                    if tag == _READY:  # the item's clock starts now, so startup is not charged to it
                        worker.ready = True
                        active[worker][2] = time.monotonic()
                        continue
                    index, task_id, _ = active.pop(worker)
                    assert tag == task_id, "a worker answered a task it was not given"
                    results[index] = payload
                    if queue:  # 4. the next queued item goes to the worker that just finished
                        send(worker)
                    else:
                        self._release(worker)
                now = time.monotonic()
                for worker, (_, _, start) in list(active.items()):  # 4. overdue: kill and replace
                    if now >= (start + timeout if start is not None else worker.created + _STARTUP_TIMEOUT):
                        del active[worker]
                        self._discard(worker, replace=True)
        finally:
            for worker in active:  # interrupted (KeyboardInterrupt, a failed start): their state is unknown
                self._discard(worker, replace=False)
        return results

    def warm(self, timeout: float = _STARTUP_TIMEOUT) -> None:
        """Start every worker and wait until each is ready, e.g. before training or before timing a call.

        A deadline bounds the work on one item, not a worker's start (importing math-verify: about 0.5 s, more on
        a loaded machine), which happens once per worker and after each kill, in the background.
        """
        with self._cond:
            missing = max(0, self.num_workers - self._alive)
            self._alive += missing
        fresh = [_Worker(self.max_memory_mb) for _ in range(missing)]
        with self._cond:
            self._idle.extend(fresh)
            self._cond.notify_all()
        give_up = time.monotonic() + timeout
        while True:
            with self._cond:  # only idle workers: busy ones belong to another thread's call
                if all(worker.poll_ready() for worker in self._idle):
                    return
            if time.monotonic() > give_up:
                raise TimeoutError(f"math-verify workers not ready after {timeout} s")
            time.sleep(0.01)

    def close(self) -> None:
        """Stop idle workers; workers busy in another thread's call are stopped when that call returns them."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._alive -= len(idle)
            self._cond.notify_all()
        for worker in idle:
            worker.stop()


_shared_pool: SymbolicPool | None = None
_shared_lock = threading.Lock()


def get_shared_pool() -> SymbolicPool:
    """The process-wide pool, created on first use; `TRL_PPO_PLUS_MATH_WORKERS` sets its size."""
    global _shared_pool
    if importlib.util.find_spec("math_verify") is None:
        raise ImportError("Symbolic math rewards need math-verify: `pip install math-verify`")
    with _shared_lock:
        if _shared_pool is None or _shared_pool.pid != os.getpid():  # a forked child must not share our pipes
            workers = os.environ.get("TRL_PPO_PLUS_MATH_WORKERS")
            _shared_pool = SymbolicPool(num_workers=int(workers) if workers else None)
        return _shared_pool


@atexit.register
def _shutdown_shared_pool() -> None:
    if _shared_pool is not None and _shared_pool.pid == os.getpid():
        _shared_pool.close()


if __name__ == "__main__":  # a worker: `python -P math_verify_pool.py READ_FD WRITE_FD MAX_MEMORY_MB`
    _worker_main(*(int(arg) for arg in sys.argv[1:4]))

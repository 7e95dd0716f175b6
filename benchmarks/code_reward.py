"""Benchmark: our sandboxed code reward against a naive evaluation harness on the same programs, in one run.

Usage:
    .venv/bin/python benchmarks/code_reward.py [--n 200] [--workers N] [--timeout 2.0] [--seed 0]

The programs are generated deterministically from a few MBPP-style tasks (about 60% correct, 35% buggy, 5% syntax
errors), each with three assert tests. The baseline is what common evaluation harnesses do (human-eval's
`check_correctness`): per program a `multiprocessing.Manager` and one `multiprocessing.Process` that `exec`s the
program and its asserts under a `signal` timer, run `--workers` at a time from a thread pool. Both get the same
worker count. It prints executions per second for each, their ratio, and checks that the verdicts agree.
Target: ratio >= 5.

The baseline runs first, before this process imports `trl_ppo_plus` (and so torch), so its forks copy a small
process: the comparison is conservative. Inside a trainer it would fork the whole training process, which is slower.
"""

import argparse
import contextlib
import io
import multiprocessing
import os
import random
import signal
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor


TASKS = [  # (name, correct body, buggy body, [(args, expected)])
    ("add", "return a + b", "return a - b", [((1, 2), 3), ((5, 7), 12), ((-1, 1), 0)]),
    ("rev", "return a[::-1]", "return a", [(("abc",), "cba"), (("xy",), "yx"), (("racecars",), "sracecar")]),
    (
        "fib",
        "x, y = 0, 1\n    for _ in range(a):\n        x, y = y, x + y\n    return x",
        "x, y = 1, 1\n    for _ in range(a):\n        x, y = y, x + y\n    return x",
        [((10,), 55), ((1,), 1), ((20,), 6765)],
    ),  # fmt: skip
    (
        "prime",
        "return a > 1 and all(a % d for d in range(2, int(a ** 0.5) + 1))",
        "return all(a % d for d in range(2, a))",
        [((7,), True), ((1,), False), ((91,), False)],
    ),  # fmt: skip
    ("srt", "return sorted(a)", "return list(a)", [(([3, 1, 2],), [1, 2, 3]), (([],), []), (([2, 2, 1],), [1, 2, 2])]),
    (
        "vowels",
        "return sum(c in 'aeiou' for c in a)",
        "return sum(c in 'aei' for c in a)",
        [(("hello",), 2), (("sky",), 0), (("queue",), 4)],
    ),  # fmt: skip
]


def make_samples(n, seed):
    rng = random.Random(seed)
    samples = []
    for i in range(n):
        name, good, bad, cases = TASKS[i % len(TASKS)]
        roll = rng.random()
        params = "a, b" if name == "add" else "a"
        body = good if roll < 0.6 else bad
        program = f"def {name}({params}):\n    {body}\n"
        if roll >= 0.95:
            program = f"def {name}({params})\n    {body}\n"  # syntax error
        tests = [f"assert {name}(*{args!r}) == {expected!r}" for args, expected in cases]
        samples.append((program, tests))
    return samples


# ---------------------------------------------------------------- baseline: human-eval style check_correctness
def _unsafe_execute(program, timeout, result):
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)

        def on_alarm(signum, frame):
            raise TimeoutError("timed out")

        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                exec(program, {})
            result.append("passed")
        except TimeoutError:
            result.append("timed out")
        except BaseException as exc:
            result.append(f"failed: {exc!r}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)


def baseline_check(program, timeout):
    manager = multiprocessing.Manager()
    result = manager.list()
    proc = multiprocessing.Process(target=_unsafe_execute, args=(program, timeout, result))
    proc.start()
    proc.join(timeout=timeout + 1)
    if proc.is_alive():
        proc.kill()
    verdict = bool(result) and result[0] == "passed"
    manager.shutdown()
    return verdict


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    samples = make_samples(args.n, args.seed)
    completions = [f"```python\n{program}```" for program, _ in samples]
    test_lists = [tests for _, tests in samples]

    # Baseline first, before `trl_ppo_plus` (and torch) is imported: its forks copy a small process (conservative).
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        base = list(pool.map(lambda s: baseline_check(s[0] + "\n" + "\n".join(s[1]), args.timeout), samples))
    base_s = time.perf_counter() - t0

    from trl_ppo_plus.rewards.code import make_code_reward

    reward = make_code_reward(timeout=args.timeout, max_workers=args.workers)
    t0 = time.perf_counter()
    reward(completions[:1], test_list=test_lists[:1])  # start the worker pool once, as a trainer's first step does
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = reward(completions, test_list=test_lists)
    ours_s = time.perf_counter() - t0

    agree = sum((o == 1.0) == b for o, b in zip(ours, base))
    ours_eps, base_eps = args.n / ours_s, args.n / base_s
    print(f"programs: {args.n}  workers: {args.workers}  passing: {sum(base)}  sandbox: "
          f"{reward.provider.network_isolation}")  # fmt: skip
    print(f"sandbox   {ours_eps:8.1f} exec/s  ({ours_s:.2f} s; pool start {startup:.2f} s, once)")
    print(f"baseline  {base_eps:8.1f} exec/s  ({base_s:.2f} s; Manager + Process per program)")
    print(f"ratio     {ours_eps / base_eps:8.2f}x  (target >= 5)")
    print(f"verdicts agree: {agree}/{args.n}")
    reward.provider.close()
    if agree != args.n:
        raise SystemExit("verdicts differ")


if __name__ == "__main__":
    main()

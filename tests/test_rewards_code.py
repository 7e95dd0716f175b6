"""Code-execution reward: formats, scoring, extraction, chat completions, the provider interface, pickling."""

import json
import pickle

import pytest

from trl_ppo_plus.rewards import CodeExecutionReward, code_execution_reward, extract_code, make_code_reward
from trl_ppo_plus.rewards.sandbox import (
    CodeExecutionProvider,
    ExecutionRequest,
    ExecutionResult,
    LocalSandboxProvider,
    SandboxIsolationError,
    network_isolation,
    outputs_match,
)


@pytest.fixture(scope="module")
def reward():
    r = make_code_reward(timeout=2.0, max_workers=2)
    yield r
    r.provider.close()


@pytest.fixture(scope="module")
def partial():
    r = make_code_reward(partial_credit=True, timeout=2.0, max_workers=2)
    yield r
    r.provider.close()


def fenced(code, tag="python"):
    return f"Here is my solution:\n```{tag}\n{code}\n```\nDone."


# ------------------------------------------------------------------------------------------------------- extraction
@pytest.mark.parametrize(
    "text, which, expected",
    [
        ("```python\na = 1\n```", "last", "a = 1\n"),
        ("```py\na = 1\n```", "last", "a = 1\n"),
        ("```\na = 1\n```", "last", "a = 1\n"),
        ("```Python3\na = 1\n```", "last", "a = 1\n"),
        ("```python\na = 1\n```\ntext\n```python\nb = 2\n```", "last", "b = 2\n"),
        ("```python\na = 1\n```\ntext\n```python\nb = 2\n```", "first", "a = 1\n"),
        ("```bash\nls\n```\n```python\nb = 2\n```\n```text\nout\n```", "last", "b = 2\n"),
        ("```python\nunclosed = 1\n", "last", "unclosed = 1\n"),  # generation cut off at max length
        ("no code here", "last", None),
        ("```bash\nrm -rf /\n```", "last", None),
        ("inline `x = 1` only", "last", None),
    ],
)
def test_extract_code(text, which, expected):
    assert extract_code(text, which) == expected


def test_extract_code_rejects_bad_which():
    with pytest.raises(ValueError):
        extract_code("x", "middle")


# -------------------------------------------------------------------------------------------------------- HumanEval
HE_PROMPT = 'def add(a: int, b: int) -> int:\n    """Return a + b."""\n'
HE_TEST = "METADATA = {}\n\ndef check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n"


def test_humaneval_prompt_continuation(reward):
    scores = reward(["    return a + b\n", "    return a - b\n"], prompts=[HE_PROMPT] * 2, test=[HE_TEST] * 2,
                    entry_point=["add"] * 2)  # fmt: skip
    assert scores == [1.0, 0.0]


def test_humaneval_fenced_block_is_the_whole_program(reward):
    completion = fenced("def add(a, b):\n    return a + b")
    assert reward([completion], prompts=[HE_PROMPT], test=[HE_TEST], entry_point=["add"]) == [1.0]


def test_humaneval_test_may_use_prompt_helpers(reward):
    prompt = "def helper(x):\n    return 2 * x\n\ndef double_all(xs):\n"
    test = "def check(candidate):\n    assert candidate([1, 2]) == [helper(1), helper(2)]\n"
    assert reward(["    return [helper(x) for x in xs]\n"], prompts=[prompt], test=[test],
                  entry_point=["double_all"]) == [1.0]  # fmt: skip


# ------------------------------------------------------------------------------------------------------------- MBPP
MBPP_TESTS = ["assert square(2) == 4", "assert square(3) == 9", "assert square(-1) == 1"]


def test_mbpp_pass_and_fail(reward):
    good = fenced("def square(x):\n    return x * x")
    bad = fenced("def square(x):\n    return x + x")  # right for 2 only
    assert reward([good, bad], test_list=[MBPP_TESTS] * 2) == [1.0, 0.0]


def test_mbpp_partial_credit(partial):
    bad = fenced("def square(x):\n    return x + x")
    assert partial([bad], test_list=[MBPP_TESTS]) == [pytest.approx(1 / 3)]


def test_mbpp_setup_code(reward):
    completion = fenced("def total(xs):\n    return sum(xs)")
    scores = reward([completion], test_list=[["assert total(DATA) == 6"]], test_setup_code=["DATA = [1, 2, 3]"])
    assert scores == [1.0]


def test_plain_code_completion_without_fences(reward):
    assert reward(["def square(x):\n    return x ** 2\n"], test_list=[MBPP_TESTS]) == [1.0]


def test_failure_modes_score_zero_even_with_partial_credit(partial):
    completions = [
        fenced("def square(x)\n    return x * x"),  # syntax error
        fenced("def square(x):\n    while True:\n        pass"),  # timeout
        fenced("raise RuntimeError('crash at import')"),  # crash
        fenced("x = bytearray(4 << 30)\ndef square(x):\n    return x * x"),  # memory limit
    ]
    assert partial(completions, test_list=[MBPP_TESTS] * 4) == [0.0] * 4
    statuses = [r.status for r in partial.results(completions, test_list=[MBPP_TESTS] * 4)]
    assert statuses == ["error", "timeout", "error", "memory"]


def test_result_fields(reward):
    [result] = reward.results([fenced("def square(x):\n    return x + x")], test_list=[MBPP_TESTS])
    assert (result.status, result.passed, result.total) == ("failed", 1, 3)
    assert 0.0 < result.wall_time < 2.0


# ----------------------------------------------------------------------------------------------------- stdin/stdout
IO = {"inputs": ["1 2\n", "10 20\n", "-5 5\n"], "outputs": ["3\n", "30\n", "0\n"]}


def test_stdio_dict_and_json_string(reward):
    program = fenced("a, b = map(int, input().split())\nprint(a + b)")
    assert reward([program, program], input_output=[IO, json.dumps(IO)]) == [1.0, 1.0]


def test_stdio_whitespace_normalised_and_readers(reward):
    program = fenced(
        "import sys\nnums = sys.stdin.buffer.read().split()\nprint('  ', int(nums[0]) + int(nums[1]), '\\n\\n')"
    )
    io_spec = {"inputs": ["1\n2\n", "3 4"], "outputs": ["3", "7\n"]}
    assert reward([program], input_output=[io_spec]) == [1.0]
    assert outputs_match("1  2\n3\n", "1 2 3") and not outputs_match("12", "1 2")


def test_stdio_exit_and_partial(partial):
    program = fenced("a, b = map(int, input().split())\nprint(a + b if a < 5 else 0)\nexit(0)")
    assert partial([program], input_output=[IO]) == [pytest.approx(2 / 3)]


def test_stdio_list_of_lines(reward):
    io_spec = {"inputs": [["2", "3"]], "outputs": [["5"]]}
    assert reward([fenced("print(int(input()) + int(input()))")], input_output=[io_spec]) == [1.0]


# ---------------------------------------------------------------------------------------------- chat, None, batching
def test_chat_formatted_completions(reward):
    completions = [
        [{"role": "assistant", "content": fenced("def square(x):\n    return x * x")}],
        [{"role": "assistant", "content": [{"type": "text", "text": fenced("def square(x):\n    return 0")}]}],
    ]
    prompts = [[{"role": "user", "content": "Write square."}]] * 2
    assert reward(completions, prompts=prompts, test_list=[MBPP_TESTS] * 2) == [1.0, 0.0]


def test_samples_without_tests_get_none(reward):
    completions = [fenced("def square(x):\n    return x * x")] * 3
    call_based = {"fn_name": "f", "inputs": [[1]], "outputs": [2]}
    scores = reward(completions, test_list=[MBPP_TESTS, [], None], input_output=[None, call_based, {"inputs": []}])
    assert scores == [1.0, None, None]


def test_default_function_and_trl_kwargs():
    scores = code_execution_reward(
        [fenced("def square(x):\n    return x * x")], prompts=["p"], test_list=[MBPP_TESTS],
        completion_ids=[[1, 2]], trainer_state=None, log_metric=None, some_other_column=["x"],
    )  # fmt: skip
    assert scores == [1.0]


def test_first_vs_last_block():
    text = fenced("def square(x):\n    return x * x") + "\nA wrong variant:\n" + fenced("def square(x):\n    return 0")
    first, last = make_code_reward(extract="first", timeout=2.0), make_code_reward(timeout=2.0)
    assert (first([text], test_list=[MBPP_TESTS]), last([text], test_list=[MBPP_TESTS])) == ([1.0], [0.0])
    first.provider.close()
    last.provider.close()


def test_strict_types_can_be_turned_off():
    program = fenced("from fractions import Fraction\ndef half(x):\n    return Fraction(x, 2)")
    tests = [["from fractions import Fraction\nassert half(1) == Fraction(1, 2)"]]
    strict, lax = make_code_reward(timeout=2.0), make_code_reward(timeout=2.0, strict_types=False)
    assert (strict([program], test_list=tests), lax([program], test_list=tests)) == ([0.0], [1.0])
    strict.provider.close()
    lax.provider.close()


# --------------------------------------------------------------------------------------------- provider, pickling
class FakeRemoteProvider(CodeExecutionProvider):
    """What a remote service would implement: one batch in, one result per request out."""

    def __init__(self):
        self.seen = []

    def execute(self, requests):
        self.seen.extend(requests)
        return [ExecutionResult("failed", passed=1, total=len(r.tests) or len(r.inputs)) for r in requests]


def test_custom_provider_gets_requests():
    provider = FakeRemoteProvider()
    reward = make_code_reward(partial_credit=True, provider=provider)
    scores = reward([fenced("x = 1"), "y"], test_list=[["assert x == 1", "assert x"], None])
    assert scores == [0.5, None]
    [req] = provider.seen
    assert (
        isinstance(req, ExecutionRequest) and req.program == "x = 1\n" and req.tests == ["assert x == 1", "assert x"]
    )


def test_a_large_batch_comes_back_in_request_order(reward):
    """Chunks of different sizes (they shrink towards the end of a batch) run on two workers at once: every score
    still lands at its own request. Program i returns i; only every third one is tested for its own index."""
    n = 61
    completions = [fenced(f"def f():\n    return {i}") for i in range(n)]
    tests = [[f"assert f() == {i if i % 3 == 0 else -1}"] for i in range(n)]
    assert reward(completions, test_list=tests) == [1.0 if i % 3 == 0 else 0.0 for i in range(n)]


CALLER_IGNORES = """
import signal
for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)  # as nohup or a launcher leaves them: SIG_IGN survives execve
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})  # and so does the signal mask
from trl_ppo_plus.rewards.sandbox import ExecutionRequest, LocalSandboxProvider
program = "import signal\\nOK = all(signal.getsignal(s) == signal.SIG_DFL for s in (17, 15, 1))\\n"
program += "OK = OK and not signal.pthread_sigmask(signal.SIG_BLOCK, [])\\n"
program += "def f():\\n    return OK\\n"
print(LocalSandboxProvider(max_workers=1).execute([ExecutionRequest(program, tests=["assert f()"])])[0].status)
"""


def test_signals_the_caller_ignores_do_not_reach_the_worker_or_programs():
    """A worker started from a caller that ignores SIGCHLD still waits for its runners, and programs see SIGCHLD,
    SIGTERM and SIGHUP at their defaults, and none blocked: what a program does never depends on the caller's signal
    state."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", CALLER_IGNORES], capture_output=True, text=True, timeout=120)
    assert run.stdout.split() == ["passed"], run.stdout + run.stderr[-2000:]


def test_reward_is_picklable_and_named(reward):
    reward([fenced("def square(x):\n    return x * x")], test_list=[MBPP_TESTS])  # workers started
    clone = pickle.loads(pickle.dumps(reward))
    assert isinstance(clone, CodeExecutionReward) and clone.__name__ == "code_execution_reward"
    assert clone([fenced("def square(x):\n    return x * x")], test_list=[MBPP_TESTS]) == [1.0]
    clone.provider.close()
    provider = pickle.loads(pickle.dumps(LocalSandboxProvider(timeout=1.5)))
    assert provider.config.timeout == 1.5


@pytest.mark.parametrize("namespaces", [True, False])
def test_network_isolation_is_reported_as_it_behaves(namespaces, monkeypatch):
    """The reported mode matches what a sandboxed program meets: under `netns` it can make a socket but reaches no
    listener on this machine's loopback; under `socket-block` importing `socket` or making one fails. The program
    passes its tests only when what it observed agrees with the report (a wrong report fails this test)."""
    import socket
    import warnings

    from trl_ppo_plus.rewards import sandbox

    monkeypatch.setattr(sandbox, "_warned", set())  # the weak mode's warn-once stays for the test that checks it
    provider = LocalSandboxProvider(timeout=3.0, max_workers=1, namespaces=namespaces, allow_weak_isolation=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the weak mode warns once that it is weak
        mode = provider.network_isolation
    if namespaces:
        assert network_isolation() == mode  # the module-level report is the default provider's
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        program = (
            "try:\n    import socket\n    s = socket.socket()\nexcept Exception:\n    s = None\n"
            "reached = False\n"
            "if s is not None:\n"
            "    try:\n"
            f"        s.settimeout(1.0)\n        s.connect(('127.0.0.1', {port}))\n        reached = True\n"
            "    except OSError:\n        pass\n"
            "observed = 'socket-block' if s is None else 'netns'\n"
            f"def square(x):\n    return x * x if observed == {mode!r} and not reached else 0\n"
        )
        [result] = provider.execute([ExecutionRequest(program, tests=MBPP_TESTS)])
        provider.close()
    assert result.status == "passed", (mode, result)


def test_weak_mode_needs_an_explicit_opt_in():
    """`namespaces=False` asks for the weak mode: refused unless `allow_weak_isolation=True`, never silently."""
    provider = LocalSandboxProvider(timeout=1.0, max_workers=1, namespaces=False)
    with pytest.raises(SandboxIsolationError, match="namespaces=False.*allow_weak_isolation=True"):
        provider.execute([ExecutionRequest("x = 1", tests=["assert x == 1"])])


def test_fallback_without_namespaces_still_isolates(tmp_path):
    """The weak mode (opted in): temp dir, process-group + uid kill, socket-blocking audit hook, a warning."""
    provider = LocalSandboxProvider(timeout=1.0, max_workers=1, namespaces=False, allow_weak_isolation=True)
    with pytest.warns(UserWarning, match="weak isolation.*Not isolated"):
        assert provider.network_isolation == "socket-block"
    programs = [
        "def square(x):\n    return x * x",
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(30)\ndef square(x):\n    return x * x",
        "import socket\nsocket.socket()\ndef square(x):\n    return x * x",
    ]
    results = provider.execute([ExecutionRequest(p, tests=MBPP_TESTS) for p in programs])
    assert [r.status for r in results] == ["passed", "passed", "error"]
    provider.close()
    from test_sandbox_attacks import sandbox_processes

    assert sandbox_processes() == []  # the setsid'd sleeper was killed through its uid


@pytest.mark.parametrize(
    "program, tests",
    [  # MBPP tasks whose function is named like a builtin, with their reference solutions
        ("def sum(a, b):\n    return a + b", ["assert sum(1, 2) == 3", "assert sum(-1, 1) == 0"]),
        ("def max(a, b, c):\n    return a if a > b and a > c else (b if b > c else c)", ["assert max(1, 5, 3) == 5"]),
        ("import math\ndef pow(x, n):\n    return math.prod([x] * n)", ["assert pow(2, 10) == 1024"]),
    ],
)
def test_program_may_define_the_builtin_it_is_tested_on(reward, program, tests):
    assert reward([fenced(program)], test_list=[tests]) == [1.0]


def test_builtin_shadow_next_to_the_function_under_test_is_ignored(reward):
    """A `sorted` the program defines is not what `assert sorted(solve(1)) == [2]` calls: `solve` is under test."""
    program = "def sorted(*a, **k):\n    return [2]\ndef solve(x):\n    return [0]"
    assert reward([fenced(program)], test_list=[["assert sorted(solve(1)) == [2]"]]) == [0.0]


def test_misspelt_sandbox_limit_fails_at_construction():
    with pytest.raises(TypeError, match="allow_weak_isolaton"):
        make_code_reward(allow_weak_isolaton=True)

"""Verifiable code rewards: run completions against their tests in the local sandbox (TRL reward signature).

Three dataset formats, picked per sample from the columns that are present:

- HumanEval: `test` defines `check(candidate)`, `entry_point` names the function. A fenced block in the completion
  is the program; otherwise the completion continues the prompt and the program is prompt + completion.
- MBPP: `test_list` is a list of assert statements (one test each), with an optional `test_setup_code`.
- stdin/stdout (APPS / CodeContests): `input_output = {"inputs": [...], "outputs": [...]}`, a dict or a JSON string;
  outputs are compared after whitespace normalisation. (APPS's call-based samples, with `fn_name`, score `None`.)

Scores: 1.0 when every test passes (the fraction passed with `partial_credit=True`); 0.0 for a syntax error,
timeout, crash or memory limit; `None` for a sample without tests, so TRL skips this reward for it. A pass is never
inferred from an exit code: see `_sandbox_harness.py` for the per-run token the harness must send after the last test.

Usage:
```python
from trl_ppo_plus.rewards import make_code_reward

reward = make_code_reward(partial_credit=True, timeout=2.0)
trainer = GRPOTrainer(..., reward_funcs=[reward])  # dataset columns `test_list` etc. arrive as keyword lists
```
"""

import json
import re
from collections.abc import Sequence

from trl_ppo_plus.rewards.sandbox import (
    CodeExecutionProvider,
    ExecutionRequest,
    ExecutionResult,
    LocalSandboxProvider,
    SandboxConfig,
)


# ```python / ```py / ```python3 / bare ``` ... ``` ; an unclosed fence at the end counts (truncated generation).
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = {"", "python", "py", "python3", "py3"}


def extract_code(text: str, which: str = "last") -> str | None:
    """The last (or first) fenced Python block of `text` (` ```python `, ` ```py ` or bare fences), else `None`."""
    if which not in ("last", "first"):
        raise ValueError(f"which must be 'last' or 'first', got {which!r}")
    blocks = [m.group(2) for m in _FENCE.finditer(text) if m.group(1).lower() in _PYTHON_TAGS]
    if not blocks:
        return None
    return blocks[-1] if which == "last" else blocks[0]


def completion_text(completion) -> str:
    """A completion as text: plain strings pass through; for chat messages, the assistant turns joined."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    parts = []
    for message in completion:
        if message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content") or ""
        if isinstance(content, list):  # multimodal-style content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(content)
    return "\n".join(parts)


def _column(value, n):
    """TRL passes one entry per completion; also accept a single value for every sample."""
    if value is None:
        return [None] * n
    if isinstance(value, list | tuple) and len(value) == n:
        return list(value)
    return [value] * n


def _lines(value) -> str:
    return "\n".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


class CodeExecutionReward:
    """Picklable reward function; see the module docstring. Build it with `make_code_reward`.

    Args:
        partial_credit (`bool`, *optional*, defaults to `False`): score the fraction of tests passed instead of 0/1.
            A HumanEval `check` counts as one test.
        timeout (`float`, *optional*, defaults to `5.0`): wall-clock seconds per sample (all of its tests).
        provider (`CodeExecutionProvider` or `None`, *optional*): where programs run; `None` = a local sandbox.
        extract (`str`, *optional*, defaults to `"last"`): which fenced block is the program, `"last"` or `"first"`.
        strict_types (`bool`, *optional*, defaults to `True`): asserts may only compare exact builtin types, which
            defeats "always equal" objects; turn off for tests that compare e.g. `Fraction`s or `numpy` arrays.
        sandbox_kwargs: limits for the default local sandbox (`memory_bytes`, `max_workers`, ...; see
            `SandboxConfig`). Where the kernel refuses user namespaces the first call raises `SandboxIsolationError`
            unless `allow_weak_isolation=True` is passed here (see the README's "Code sandbox" section).
    """

    def __init__(self, partial_credit=False, timeout=5.0, provider=None, extract="last", strict_types=True,
                 **sandbox_kwargs):  # fmt: skip
        if extract not in ("last", "first"):
            raise ValueError(f"extract must be 'last' or 'first', got {extract!r}")
        self.partial_credit, self.timeout, self.extract, self.strict_types = (
            partial_credit,
            timeout,
            extract,
            strict_types,
        )
        SandboxConfig(timeout=timeout, **sandbox_kwargs)  # a misspelt limit fails here, not at the first call
        self.sandbox_kwargs = sandbox_kwargs
        self._provider = provider
        self.__name__ = "code_execution_reward"

    @property
    def provider(self) -> CodeExecutionProvider:
        if self._provider is None:
            self._provider = LocalSandboxProvider(timeout=self.timeout, **self.sandbox_kwargs)
        return self._provider

    def _program(self, text, prompt, continues_prompt):
        block = extract_code(text, self.extract)
        if block is not None:
            return block
        if continues_prompt and isinstance(prompt, str):
            return prompt + text
        return text

    def build_requests(self, completions, prompts=None, test=None, entry_point=None, test_list=None,
                       input_output=None, test_setup_code=None) -> list[ExecutionRequest | None]:  # fmt: skip
        """One `ExecutionRequest` per completion, or `None` where the sample has no tests."""
        n = len(completions)
        cols = zip(completions, *(_column(c, n) for c in (prompts, test, entry_point, test_list, input_output,
                                                           test_setup_code)))  # fmt: skip
        requests = []
        for completion, prompt, test_i, entry, asserts, io_spec, setup in cols:
            text = completion_text(completion)
            if test_i and entry:  # HumanEval
                program = self._program(text, prompt, continues_prompt=True)
                req = ExecutionRequest(program, setup=test_i, tests=[f"check({entry})"])
            elif asserts:  # MBPP
                asserts = [asserts] if isinstance(asserts, str) else list(asserts)
                req = ExecutionRequest(self._program(text, prompt, False), setup=setup or "", tests=asserts)
            elif io_spec:  # stdin / stdout
                spec = json.loads(io_spec) if isinstance(io_spec, str) else io_spec
                inputs, outputs = (
                    [_lines(x) for x in spec.get("inputs", [])],
                    [_lines(x) for x in spec.get("outputs", [])],
                )
                if not inputs or len(inputs) != len(outputs) or spec.get("fn_name"):  # call-based APPS: unsupported
                    requests.append(None)
                    continue
                req = ExecutionRequest(self._program(text, prompt, False), kind="stdio", inputs=inputs,
                                       expected_outputs=outputs)  # fmt: skip
            else:
                requests.append(None)
                continue
            req.strict, req.timeout = self.strict_types, self.timeout
            requests.append(req)
        return requests

    def score(self, result: ExecutionResult) -> float:
        if result.status == "passed":
            return 1.0
        if self.partial_credit and result.status == "failed":
            return result.fraction
        return 0.0

    def results(self, completions, **columns) -> list[ExecutionResult | None]:
        """Execution results (status, tests passed / total, wall time) per completion; `None` without tests."""
        requests = self.build_requests(completions, **columns)
        todo = [r for r in requests if r is not None]
        done = iter(self.provider.execute(todo) if todo else [])
        return [None if r is None else next(done) for r in requests]

    def __call__(self, completions: Sequence, prompts=None, test=None, entry_point=None, test_list=None,
                 input_output=None, test_setup_code=None, **kwargs) -> list[float | None]:  # fmt: skip
        results = self.results(completions, prompts=prompts, test=test, entry_point=entry_point, test_list=test_list,
                               input_output=input_output, test_setup_code=test_setup_code)  # fmt: skip
        return [None if r is None else self.score(r) for r in results]

    def __getstate__(self):
        state = dict(self.__dict__)
        if isinstance(state["_provider"], LocalSandboxProvider):
            state["_provider"] = None  # workers belong to one process; recreated lazily from timeout + sandbox_kwargs
        return state


def make_code_reward(partial_credit: bool = False, timeout: float = 5.0, provider: CodeExecutionProvider | None = None,
                     extract: str = "last", strict_types: bool = True, **sandbox_kwargs) -> CodeExecutionReward:  # fmt: skip
    """A configured, picklable code-execution reward (see `CodeExecutionReward` for the arguments)."""
    return CodeExecutionReward(partial_credit, timeout, provider, extract, strict_types, **sandbox_kwargs)


_DEFAULT: CodeExecutionReward | None = None


def code_execution_reward(completions, prompts=None, test=None, entry_point=None, test_list=None, input_output=None,
                          **kwargs) -> list[float | None]:  # fmt: skip
    """Default code reward (0/1, 5 s timeout, local sandbox) with TRL's reward-function signature."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = CodeExecutionReward()
    return _DEFAULT(completions, prompts=prompts, test=test, entry_point=entry_point, test_list=test_list,
                    input_output=input_output, test_setup_code=kwargs.get("test_setup_code"))  # fmt: skip

"""Verifiable rewards with TRL's reward-function signature: `f(completions, **dataset_columns) -> list[float | None]`.

Submodules are imported lazily so that importing one reward does not pull in the other's dependencies.
"""

import importlib


_EXPORTS = {
    # math.py: answer extraction and symbolic equivalence that never hang
    "math_accuracy_reward": "math",
    "extract_answer": "math",
    "verify_answer": "math",
    "format_reward": "math",
    "make_math_reward": "math",
    "MathAccuracyReward": "math",
    "FormatReward": "math",
    "get_shared_pool": "math_verify_pool",
    # code.py / sandbox.py: program execution against tests in a local sandbox
    "code_execution_reward": "code",
    "make_code_reward": "code",
    "CodeExecutionReward": "code",
    "extract_code": "code",
    "CodeExecutionProvider": "sandbox",
    "LocalSandboxProvider": "sandbox",
    "ExecutionRequest": "sandbox",
    "ExecutionResult": "sandbox",
    "SandboxConfig": "sandbox",
    "SandboxIsolationError": "sandbox",
    "network_isolation": "sandbox",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Evaluation metrics: pass@k / maj@k estimators, and `evaluate` modules that ship inside the package.

    >>> from trl_ppo_plus import metrics
    >>> accuracy = metrics.load("verifiable_accuracy")      # offline: the module is read from the installed package
    >>> accuracy.compute(predictions=["... \\boxed{4}"], references=["4"])
    {'accuracy': 1.0}

The same modules load with plain `evaluate.load(path)`, where `path` is `trl_ppo_plus.metrics.module_path(name)`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .estimators import maj_at_k, majority_answer, mean_maj_at_k, mean_pass_at_k, pass_at_k


MODULES = ("verifiable_accuracy", "code_pass_at_k")

__all__ = [
    "MODULES",
    "load",
    "maj_at_k",
    "majority_answer",
    "mean_maj_at_k",
    "mean_pass_at_k",
    "module_path",
    "pass_at_k",
]


def module_path(name: str) -> str:
    """Filesystem path of the packaged `evaluate` module `name` (its script is `<path>/<name>.py`)."""
    if name not in MODULES:
        raise ValueError(f"unknown metric {name!r}; the packaged ones are {MODULES}")
    path = resources.files(__name__) / name
    if not isinstance(path, Path):  # zipped install: evaluate needs a real directory
        raise RuntimeError(f"{path} is not on the filesystem; install trl-ppo-plus unzipped to use evaluate modules")
    return str(path)


def load(name: str, **kwargs):
    """`evaluate.load` on the packaged module `name` ("verifiable_accuracy" or "code_pass_at_k"); no network needed."""
    import evaluate

    return evaluate.load(module_path(name), **kwargs)

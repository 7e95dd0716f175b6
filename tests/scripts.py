"""Import a repository script that is not in a package (`benchmarks/`, `examples/`), so tests check the code users run."""

import importlib.util
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def load_script(relative_path: str):
    """Import `ROOT/relative_path` once, registered in `sys.modules` first (its dataclasses resolve annotations there)."""
    module_name = "script_" + relative_path.removesuffix(".py").replace("/", "_")
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, ROOT / relative_path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]

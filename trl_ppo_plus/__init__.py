"""trl-ppo-plus: PPO for RLHF and RLVR on TRL 1.16+.

Public names are imported lazily, so `import trl_ppo_plus.kl_control` (or the rewards) does not pull in torch/TRL.
"""

import importlib


__version__ = "0.1.0"

_EXPORTS = {
    "PPOConfig": "config",
    "PPOTrainer": "trainer",
    "FixedKLController": "kl_control",
    "AdaptiveKLController": "kl_control",
    "PIDKLController": "kl_control",
    "build_kl_controller": "kl_control",
    "load_policy_and_value": "modeling",
    "publish": "hub",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

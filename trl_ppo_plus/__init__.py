"""trl-ppo-plus: PPO for RLHF and RLVR on TRL 1.16+."""

__version__ = "0.1.0"

from trl_ppo_plus.config import PPOConfig  # noqa: E402
from trl_ppo_plus.kl_control import AdaptiveKLController, FixedKLController, PIDKLController  # noqa: E402
from trl_ppo_plus.trainer import PPOTrainer  # noqa: E402


__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "PIDKLController",
    "PPOConfig",
    "PPOTrainer",
    "__version__",
]

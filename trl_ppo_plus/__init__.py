"""trl-ppo-plus: PPO for RLHF and RLVR on TRL 1.16+."""

__version__ = "0.1.0"

__all__ = ["__version__"]

"""Evaluation and safety callbacks for PPO / GRPO training with verifiable rewards (installed as
`trl_ppo_plus.callbacks`). All are `transformers.TrainerCallback`s and work with `trl_ppo_plus.PPOTrainer` and TRL's
`GRPOTrainer` alike.

- `VerifiableEvalCallback`: held-out `eval/accuracy`, `eval/pass@k`, `eval/maj@k`, `eval/mean_length`. It logs
  through its trainer: `PPOTrainer(callbacks=[...])` binds it; other trainers take `VerifiableEvalCallback(...,
  trainer=trainer)`.
- `KLGuardCallback`: checkpoint and stop when the KL stays too high, or the loss or KL goes NaN/inf.
- `RewardHackingCallback`: warn or stop when train reward rises while eval accuracy falls, or length collapses.
- `CompletionSamplesCallback`: per-eval tables of prompts, completions and rewards (console, wandb/trackio, JSONL).
- `TrainingCurvesCallback`: `training_curves.png` at each save and at the end.
"""

from .completion_samples import CompletionSamplesCallback
from .kl_guard import KLGuardCallback
from .reward_hacking import RewardHackingCallback
from .training_curves import TrainingCurvesCallback, plot_training_curves
from .verifiable_eval import EvalResults, VerifiableEvalCallback


__all__ = [
    "CompletionSamplesCallback",
    "EvalResults",
    "KLGuardCallback",
    "RewardHackingCallback",
    "TrainingCurvesCallback",
    "VerifiableEvalCallback",
    "plot_training_curves",
]

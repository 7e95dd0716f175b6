"""Warn (and optionally stop) when training looks like reward hacking: the train reward climbs while held-out accuracy
falls, or the completion length collapses or explodes."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import TrainerCallback
from transformers.utils import logging


logger = logging.get_logger(__name__)


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and value == value else None  # NaN != NaN


class RewardHackingCallback(TrainerCallback):
    """Flag the signatures of reward hacking from the logs alone.

    1. **Divergence.** At each new eval accuracy (logged by `VerifiableEvalCallback`), look back over the last
       `window` evaluations: if eval accuracy fell by more than `min_delta` while the mean train reward rose by more
       than `min_delta`, flag it. The reward change compares the mean of the newer half of the train-reward logs since
       the oldest of those evaluations with the mean of the older half, so both signals cover the same span of steps.
       (open-r1 users watched a format reward climb to 0.86 while accuracy fell to 0.)
    2. **Length.** When the last `window` values of `length_key` all sit below `min_length` (collapse: empty answers)
       or all above `max_length` (explosion: every completion truncated). `max_length=None` uses 95% of the trainer's
       `max_completion_length` when the config has one.

    Each condition warns once when it starts and re-arms when it clears. With `stop=True` it also sets
    `control.should_training_stop` (on every rank, as the logs are identical; only rank 0 writes). Everything flagged
    is kept in `alerts`.

    Args:
        window: evaluations (for divergence) and length logs (for length) to look back over. At least 2.
        stop: stop training on a flag instead of only warning.
        min_delta: how much accuracy must fall and reward must rise to count, in their own units.
        min_length: mean completion length (tokens) below which the length has collapsed.
        max_length: mean completion length above which it has exploded; `None`: 95% of `args.max_completion_length`.
        reward_keys: log keys tried in order for the train reward (PPOTrainer's score first, then GRPO's reward).
        accuracy_key: the eval accuracy log key.
        length_key: the mean completion length log key.

    Usage:
    ```python
    from trl_ppo_plus.callbacks import RewardHackingCallback, VerifiableEvalCallback

    evaluator = VerifiableEvalCallback(test, [accuracy_reward], eval_steps=50)
    trainer = PPOTrainer(..., callbacks=[evaluator, RewardHackingCallback(window=3, stop=True)])
    trainer.train()
    ```
    """

    def __init__(
        self,
        window: int = 3,
        stop: bool = False,
        min_delta: float = 0.02,
        min_length: float = 2.0,
        max_length: float | None = None,
        reward_keys: Sequence[str] = ("objective/scores", "reward"),
        accuracy_key: str = "eval/accuracy",
        length_key: str = "completions/mean_length",
    ):
        if window < 2:
            raise ValueError(f"window must be >= 2 to see a trend, got {window}")
        self.window = window
        self.stop = stop
        self.min_delta = min_delta
        self.min_length = min_length
        self.max_length = max_length
        self.reward_keys = tuple(reward_keys)
        self.accuracy_key = accuracy_key
        self.length_key = length_key
        self.rewards: list[tuple[int, float]] = []  # (step, train reward)
        self.accuracies: list[tuple[int, float]] = []  # (step, eval accuracy)
        self.lengths: list[float] = []
        self.alerts: list[dict] = []  # {"step", "kind", "message"}
        self._active: set[str] = set()  # conditions currently flagged (warn once per episode)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        step = state.global_step
        reward = next((_number(logs[k]) for k in self.reward_keys if _number(logs.get(k)) is not None), None)
        if reward is not None:
            self.rewards.append((step, reward))
        flags = {}
        accuracy = _number(logs.get(self.accuracy_key))
        if accuracy is not None:
            self.accuracies.append((step, accuracy))
            flags["divergence"] = self._divergence()
        length = _number(logs.get(self.length_key))
        if length is not None:
            self.lengths.append(length)
            max_length = self.max_length
            if max_length is None and getattr(args, "max_completion_length", None):
                max_length = 0.95 * args.max_completion_length
            recent = self.lengths[-self.window :]
            full = len(recent) == self.window
            flags["length_collapse"] = (
                f"{self.length_key} below min_length={self.min_length:g} for {self.window} logs (last {length:.1f})"
                if full and all(v < self.min_length for v in recent)
                else None
            )
            flags["length_explosion"] = (
                f"{self.length_key} above max_length={max_length:g} for {self.window} logs (last {length:.1f})"
                if full and max_length is not None and all(v > max_length for v in recent)
                else None
            )
        for kind, message in flags.items():
            if message is None:
                self._active.discard(kind)
            elif kind not in self._active:
                self._flag(kind, message, state, control)

    def _divergence(self) -> str | None:
        if len(self.accuracies) < 2:
            return None
        recent = self.accuracies[-self.window :]
        (start, acc_old), (_, acc_new) = recent[0], recent[-1]
        rewards = [r for s, r in self.rewards if s >= start]
        if len(rewards) < 2:
            return None
        half = len(rewards) // 2
        reward_old, reward_new = sum(rewards[:half]) / half, sum(rewards[half:]) / (len(rewards) - half)
        if reward_new - reward_old > self.min_delta and acc_old - acc_new > self.min_delta:
            return (
                f"train reward rose {reward_old:.3f} -> {reward_new:.3f} while {self.accuracy_key} fell "
                f"{acc_old:.3f} -> {acc_new:.3f} since step {start}: possible reward hacking"
            )
        return None

    def _flag(self, kind, message, state, control) -> None:
        self._active.add(kind)
        self.alerts.append({"step": state.global_step, "kind": kind, "message": message})
        if self.stop:
            control.should_training_stop = True
        if state.is_world_process_zero:
            logger.warning(
                f"RewardHacking [{kind}] at step {state.global_step}: {message}" + (" (stopping)" if self.stop else "")
            )

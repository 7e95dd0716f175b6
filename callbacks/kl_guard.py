"""Stop a run whose policy drifts too far from the reference (KL above a bound for a while), or whose loss or KL turns
NaN/inf, after saving a checkpoint to inspect or resume from."""

from __future__ import annotations

import math
from collections.abc import Sequence

from transformers import TrainerCallback
from transformers.utils import logging


logger = logging.get_logger(__name__)


def _is_bad(value) -> bool:
    return isinstance(value, (int, float)) and not math.isfinite(value)


class KLGuardCallback(TrainerCallback):
    """Stop training when the KL to the reference stays above `max_kl` for `patience` consecutive logs, or at once
    when the loss or the KL is NaN or inf.

    Before stopping it asks the trainer for a checkpoint (`control.should_save`): the check runs in `on_log`, which the
    Trainer calls from `_maybe_log_save_evaluate` *before* it looks at `should_save` and before the training loop
    looks at `should_training_stop`, so `checkpoint-<step>` is written and then the loop ends. The reason is logged
    as a warning and kept in `stop_reason`. The decision is taken on every rank (logs are identical across ranks), so
    all ranks stop together; only rank 0 writes the message.

    Which KL: the first of `kl_keys` present in a log. PPOTrainer logs `objective/kl` (the mean summed per-sequence
    KL, the quantity adaptive KL control targets); GRPOTrainer with `beta > 0` logs `kl` (mean per-token k3). These
    differ in scale by roughly the completion length, so pick `max_kl` for the key you watch.

    Args:
        max_kl: the bound. Usual targets are 0.1 (veRL) to 6 (Ziegler et al. 2019) for summed KL; a guard sits a few
            times above the target.
        patience: consecutive logs above `max_kl` before stopping; 1 stops at the first one.
        kl_keys: log keys tried in order for the KL value.
        loss_keys: log keys checked for NaN/inf (with every KL key).

    Usage:
    ```python
    from trl_ppo_plus.callbacks import KLGuardCallback

    trainer = PPOTrainer(..., callbacks=[KLGuardCallback(max_kl=20.0, patience=3)])
    trainer.train()  # stops with "KLGuard: objective/kl=31.2 > max_kl=20.0 for 3 consecutive logs ..."
    ```
    """

    def __init__(
        self,
        max_kl: float,
        patience: int = 3,
        kl_keys: Sequence[str] = ("objective/kl", "kl"),
        loss_keys: Sequence[str] = ("loss",),
    ):
        if max_kl <= 0 or patience < 1:
            raise ValueError(f"need max_kl > 0 and patience >= 1, got max_kl={max_kl}, patience={patience}")
        self.max_kl = max_kl
        self.patience = patience
        self.kl_keys = tuple(kl_keys)
        self.loss_keys = tuple(loss_keys)
        self.num_over = 0  # consecutive logs with KL > max_kl
        self.stop_reason: str | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.num_over, self.stop_reason = 0, None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or self.stop_reason is not None:
            return
        reason = None
        for key in (*self.loss_keys, *self.kl_keys):
            if _is_bad(logs.get(key)):
                reason = f"{key}={logs[key]} is not finite"
                break
        kl_key = next((k for k in self.kl_keys if isinstance(logs.get(k), (int, float))), None)
        if reason is None and kl_key is not None:
            self.num_over = self.num_over + 1 if logs[kl_key] > self.max_kl else 0
            if self.num_over >= self.patience:
                reason = f"{kl_key}={logs[kl_key]:.4g} > max_kl={self.max_kl:g} for {self.num_over} consecutive logs"
        if reason is None:
            return
        self.stop_reason = f"KLGuard: {reason} at step {state.global_step}; saving a checkpoint and stopping training"
        control.should_save = True
        control.should_training_stop = True
        if state.is_world_process_zero:
            logger.warning(self.stop_reason)

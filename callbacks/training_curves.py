"""Plot the training curves that matter for PPO/GRPO with verifiable rewards (reward, KL, beta, value loss, eval
accuracy) from `state.log_history` into `<output_dir>/training_curves.png`, at each save and at the end. The model
card embeds the file. Uses matplotlib's Agg canvas directly: no display, no pyplot global state."""

from __future__ import annotations

import os
from collections.abc import Sequence

from transformers import TrainerCallback


PNG_NAME = "training_curves.png"

# (panel title, log keys plotted in it). A panel with no data is skipped.
PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("reward", ("objective/scores", "objective/rlhf_reward", "reward")),
    ("KL to reference", ("objective/kl", "kl")),
    ("β (KL coefficient)", ("objective/kl_coef",)),
    ("value loss", ("loss/value_avg",)),
    ("eval accuracy", ("eval/accuracy", "eval/pass@*", "eval/maj@*")),
)


def _series(log_history: Sequence[dict], key: str) -> dict[str, tuple[list[int], list[float]]]:
    """`{key: (steps, values)}` for finite numeric values; `key` may end in `*` to match a prefix."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for entry in log_history:
        for name, value in entry.items():
            matches = name.startswith(key[:-1]) if key.endswith("*") else name == key
            if matches and isinstance(value, (int, float)) and value == value and abs(value) != float("inf"):
                steps, values = out.setdefault(name, ([], []))
                steps.append(entry.get("step", 0))
                values.append(float(value))
    return out


def plot_training_curves(log_history: Sequence[dict], path: str, panels=PANELS) -> bool:
    """Write the curves PNG to `path`; returns False (and writes nothing) when no panel has data."""
    from matplotlib.figure import Figure

    filled = []
    for title, keys in panels:
        series = {}
        for key in keys:
            series.update(_series(log_history, key))
        if series:
            filled.append((title, series))
    if not filled:
        return False
    cols = min(3, len(filled))
    rows = (len(filled) + cols - 1) // cols
    fig = Figure(figsize=(5 * cols, 3.4 * rows), layout="constrained")
    for i, (title, series) in enumerate(filled):
        ax = fig.add_subplot(rows, cols, i + 1)
        for name, (steps, values) in series.items():
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=100)  # Figure.savefig uses the Agg canvas: works headless
    os.replace(tmp, path)  # readers (the Hub publisher) never see a half-written file
    return True


class TrainingCurvesCallback(TrainerCallback):
    """Write `<output_dir>/training_curves.png` at every checkpoint save and at the end of training (rank 0 only).

    Panels: reward (`objective/scores`, `objective/rlhf_reward`, `reward`), KL (`objective/kl`, `kl`),
    β (`objective/kl_coef`), value loss (`loss/value_avg`), eval accuracy (`eval/accuracy`, `eval/pass@*`,
    `eval/maj@*`), each against the step; panels without data are left out.

    Args:
        filename: PNG name inside `args.output_dir`.

    Usage:
    ```python
    from trl_ppo_plus.callbacks import TrainingCurvesCallback

    trainer = PPOTrainer(..., callbacks=[TrainingCurvesCallback()])
    trainer.train()  # output_dir/training_curves.png
    ```
    """

    def __init__(self, filename: str = PNG_NAME):
        self.filename = filename
        self.path: str | None = None  # last file written

    def _write(self, args, state) -> None:
        if not state.is_world_process_zero:
            return
        os.makedirs(args.output_dir, exist_ok=True)
        path = os.path.join(args.output_dir, self.filename)
        if plot_training_curves(state.log_history, path):
            self.path = path

    def on_save(self, args, state, control, **kwargs):
        self._write(args, state)

    def on_train_end(self, args, state, control, **kwargs):
        self._write(args, state)

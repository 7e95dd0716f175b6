"""Show what the policy writes at each evaluation: prompt, completion and per-function rewards, as a rich console
table, a wandb / trackio table, and JSONL lines in `output_dir` (`eval_completions.jsonl`, which the Hub publisher
uploads). The rows come from `VerifiableEvalCallback.last_results`: nothing is generated twice."""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any

from transformers import TrainerCallback

from .verifiable_eval import EvalResults, VerifiableEvalCallback


JSONL_NAME = "eval_completions.jsonl"


def _as_text(value: Any) -> str:
    """A prompt or completion as text: strings as is, conversations as `role: content` lines."""
    if isinstance(value, list):
        return "\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in value if isinstance(m, dict))
    return str(value)


def rows_from_results(results: EvalResults) -> list[dict[str, Any]]:
    """Flat rows, one per completion: step, kind, index, sample, prompt, completion, answer, correct, length, then
    one column per reward function (TRL's completions-table layout)."""
    rows = []
    for r in results.records:
        row = {
            k: r[k] for k in ("step", "kind", "index", "sample", "prompt", "completion", "answer", "correct", "length")
        }
        row.update(r["rewards"])
        rows.append(row)
    return rows


class CompletionSamplesCallback(TrainerCallback):
    """After each evaluation of `eval_callback`, print a sample table, log it to wandb / trackio and append every row
    to `<output_dir>/eval_completions.jsonl`.

    The trigger is `on_log`: `VerifiableEvalCallback` stores its results and then logs them, so the table is written
    once per evaluation, whatever the callback order. Rank 0 only.

    Args:
        eval_callback: the `VerifiableEvalCallback` whose results to show.
        num_print: rows printed to the console per evaluation (the first greedy ones, else the first samples).
        filename: the JSONL file name inside `args.output_dir` (one JSON object per completion, appended across evals
            and resumed runs; `step` tells evaluations apart).
        table_key: the key of the table in wandb / trackio.

    Usage:
    ```python
    from trl_ppo_plus.callbacks import CompletionSamplesCallback, VerifiableEvalCallback

    evaluator = VerifiableEvalCallback(test, [accuracy_reward], eval_steps=50)
    trainer = PPOTrainer(..., callbacks=[CompletionSamplesCallback(evaluator, num_print=4)])  # binds the evaluator
    trainer.train()  # output_dir/eval_completions.jsonl grows by one block per evaluation

    # Other trainers, TRL's `trainer=` convention:
    evaluator = VerifiableEvalCallback(test, [accuracy_reward], eval_steps=50, trainer=grpo_trainer)
    grpo_trainer.add_callback(CompletionSamplesCallback(evaluator, num_print=4))
    ```
    """

    def __init__(
        self,
        eval_callback: VerifiableEvalCallback,
        num_print: int = 4,
        filename: str = JSONL_NAME,
        table_key: str = "eval/completions",
    ):
        self.eval_callback = eval_callback
        self.num_print = num_print
        self.filename = filename
        self.table_key = table_key
        self._shown: EvalResults | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        results = self.eval_callback.last_results
        if results is None or results is self._shown:
            return
        self._shown = results
        if not state.is_world_process_zero:
            return
        rows = rows_from_results(results)
        self._write_jsonl(args.output_dir, rows)
        self._print(rows, results)
        self._log_table(args, rows)

    def _write_jsonl(self, output_dir: str, rows: list[dict]) -> None:
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, self.filename), "a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")

    def _print(self, rows: list[dict], results: EvalResults) -> None:
        if self.num_print <= 0 or importlib.util.find_spec("rich") is None:
            return
        from rich.console import Console
        from rich.table import Table

        metrics = "  ".join(f"{k.removeprefix('eval/')}={v:.3f}" for k, v in results.metrics.items())
        table = Table(title=f"Eval completions, step {results.step}  ({metrics})", show_lines=True)
        for column in ("prompt", "completion", "answer", "correct", *results.reward_names):
            table.add_column(column, overflow="fold", style="bright_yellow" if column == "prompt" else None)
        for row in rows[: self.num_print]:
            rewards = ["-" if row[n] is None else f"{row[n]:.2f}" for n in results.reward_names]
            table.add_row(
                _as_text(row["prompt"]), _as_text(row["completion"]), str(row["answer"]), str(row["correct"]), *rewards
            )
        Console().print(table)

    def _log_table(self, args, rows: list[dict]) -> None:
        report_to = args.report_to if isinstance(args.report_to, list) else [args.report_to]
        backends = []
        if "wandb" in report_to and importlib.util.find_spec("wandb") is not None:
            import wandb

            if wandb.run is not None:
                backends.append(wandb)
        if "trackio" in report_to and importlib.util.find_spec("trackio") is not None:
            import trackio

            backends.append(trackio)
        if not backends:
            return
        import pandas as pd

        df = pd.DataFrame(
            [{**r, "prompt": _as_text(r["prompt"]), "completion": _as_text(r["completion"])} for r in rows]
        )
        df["answer"] = df["answer"].astype(str)
        for backend in backends:
            backend.log({self.table_key: backend.Table(dataframe=df)})

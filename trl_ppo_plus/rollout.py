"""Scores of a rollout: the weighted sum of the reward functions, with GRPO's metric names and completion logs."""

from __future__ import annotations

import torch
from accelerate.utils import gather_object
from trl.trainer.utils import nanstd, pad


def pad_rollout(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_token_id: int):
    """Token lists to `(prompt_ids, prompt_mask)` left-padded `(B, P)` and `(completion_ids, completion_mask)`
    right-padded `(B, C)`, all int64 (an empty first completion must not make them float)."""

    def padded(rows, value, side):
        return pad([torch.tensor(row, dtype=torch.long) for row in rows], value, side)

    ones = [[1] * len(row) for row in prompt_ids], [[1] * len(row) for row in completion_ids]
    return (
        padded(prompt_ids, pad_token_id, "left"),
        padded(ones[0], 0, "left"),
        padded(completion_ids, pad_token_id, "right"),
        padded(ones[1], 0, "right"),
    )


def score_and_log(trainer, mode: str, rewards_per_func: torch.Tensor, local: slice, prompts, completions):
    """Turn GRPO's gathered `(N, F)` rewards (NaN where a function returned None) into local scores `(B,)`.

    Returns `(scores, scorable)`: the weighted sum over functions that scored each completion, and a bool mask of
    completions at least one function scored (the others carry no learning signal). Logs `reward`, `reward_std` and
    `rewards/<func>/{mean,std}` like GRPO, and feeds its completions table.

    Raises:
        ValueError: a reward function returned ±inf (one such score would turn every weight into NaN, and
            `logging_nan_inf_filter` would hide it). GRPO stores `None` as NaN, so NaN means "not scored".
    """
    check_finite_rewards(rewards_per_func, trainer.reward_func_names)
    unscorable = rewards_per_func.isnan().all(dim=1)  # (N,) no function scored this completion
    weights = trainer.reward_weights.to(rewards_per_func.device)
    scores = (rewards_per_func * weights).nansum(dim=1)  # (N,) a None counts as a missing term, not as 0 reward
    _log_reward_stats(trainer._metrics[mode], trainer.reward_func_names, rewards_per_func, scores, unscorable)
    _add_to_completions_table(trainer, prompts, completions, rewards_per_func, scores)
    _flush_reward_function_logs(trainer, trainer._metrics[mode], n_local=len(prompts))
    return scores[local], ~unscorable[local]


def check_finite_rewards(rewards_per_func: torch.Tensor, names: list[str]) -> None:
    """Raise naming the first reward function that returned ±inf, with the row it scored."""
    infinite = rewards_per_func.isinf()  # (N, F)
    if bool(infinite.any()):
        row, func = (int(i) for i in infinite.nonzero()[0])
        raise ValueError(
            f"Reward function {names[func]!r} returned {rewards_per_func[row, func].item()} for completion {row} of "
            "the rollout batch. Scores must be finite (return None to skip a completion)."
        )


def _log_reward_stats(metrics, names, rewards_per_func, scores, unscorable) -> None:
    """`rewards/<f>/mean|std` over the completions each function scored; `reward`, `reward_std` over scorable ones."""
    columns = torch.cat(
        [rewards_per_func, scores.masked_fill(unscorable, float("nan")).unsqueeze(1)], dim=1
    )  # (N, F+1)
    keys = [(f"rewards/{name}/mean", f"rewards/{name}/std") for name in names] + [("reward", "reward_std")]
    for (mean_key, std_key), mean, std in zip(
        keys, torch.nanmean(columns, dim=0).tolist(), nanstd(columns, dim=0).tolist(), strict=True
    ):
        metrics[mean_key].append(mean)
        metrics[std_key].append(std)


def _add_to_completions_table(trainer, prompts, completions, rewards_per_func, scores) -> None:
    """Rows for GRPO's completions table (`log_completions`); its `advantages` column holds PPO's score."""
    table = trainer._logs
    columns = {"prompt": gather_object(prompts), "completion": gather_object(completions), "advantages": scores}
    for key, values in columns.items():
        table[key].extend(values.tolist() if isinstance(values, torch.Tensor) else values)
    for name, values in zip(trainer.reward_func_names, rewards_per_func.T.tolist(), strict=True):
        table["rewards"][name].extend(values)


def _keys_of_every_rank(local: dict) -> list[str]:
    """The union of all ranks' keys, sorted, so every rank issues the same collectives in the same order."""
    return sorted(set(gather_object(list(local))))


def _flush_reward_function_logs(trainer, metrics, n_local: int) -> None:
    """Move what reward functions sent through `log_extra` (table columns) and `log_metric` (means over every
    rank's values) into the trainer's logs, then empty both buffers."""
    extra, pending = trainer._pending_extra_logs, trainer._pending_metrics
    for column in _keys_of_every_rank(extra):
        trainer._logs["extra"][column].extend(gather_object(extra.get(column, [None] * n_local)))
    for name in _keys_of_every_rank(pending):
        values = pending.get(name, [])
        sum_and_count = torch.tensor(
            [sum(values), len(values)], dtype=torch.float32, device=trainer.accelerator.device
        )
        total, count = trainer.accelerator.gather(sum_and_count).view(-1, 2).sum(dim=0).tolist()
        metrics[name].append(total / max(count, 1))
    extra.clear()
    pending.clear()

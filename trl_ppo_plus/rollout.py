"""Scores of a rollout: the weighted sum of the reward functions, with GRPO's metric names and completion logs."""

from __future__ import annotations

import torch
from accelerate.utils import gather_object
from trl.trainer.utils import nanstd


def score_and_log(trainer, mode: str, rewards_per_func: torch.Tensor, local: slice, prompts, completions):
    """Turn GRPO's gathered `(N, F)` rewards (NaN where a function returned None) into local scores `(B,)`.

    Returns `(scores, scorable)`: the weighted sum over functions that scored each completion, and a bool mask of
    completions at least one function scored (the others carry no learning signal). Logs `reward`, `reward_std` and
    `rewards/<func>/{mean,std}` like GRPO, and feeds its completions table.
    """
    weights = trainer.reward_weights.to(rewards_per_func.device)
    unscorable = torch.isnan(rewards_per_func).all(dim=1)
    rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)  # (N,)
    metrics = trainer._metrics[mode]
    for i, name in enumerate(trainer.reward_func_names):
        metrics[f"rewards/{name}/mean"].append(torch.nanmean(rewards_per_func[:, i]).item())
        metrics[f"rewards/{name}/std"].append(nanstd(rewards_per_func[:, i]).item())
    logged = rewards.masked_fill(unscorable, float("nan"))
    metrics["reward"].append(torch.nanmean(logged).item())
    metrics["reward_std"].append(nanstd(logged).item())

    trainer._logs["prompt"].extend(gather_object(prompts))
    trainer._logs["completion"].extend(gather_object(completions))
    for i, name in enumerate(trainer.reward_func_names):
        trainer._logs["rewards"][name].extend(rewards_per_func[:, i].tolist())
    trainer._logs["advantages"].extend(rewards.tolist())  # GRPO's column; for PPO it holds the score
    for column in sorted(set(gather_object(list(trainer._pending_extra_logs)))):
        values = trainer._pending_extra_logs.get(column, [None] * len(prompts))
        trainer._logs["extra"][column].extend(gather_object(values))
    trainer._pending_extra_logs.clear()
    for name in sorted(set(gather_object(list(trainer._pending_metrics)))):
        values = trainer._pending_metrics.get(name, [])
        stats = torch.tensor([sum(values), len(values)], dtype=torch.float32, device=rewards.device)
        total, count = trainer.accelerator.gather(stats).view(-1, 2).sum(dim=0).tolist()
        metrics[name].append(total / max(count, 1))
    trainer._pending_metrics.clear()
    return rewards[local], ~unscorable[local]

"""The fast path: when one optimizer step trains on a rollout, the loss forward is also the rollout forward.

PPO needs, for every sampled token, the log-prob π_old and the value V_old at rollout time: for the ratio, the value
clip, the KL penalty and GAE. The slow path reads them with two no-grad forwards right after generation (policy +
values, then the reference). When the rollout is consumed by exactly one optimizer step, all its micro-batches'
loss forwards run on the parameters that generated it, so their log-probs and values, detached, *are* π_old and
V_old: GRPO's `per_token_logps.detach()` at `num_iterations=1`, extended to PPO's critic, KL penalty and GAE.

That step is `num_ppo_epochs=1` and `num_mini_batches=1`; its `gradient_accumulation_steps` micro-batches
accumulate gradients, and no parameter moves before the last one. On the fast path:

1. `PPOTrainer._generate_and_score_completions` generates and scores, and stops before the forwards.
2. Each micro-batch's `_compute_loss` runs the reference forward (no grad, only when there is a reference), the
   policy (and critic) forward with gradients, then `complete_rollout`: the KL, the per-token rewards, GAE and the
   returns of its rows, written into the micro-batch as the slow path would have; then the loss.
3. After the rollout's last micro-batch, the rollout's metrics and the KL controller's update, once per rollout
   with the same numbers as the slow path (the controller's β is not read in between).

Per-sequence math (KL, rewards, GAE, VAPO's length-adaptive λ) is exact per micro-batch. Statistics of the whole
rollout are exact as well: the metrics and the controller's KL are computed after the last micro-batch, from the
rows of all of them, and reward normalisation already runs at generation time. The slow path is kept when:

- `num_ppo_epochs > 1` or `num_mini_batches > 1`: the rollout is trained on again after the parameters moved;
- `whiten_advantages` / `whiten_rewards` with more than one micro-batch per rollout: whitening needs every row's
  advantages before the first loss (with one micro-batch, that micro-batch is the whole rollout);
- `target_kl_early_stop`: skipped micro-batches would never complete the rollout (with one mini-batch per rollout
  the ratio is exactly 1, so it could not trigger anyway);
- a rollout in which no token carries a loss, on any process: its update is skipped without loss forwards;
- evaluation rollouts.

With dropout left on (`disable_dropout=False`), the fast path's ratio is exactly 1, where the slow path's would
carry two dropout masks. `tests/test_fast_path.py` checks that both paths give the same parameters, metrics and
controller state.
"""

from __future__ import annotations

import torch
from trl.models.utils import disable_gradient_checkpointing


def applies(args) -> bool:
    """Whether a training rollout of this `PPOConfig` may take the fast path (the rollout itself may still not)."""
    one_step = args.num_ppo_epochs == 1 and args.num_mini_batches == 1
    whole_rollout_whitening = (args.whiten_advantages or args.whiten_rewards) and args.steps_per_generation > 1
    return one_step and not whole_rollout_whitening and args.target_kl_early_stop is None


def reference_logps(trainer, input_ids, attention_mask, logits_to_keep):
    """The reference's log-probs `(B, C)` of one micro-batch (None without a reference), run before its loss forward:
    under gradient checkpointing, the backward replays that forward and must find the model as it left it."""
    with torch.no_grad(), disable_gradient_checkpointing(trainer.model, trainer.args.gradient_checkpointing_kwargs):
        return trainer._reference_logps(
            input_ids, attention_mask, logits_to_keep, trainer.args.local_rollout_forward_batch_size
        )


def complete_rollout(trainer, inputs: dict, logps, entropies, values, ref_logps) -> None:
    """Fill in one micro-batch of a fast-path rollout from its loss forward's outputs `(B, C)`, in place; log the
    rollout's metrics and update the KL controller after its last micro-batch."""
    beta = trainer._rollout_kl_coef
    stats = trainer._score_tokens(inputs, logps.detach(), entropies.detach(), values.detach(), ref_logps, beta)
    trainer._fast_rollout_stats.append(stats)
    if len(trainer._fast_rollout_stats) == trainer.args.steps_per_generation:  # the rollout's last micro-batch
        parts, trainer._fast_rollout_stats = trainer._fast_rollout_stats, []
        trainer._log_rollout("train", beta, **{key: torch.cat([p[key] for p in parts]) for key in parts[0]})

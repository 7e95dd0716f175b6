"""PPO's defaults learn a sparse, small-scale reward at a GRPO-typical learning rate (issue 18).

A random-init 2-layer Llama, 16 completions × 8 tokens per rollout, lr 3e-3: the settings at which TRL's GRPOTrainer
learns. The reward is this test's own (not the learning suite's): a tenth of the fraction of a completion's characters
that are upper-case letters, about 0.0075 at the start. With raw scores (`reward_normalization="none"`, the old
default, with β = 0.05 as then) the per-token KL penalty summed over the completion outweighs a score this small.
TRL's GRPOTrainer at these settings (its defaults, 40 rollouts, seed 0; measured once, not run here): mean score
0.0075 over the first 10 rollouts → 0.0174 over the last 10. PPO's defaults must pass THRESHOLD, which GRPO passes.
"""

import pytest

from trl_ppo_plus import PPOConfig, PPOTrainer
from trl_ppo_plus.tiny import tiny_model_dir


ROLLOUTS = 40
THRESHOLD = 0.015  # GRPO reaches 0.0174 at these settings (module docstring); the start is 0.0075


class UpperFraction:
    """A tenth of the fraction of a completion's characters that are upper-case letters (a small, sparse score)."""

    __name__ = "upper_fraction"

    def __init__(self):
        self.curve: list[float] = []

    def __call__(self, completions, **kwargs):
        scores = [0.1 * sum(c.isupper() for c in text) / max(len(text), 1) for text in completions]
        self.curve.append(sum(scores) / len(scores))
        return scores


def train(tmp_path, trainer_cls=PPOTrainer, config_cls=PPOConfig, **overrides):
    from datasets import Dataset

    model = str(tiny_model_dir(family="llama", num_hidden_layers=2, hidden_size=64, intermediate_size=128))
    data = Dataset.from_list([{"prompt": f"item {i} is"} for i in range(64)])
    reward = UpperFraction()
    args = config_cls(
        output_dir=str(tmp_path),
        learning_rate=3e-3,
        per_device_train_batch_size=16,
        max_completion_length=8,
        temperature=1.0,
        seed=0,
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        bf16=False,
        max_steps=ROLLOUTS,
        **overrides,
    )
    if config_cls is PPOConfig:
        args.max_steps = ROLLOUTS * args.num_ppo_epochs * args.num_mini_batches  # as many completions as GRPO
    trainer_cls(model=model, reward_funcs=reward, args=args, train_dataset=data).train()
    return reward.curve[:ROLLOUTS]


@pytest.mark.slow
def test_ppo_defaults_learn_a_sparse_small_reward_as_grpo_does(tmp_path):
    curve = train(tmp_path)
    first, last = sum(curve[:10]) / 10, sum(curve[-10:]) / 10
    assert last > THRESHOLD, f"PPO defaults: {first:.4f} → {last:.4f}, GRPO reaches {THRESHOLD}"

"""Small shared builders for trainer tests: a toy verifiable task and fast PPO arguments."""

from datasets import Dataset
from transformers import AutoTokenizer

from trl_ppo_plus import PPOConfig


def prompts_dataset(n: int = 32) -> Dataset:
    return Dataset.from_dict({"prompt": [f"Ann has {i} apples and gets {i % 7} more." for i in range(n)]})


class DigitReward:
    """Fraction of completion tokens that are digits: dense enough for a random tiny model to learn from."""

    def __init__(self, model_path: str):
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.__name__ = "digit_reward"

    def __call__(self, completions, completion_ids, **kwargs):
        tokens = self.tokenizer.convert_ids_to_tokens
        return [sum(tokens(t).isdigit() for t in ids) / max(len(ids), 1) for ids in completion_ids]


def fast_args(output_dir, **overrides) -> PPOConfig:
    defaults = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        num_ppo_epochs=1,
        max_completion_length=6,
        max_steps=3,
        logging_steps=1,
        learning_rate=3e-3,
        temperature=1.0,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    return PPOConfig(**{**defaults, **overrides})


def logged(trainer, key: str) -> list[float]:
    return [h[key] for h in trainer.state.log_history if key in h]

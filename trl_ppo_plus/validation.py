"""Checks on the trainer's inputs that run before any model loads, so bad input fails fast and names the field."""

from __future__ import annotations

import os


def _tokenizer_vocab(source, processing_class=None) -> dict[str, int] | None:
    """The vocabulary of `source` (a path/id or a model object), read from its tokenizer files only."""
    from transformers import AutoTokenizer

    if processing_class is not None:
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        return tokenizer.get_vocab()
    if not isinstance(source, str):
        source = getattr(getattr(source, "config", None), "_name_or_path", None)
        if not source or not os.path.isdir(source):
            return None  # an in-memory model without its files: nothing to compare against
    try:
        return AutoTokenizer.from_pretrained(source).get_vocab()
    except (OSError, ValueError):
        return None


def _describe(value) -> str:
    return repr(value) if isinstance(value, str) else type(value).__name__


def check_models_before_loading(model, reward_funcs: list, value_model, processing_class, kwargs: dict) -> None:
    """Raise `ValueError` naming the argument and its value when the models cannot work together.

    - there must be a reward: `reward_funcs`, `reward_model` or `PPOConfig.reward_model_path`;
    - a value model reads the policy's token ids, so its tokenizer vocabulary must equal the policy's;
    - so must a reward model passed as TRL <= 1.12's `reward_model` / `reward_model_path`. (Reward models given in
      `reward_funcs` with their own `reward_processing_classes` are re-tokenized by GRPO and may differ.)
    """
    if model is None:
        raise ValueError(
            "PPOTrainer needs a policy: pass `model=` (id, path or model) or set PPOConfig.sft_model_path"
        )
    if not reward_funcs and kwargs.get("environment_factory") is None:
        raise ValueError(
            "PPOTrainer got no reward: reward_funcs=None, reward_model=None and PPOConfig.reward_model_path=None. "
            "Pass a reward function (e.g. trl_ppo_plus.rewards.math_accuracy_reward) or a reward model."
        )
    candidates = [("value_model", value_model)] if value_model is not None else []
    candidates += [("reward_model", f) for f in reward_funcs if isinstance(f, str) or hasattr(f, "config")]
    if not candidates:
        return
    policy_vocab = _tokenizer_vocab(model, processing_class)
    if policy_vocab is None:
        return
    for name, other in candidates:
        vocab = _tokenizer_vocab(other)
        if vocab is not None and vocab != policy_vocab:
            raise ValueError(
                f"{name}={_describe(other)} has a tokenizer vocabulary ({len(vocab)} tokens) that does not match the "
                f"policy's ({len(policy_vocab)} tokens); a {name.replace('_', ' ')} must share the policy's tokenizer."
            )

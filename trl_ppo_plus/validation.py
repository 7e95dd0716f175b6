"""Checks on the trainer's inputs that run before any model loads, so bad input fails fast and names the field."""

from __future__ import annotations


def _base_vocab(tokenizer) -> dict[str, int]:
    """The tokenizer's vocabulary without added tokens: a pad token added at run time (TRL's `ppo.py` adds `[PAD]`)
    does not make two otherwise identical tokenizers differ."""
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    added = set(tokenizer.added_tokens_encoder)
    return {token: i for token, i in tokenizer.get_vocab().items() if token not in added}


def _tokenizer_vocab(source, processing_class=None) -> dict[str, int] | None:
    """The base vocabulary of `source` (a path/id or a model object): the given processing class, else its own
    tokenizer files. `None` when it has none: transformers would build an empty default tokenizer for such a folder
    (a sequence classifier saved by `save_pretrained` alone), which says nothing about the ids the model reads."""
    from transformers import AutoTokenizer

    from trl_ppo_plus.legacy import has_tokenizer_files

    if processing_class is not None:
        return _base_vocab(processing_class)
    if not has_tokenizer_files(source):
        return None
    if not isinstance(source, str):
        source = source.config._name_or_path
    try:
        return _base_vocab(AutoTokenizer.from_pretrained(source))
    except (OSError, ValueError):
        return None


def _describe(value) -> str:
    return repr(value) if isinstance(value, str) else type(value).__name__


def check_models_before_loading(model, reward_funcs: list, value_model, processing_class, kwargs: dict) -> None:
    """Raise `ValueError` naming the argument and its value when the models cannot work together.

    - there must be a reward: `reward_funcs`, `reward_model` or `PPOConfig.reward_model_path`;
    - a value model reads the policy's token ids, so when both it and the policy have a tokenizer, their base
      vocabularies (tokens added after loading do not count) must be equal.

    Reward models are not checked: GRPO re-tokenizes prompt + completion for each with its own tokenizer (or its
    `reward_processing_classes` entry; one saved without a tokenizer gets the policy's, as in TRL <= 1.12).
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
    if value_model is None:
        return
    vocab = _tokenizer_vocab(value_model)
    if vocab is None:
        return
    policy_vocab = _tokenizer_vocab(model, processing_class)
    if policy_vocab is not None and vocab != policy_vocab:
        raise ValueError(
            f"value_model={_describe(value_model)} has a tokenizer vocabulary ({len(vocab)} tokens) that does not "
            f"match the policy's ({len(policy_vocab)} tokens); a value model reads the policy's token ids, so it must "
            f"share the policy's tokenizer."
        )

"""TRL <= 1.12 PPOTrainer compatibility: positional arguments and pre-tokenized datasets."""

from __future__ import annotations


def adapt_legacy_call(model, args, train_dataset, eval_dataset, processing_class):
    """Map a TRL <= 1.12 style call onto the GRPO-style one. Returns `(model, args, train, eval, processing_class)`."""
    return model, args, train_dataset, eval_dataset, processing_class

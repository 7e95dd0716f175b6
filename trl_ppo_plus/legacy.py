"""TRL <= 1.12 PPOTrainer compatibility: its positional order, pre-tokenized datasets and `generate_completions`.

A script written for TRL <= 1.12 runs with only its import line changed:

    trainer = PPOTrainer(args=training_args, processing_class=tokenizer, model=policy, ref_model=ref_policy,
                         reward_model=reward_model, value_model=value_model, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, peft_config=peft_config)
    trainer.train(); trainer.save_model(out); trainer.generate_completions()
"""

from __future__ import annotations

from transformers import TrainingArguments


# TRL <= 1.12: PPOTrainer(args, processing_class, model, ref_model, reward_model, train_dataset, value_model, ...)
LEGACY_POSITIONAL = ("args", "processing_class", "model", "ref_model", "reward_model", "train_dataset", "value_model")
# Ours (GRPO's order): PPOTrainer(model, reward_funcs, args, train_dataset, eval_dataset, processing_class, value_model)
OUR_POSITIONAL = ("model", "reward_funcs", "args", "train_dataset", "eval_dataset", "processing_class", "value_model")


def adapt_legacy_call(call: dict) -> dict:
    """Rename a TRL <= 1.12 positional call (its first argument is the config) to our keywords."""
    if not isinstance(call.get("model"), TrainingArguments):
        return call
    positional = [call[name] for name in OUR_POSITIONAL]
    return {
        **call,
        **dict(zip(OUR_POSITIONAL, [None] * len(OUR_POSITIONAL))),
        **dict(zip(LEGACY_POSITIONAL, positional)),
    }


def prompts_from_input_ids(dataset, tokenizer):
    """TRL <= 1.12 datasets hold pre-tokenized `input_ids`; GRPO's pipeline reads a text `prompt` column."""
    if dataset is None or "prompt" in dataset.column_names or "input_ids" not in dataset.column_names:
        return dataset
    if tokenizer is None:
        raise ValueError("train_dataset holds `input_ids` (TRL <= 1.12 style): pass processing_class= to decode them")
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)

    def decode(batch):
        return {"prompt": tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)}

    return dataset.map(
        decode, batched=True, remove_columns=[c for c in ("input_ids", "lengths") if c in dataset.column_names]
    )


def generate_completions(trainer, sampling: bool = False, num_prompts: int = 8) -> list[dict]:
    """TRL <= 1.12's `generate_completions`: complete eval prompts with the policy, score them, print a table."""
    import torch
    from rich.console import Console
    from rich.table import Table

    dataset = trainer.eval_dataset if trainer.eval_dataset is not None else trainer.train_dataset
    rows = dataset.select(range(min(num_prompts, len(dataset))))
    prompts = list(rows["prompt"])
    tokenizer = trainer._tokenizer
    policy = trainer.accelerator.unwrap_model(trainer.model)
    was_training = policy.training
    policy.eval()
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(trainer.accelerator.device)
    with torch.no_grad():
        out = policy.generate(
            **encoded,
            max_new_tokens=trainer.max_completion_length,
            do_sample=sampling,
            temperature=trainer.temperature if sampling else None,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=trainer.eos_token_ids,
        )
    policy.train(was_training)
    completion_ids = [ids[encoded.input_ids.shape[1] :].tolist() for ids in out]
    completion_ids = [
        ids[: ids.index(tokenizer.pad_token_id)] if tokenizer.pad_token_id in ids else ids for ids in completion_ids
    ]
    completions = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    inputs = [dict(row) for row in rows]
    scores = trainer._calculate_rewards(inputs, prompts, completions, completion_ids)
    records = [
        {"prompt": p, "completion": c, "score": float(torch.nansum(s * trainer.reward_weights.to(s.device)))}
        for p, c, s in zip(prompts, completions, scores[: len(prompts)])
    ]
    if trainer.is_world_process_zero():
        table = Table(title=f"completions at step {trainer.state.global_step}")
        for column in ("prompt", "completion", "score"):
            table.add_column(column)
        for r in records:
            table.add_row(r["prompt"], r["completion"], f"{r['score']:.3f}")
        Console().print(table)
    return records

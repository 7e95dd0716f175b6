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


def prompts_from_input_ids(dataset, tokenizer, num_proc: int | None = None):
    """TRL <= 1.12 datasets hold pre-tokenized `input_ids`; GRPO's pipeline reads a text `prompt` column.

    The ids are decoded with their special tokens (a prompt built with `apply_chat_template` keeps `<|im_start|>`),
    except those the tokenizer adds itself to any text (a BOS), which GRPO adds again when it re-tokenizes. A dict of
    datasets (an `eval_dataset` per name) is converted dataset by dataset.
    """
    if isinstance(dataset, dict):
        return {name: prompts_from_input_ids(d, tokenizer, num_proc) for name, d in dataset.items()}
    if dataset is None or "prompt" in dataset.column_names or "input_ids" not in dataset.column_names:
        return dataset
    if tokenizer is None:
        raise ValueError("train_dataset holds `input_ids` (TRL <= 1.12 style): pass processing_class= to decode them")
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    prefix, suffix = _ids_added_to_any_text(tokenizer)

    def strip(ids: list[int]) -> list[int]:
        if prefix and ids[: len(prefix)] == prefix:
            ids = ids[len(prefix) :]
        if suffix and ids[-len(suffix) :] == suffix:
            ids = ids[: -len(suffix)]
        return ids

    def decode(batch):
        ids = [strip(list(x)) for x in batch["input_ids"]]
        return {"prompt": tokenizer.batch_decode(ids, skip_special_tokens=False)}

    return dataset.map(
        decode,
        batched=True,
        num_proc=num_proc,
        remove_columns=[c for c in ("input_ids", "attention_mask", "lengths") if c in dataset.column_names],
    )


def _ids_added_to_any_text(tokenizer) -> tuple[list[int], list[int]]:
    """The special ids the tokenizer puts before and after every text (e.g. `([bos], [])`)."""
    marker = tokenizer("x", add_special_tokens=False)["input_ids"]
    ids = tokenizer("x")["input_ids"]
    start = next((i for i in range(len(ids)) if ids[i : i + len(marker)] == marker), 0)
    return ids[:start], ids[start + len(marker) :]


def never_embed_pad(model, pad_token_id: int | None) -> None:
    """Map `pad_token_id` to a valid row at `model`'s input embedding, when the model has no row for it.

    TRL <= 1.12 scripts add a pad token at run time (`tokenizer.add_special_tokens({"pad_token": "[PAD]"})`) and
    never resize the models: the id is one past their vocabulary, and embedding it raises `IndexError`. Padding is
    masked out of attention, so its embedding never matters (TRL <= 1.12 masked pad ids before every forward). The
    hook sits on the embedding layer, so the model still sees the real ids; generation, log-prob and value forwards
    all pass through it. A sequence classifier scores the last token that is not `config.pad_token_id`: that becomes
    the run-time pad id, or a right-padded reward batch would score a pad for all but its longest text.
    """
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if pad_token_id is None or embeddings is None or not hasattr(embeddings, "num_embeddings"):
        return
    if pad_token_id < embeddings.num_embeddings or getattr(embeddings, "_ppo_pad_hook", None) is not None:
        return

    def replace_pad(module, args, kwargs):
        if args:
            return (args[0].masked_fill(args[0] == pad_token_id, 0), *args[1:]), kwargs
        ids = kwargs["input"]
        return args, {**kwargs, "input": ids.masked_fill(ids == pad_token_id, 0)}

    embeddings._ppo_pad_hook = embeddings.register_forward_pre_hook(replace_pad, with_kwargs=True)
    if type(model).__name__.endswith("ForSequenceClassification"):
        model.config.get_text_config().pad_token_id = pad_token_id


def embeddable_pad_id(tokenizer, model) -> int:
    """A pad id the model can embed and score: the tokenizer's, or 0 when the model has no row for it."""
    pad_token_id = tokenizer.pad_token_id
    embeddings = model.get_input_embeddings()
    if pad_token_id is None or pad_token_id >= embeddings.num_embeddings:
        return 0
    return pad_token_id


def has_tokenizer_files(source) -> bool:
    """Whether a model path (or a model loaded from a local path) has tokenizer files of its own."""
    import os

    if not isinstance(source, str):
        source = getattr(getattr(source, "config", None), "_name_or_path", None)
    if not source:
        return False  # an in-memory model: no files at all
    if not os.path.isdir(source):
        return True  # a Hub id: its repository has a tokenizer (GRPO loads it, as before)
    names = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model")
    return any(os.path.exists(os.path.join(source, n)) for n in names)


def reward_processing_classes_for(reward_funcs: list, reward_processing_classes, policy_tokenizer):
    """TRL <= 1.12 reward models read the policy's token ids: one saved without a tokenizer gets the policy's.

    GRPO re-tokenizes prompt + completion for every reward model, with `reward_processing_classes` or the model's own
    tokenizer; a sequence classifier saved without tokenizer files (TRL's `ppo.py` reward models) has none.
    """
    if reward_processing_classes is None:
        reward_processing_classes = [None] * len(reward_funcs)
    elif not isinstance(reward_processing_classes, list):
        reward_processing_classes = [reward_processing_classes]
    if len(reward_processing_classes) != len(reward_funcs) or policy_tokenizer is None:
        return reward_processing_classes  # GRPO raises its own error on a length mismatch
    return [
        policy_tokenizer if given is None and _is_model(f) and not has_tokenizer_files(f) else given
        for f, given in zip(reward_funcs, reward_processing_classes)
    ]


def _is_model(func) -> bool:
    return isinstance(func, str) or hasattr(func, "config")


def set_legacy_attributes(model, value_model) -> None:
    """TRL <= 1.12's `trainer.model` was a wrapper with `.policy` and `.value_model`: its tests and scripts read them.

    Plain attributes (not submodules: `model.policy` is `model` itself), so parameters, state dicts and saving are
    unchanged.
    """
    object.__setattr__(model, "policy", model)
    object.__setattr__(model, "value_model", value_model)


def generate_completions(trainer, sampling: bool = False, num_prompts: int = 8) -> list[dict]:
    """TRL <= 1.12's `generate_completions`: complete eval prompts with the policy, score them, print a table."""
    import torch
    from rich.console import Console
    from rich.table import Table

    dataset = trainer.eval_dataset if trainer.eval_dataset is not None else trainer.train_dataset
    if isinstance(dataset, dict):  # one eval dataset per name: complete prompts of the first
        dataset = next(iter(dataset.values()))
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


def get_kbit_device_map() -> dict[str, int] | None:
    """TRL <= 1.12's `trl.get_kbit_device_map` (gone from TRL 1.16): each process loads a k-bit model on its device."""
    import torch
    from accelerate import PartialState

    return {"": PartialState().local_process_index} if torch.cuda.is_available() else None

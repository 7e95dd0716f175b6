"""`trl-ppo-plus ppo`: train with PPO from a YAML config and/or flags, in the style of `trl grpo`.

    trl-ppo-plus ppo --config cfg.yaml --learning_rate 1e-5
    trl-ppo-plus ppo --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name prompts.jsonl --reward math \
        --load_in_4bit --use_peft --lora_r 16 --output_dir runs/ppo
    accelerate launch --num_processes 2 -m trl_ppo_plus.ppo_cli --config cfg.yaml

The dataset needs a `prompt` column (plus what the rewards read, e.g. `solution`); the scripts in `examples/` map
GSM8K / MBPP columns and carry their own YAML configs.

Arguments are TRL's `ScriptArguments` (dataset), our `PPOConfig`, TRL's `ModelConfig` (model, `--load_in_4bit`,
`--use_peft`, `--lora_r` ...) and `RewardArguments` below.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field


@dataclass
class RewardArguments:
    """Reward selection for the `ppo` command."""

    reward: list[str] = field(
        default_factory=lambda: ["math"],
        metadata={
            "help": "Reward(s): 'math' (verifiable math accuracy), 'code' (sandboxed tests), 'format', a reward model "
            "path or id, or 'module:function'. Several after one flag (--reward math format; a repeated --reward "
            "keeps only the last); weights via --reward_weights."
        },
    )
    eval_steps_accuracy: int = field(
        default=0, metadata={"help": "Run VerifiableEvalCallback every N steps (0: off)."}
    )


def resolve_reward(spec: str):
    """'math' / 'code' / 'format' / 'pkg.module:function' / a reward-model path or id → a `reward_funcs` entry."""
    from trl_ppo_plus import rewards

    if spec == "math":
        return rewards.make_math_reward()
    if spec == "code":
        return rewards.make_code_reward()
    if spec == "format":
        return rewards.format_reward
    if ":" in spec and not os.path.exists(spec):
        module, _, name = spec.partition(":")
        return getattr(importlib.import_module(module), name)
    return spec  # a reward model: GRPOTrainer loads it as AutoModelForSequenceClassification(num_labels=1)


def load_prompts(script_args):
    """A Hub dataset id, or a local .json/.jsonl/.csv/.parquet file (offline tests and examples use files)."""
    from datasets import load_dataset

    name = script_args.dataset_name
    builders = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
    ext = os.path.splitext(name)[1]
    if ext in builders:
        return load_dataset(builders[ext], data_files=name)
    return load_dataset(name, name=script_args.dataset_config)


def train_and_eval_splits(dataset, script_args, eval_size: int | None = None, seed: int = 0):
    """`(train, eval)` from a `DatasetDict`. The eval split is `dataset_test_split` when there is one, else (with
    `eval_size`) that many examples held out of the train split: a single local file has only `train`. `eval_size`
    also caps a given eval split (generating on all of GSM8K's 1,319 test problems at every evaluation is slow)."""
    train = dataset[script_args.dataset_train_split]
    if script_args.dataset_test_split in dataset:
        evaluation = dataset[script_args.dataset_test_split]
    elif eval_size:
        split = train.train_test_split(test_size=eval_size, seed=seed)
        train, evaluation = split["train"], split["test"]
    else:
        return train, None
    if eval_size and len(evaluation) > eval_size:
        evaluation = evaluation.shuffle(seed=seed).select(range(eval_size))
    return train, evaluation


def build_model(model_args, training_args, **qlora_kwargs):
    """The policy argument and peft_config for PPOTrainer from TRL's ModelConfig flags. `qlora_kwargs` (e.g.
    `reward_adapter=`) go to `load_policy_and_value` under `--load_in_4bit --use_peft`."""
    from trl import get_peft_config, get_quantization_config

    if model_args.load_in_4bit and model_args.use_peft:  # QLoRA: one 4-bit base for policy, critic and reference
        from trl_ppo_plus.modeling import policy_and_value_from_model_config

        return policy_and_value_from_model_config(model_args, training_args, **qlora_kwargs), None
    if qlora_kwargs:
        raise ValueError(f"{sorted(qlora_kwargs)} need the shared-base QLoRA layout: pass --load_in_4bit --use_peft")
    quantization_config = get_quantization_config(model_args)
    training_args.model_init_kwargs = {
        **(training_args.model_init_kwargs or {}),
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        **({"quantization_config": quantization_config} if quantization_config is not None else {}),
    }
    return model_args.model_name_or_path, get_peft_config(model_args)


def add_accuracy_eval(trainer, eval_dataset, reward, eval_steps: int) -> None:
    """Held-out accuracy every `eval_steps` with `VerifiableEvalCallback` (correct = the reward reaches 1.0)."""
    if not eval_steps or eval_dataset is None:
        return
    from trl_ppo_plus.callbacks import VerifiableEvalCallback

    args = trainer.args
    VerifiableEvalCallback(
        eval_dataset,
        reward_funcs=[reward],
        eval_steps=eval_steps,
        max_new_tokens=args.max_completion_length,
        batch_size=args.per_device_eval_batch_size,
        seed=args.seed,
    ).bind(trainer)


def train_save_publish(trainer, dataset_name: str | None = None) -> None:
    """Train (resuming if asked), save the policy and critic, the state and the card; push when `push_to_hub`."""
    args = trainer.args
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model()  # the policy (adapter at the root under QLoRA), the critic in value_model/
    trainer.save_state()  # trainer_state.json: global_step and the log history
    trainer.create_model_card(dataset_name=dataset_name)
    if args.push_to_hub:
        trainer.push_to_hub(dataset_name=dataset_name)


def main(argv: list[str] | None = None) -> int:
    from trl import ModelConfig, ScriptArguments, TrlParser

    from trl_ppo_plus import PPOConfig, PPOTrainer

    parser = TrlParser(
        (ScriptArguments, PPOConfig, ModelConfig, RewardArguments),
        prog="trl-ppo-plus ppo",
        usage="trl-ppo-plus ppo [--config cfg.yaml] [--any_field value ...]",
        description="Train with PPO. --config FILE reads every field below from a YAML file; flags override it.",
    )
    script_args, training_args, model_args, reward_args = parser.parse_args_and_config(args=argv)
    dataset = load_prompts(script_args)
    model, peft_config = build_model(model_args, training_args)
    reward_funcs = [resolve_reward(spec) for spec in reward_args.reward]
    train, evaluation = train_and_eval_splits(dataset, script_args)
    trainer = PPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation if training_args.eval_strategy != "no" else None,
        peft_config=peft_config,
    )
    add_accuracy_eval(trainer, evaluation, reward_funcs[0], reward_args.eval_steps_accuracy)
    train_save_publish(trainer, script_args.dataset_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

# /// script
# dependencies = [
#     "trl-ppo-plus",
#     "peft",
#     "bitsandbytes",
# ]
# ///
"""Classic RLHF in three steps (Ouyang et al. 2022, arXiv:2203.02155): SFT, a reward model, then PPO with a critic.

Usage (one consumer GPU; see the YAML):

    python examples/ppo_rlhf_reward_model.py --config examples/ppo_rlhf_reward_model.yaml

The reward model as a LoRA adapter on the same 4-bit base as the policy and the critic (no second model in memory):

    python examples/ppo_rlhf_reward_model.py --config examples/ppo_rlhf_reward_model.yaml \
        --load_in_4bit --use_peft --reward_as_adapter

Run some steps only (each reads what the previous ones wrote under `output_dir`): `--steps ppo`.

Steps and where they write:
1. `sft`: TRL's `SFTTrainer` on the `chosen` conversations of the preference data → `output_dir/sft` (a full model;
   with `--use_peft` the LoRA is trained, 4-bit with `--load_in_4bit`, then merged into the full-precision base).
2. `reward`: TRL's `RewardTrainer` on the `chosen` / `rejected` pairs, from the SFT model → `output_dir/reward_model`:
   a full `AutoModelForSequenceClassification`, or with `--reward_as_adapter` a `SEQ_CLS` LoRA (+ its score head)
   trained on the 4-bit SFT base, which `load_policy_and_value(reward_adapter=...)` loads as a third adapter.
3. `ppo`: PPO from the SFT model on the prompts (`prompt`, or the `chosen` conversation without its last turn),
   scored by the reward model, with a critic → `output_dir/ppo`. The critic is initialised from the reward model
   (TRL ≤ 1.12's recipe), or under `--load_in_4bit --use_peft` is the value adapter on the shared base.

Data: `--dataset_name` gives the PPO prompts and, unless `--preference_dataset_name` is set, the preference pairs
(`chosen` / `rejected`, conversational or with an explicit `prompt`, as `trl-lib/ultrafeedback_binarized`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field


STEPS = ("sft", "reward", "ppo")
SFT_DIR, REWARD_DIR, PPO_DIR = "sft", "reward_model", "ppo"  # not "reward": that is the reward adapter's name


@dataclass
class RLHFArguments:
    """The SFT and reward-model steps; PPO takes `PPOConfig` as usual."""

    steps: list[str] = field(
        default_factory=lambda: list(STEPS), metadata={"help": "Steps to run, of sft/reward/ppo."}
    )
    preference_dataset_name: str | None = field(
        default=None, metadata={"help": "Preference pairs (chosen/rejected) for SFT and the reward model."}
    )
    max_length: int = field(default=1024, metadata={"help": "Token budget of SFT and reward-model sequences."})
    sft_max_steps: int = field(default=500, metadata={"help": "SFT optimizer steps."})
    sft_learning_rate: float = field(default=2e-5, metadata={"help": "SFT learning rate (LoRA: ~10x more)."})
    reward_max_steps: int = field(default=500, metadata={"help": "Reward-model optimizer steps."})
    reward_learning_rate: float = field(default=1e-5, metadata={"help": "Reward-model learning rate."})
    reward_as_adapter: bool = field(
        default=False,
        metadata={"help": "Train the reward model as a LoRA on the 4-bit SFT base (needs --load_in_4bit --use_peft)."},
    )


# Fields the SFT and reward steps share with the PPO config: one place to set precision, batch and logging.
SHARED_FIELDS = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "gradient_checkpointing",
    "bf16",
    "fp16",
    "logging_steps",
    "report_to",
    "seed",
    "disable_tqdm",
)


def step_config(config_cls, training_args, output_dir: str, model_args, **fields):
    """An `SFTConfig` / `RewardConfig` with the PPO run's shared fields; checkpoints off, only the final model."""
    shared = {name: getattr(training_args, name) for name in SHARED_FIELDS if name not in fields}
    init = {"dtype": model_args.dtype, "attn_implementation": model_args.attn_implementation}
    return config_cls(output_dir=output_dir, save_strategy="no", model_init_kwargs=init, **shared, **fields)


def to_sft(example: dict) -> dict:
    """A preference pair → an SFT example on its chosen response."""
    if "prompt" in example:  # explicit prompt: chosen is the completion
        return {"prompt": example["prompt"], "completion": example["chosen"]}
    return {"messages": example["chosen"]}  # implicit prompt: chosen is the whole conversation


def to_ppo_prompt(example: dict) -> dict:
    """A row → a PPO prompt: its `prompt`, else the `chosen` conversation without the final assistant turn."""
    if "prompt" in example:
        return {"prompt": example["prompt"]}
    if not isinstance(example["chosen"], list):
        raise ValueError("Without a `prompt` column the prompt is read from a conversational `chosen` column")
    return {"prompt": example["chosen"][:-1]}


def run_sft(pairs, root: str, training_args, model_args, rlhf_args) -> str:
    import torch
    from trl import SFTConfig, SFTTrainer, get_peft_config, get_quantization_config

    from trl_ppo_plus.modeling import merge_policy_adapter

    out = os.path.join(root, SFT_DIR)
    args = step_config(
        SFTConfig,
        training_args,
        out,
        model_args,
        max_steps=rlhf_args.sft_max_steps,
        learning_rate=rlhf_args.sft_learning_rate,
        max_length=rlhf_args.max_length,
    )
    trainer = SFTTrainer(
        model=model_args.model_name_or_path,
        args=args,
        train_dataset=pairs.map(to_sft, remove_columns=pairs.column_names),
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )
    trainer.train()
    if not model_args.use_peft:
        trainer.save_model(out)
        return out
    adapter_dir = os.path.join(out, "adapter")
    trainer.save_model(adapter_dir)  # then merged into the full-precision base: later steps load a plain model
    merge_policy_adapter(
        adapter_dir, model_args.model_name_or_path, out, dtype=torch.bfloat16 if training_args.bf16 else torch.float32
    )
    return out


def run_reward(pairs, root: str, sft_dir: str, training_args, model_args, rlhf_args) -> str:
    from trl import RewardConfig, RewardTrainer, get_peft_config, get_quantization_config

    out = os.path.join(root, REWARD_DIR)
    args = step_config(
        RewardConfig,
        training_args,
        out,
        model_args,
        max_steps=rlhf_args.reward_max_steps,
        learning_rate=rlhf_args.reward_learning_rate,
        max_length=rlhf_args.max_length,
    )
    peft_config = quantization = None
    if rlhf_args.reward_as_adapter:  # a SEQ_CLS LoRA (+ the `score` head, saved as a module to save) on the 4-bit base
        peft_config = get_peft_config(dataclasses.replace(model_args, lora_task_type="SEQ_CLS"))
        quantization = get_quantization_config(model_args)
    trainer = RewardTrainer(
        model=sft_dir, args=args, train_dataset=pairs, peft_config=peft_config, quantization_config=quantization
    )
    if quantization is not None and not args.bf16:
        # RewardTrainer casts a 4-bit model's trainables (LoRA and score head) to bf16 (QLoRA paper, §3), for bf16
        # autocast. Without autocast (CPU, fp16-only GPUs) the fp32 hidden states cannot enter a bf16 score head.
        for param in trainer.model.parameters():
            if param.requires_grad:
                param.data = param.data.float()
    trainer.train()
    trainer.save_model(out)
    return out


def run_ppo(
    prompts, root: str, sft_dir: str, reward_dir: str, training_args, model_args, rlhf_args, dataset_name=None
):
    from trl_ppo_plus import PPOTrainer
    from trl_ppo_plus.ppo_cli import build_model, train_save_publish

    training_args.output_dir = os.path.join(root, PPO_DIR)
    policy_args = dataclasses.replace(model_args, model_name_or_path=sft_dir)
    qlora = model_args.load_in_4bit and model_args.use_peft
    if rlhf_args.reward_as_adapter:  # reward, critic and policy: three adapters on one 4-bit SFT base
        model, peft_config = build_model(policy_args, training_args, reward_adapter=reward_dir)
        reward_funcs, value_model = [model.ppo_reward], None
    else:
        model, peft_config = build_model(policy_args, training_args)
        reward_funcs, value_model = [reward_dir], None if qlora else reward_dir  # critic initialised from the RM
    trainer = PPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=prompts,
        value_model=value_model,
        peft_config=peft_config,
    )
    train_save_publish(trainer, dataset_name)
    return trainer


def main(argv: list[str] | None = None) -> int:
    from trl import ModelConfig, ScriptArguments, TrlParser

    from trl_ppo_plus import PPOConfig
    from trl_ppo_plus.ppo_cli import load_prompts

    parser = TrlParser((ScriptArguments, PPOConfig, ModelConfig, RLHFArguments))
    script_args, training_args, model_args, rlhf_args = parser.parse_args_and_config(args=argv)
    if unknown := set(rlhf_args.steps) - set(STEPS):
        raise ValueError(f"--steps {sorted(unknown)}: choose from {STEPS}")
    if rlhf_args.reward_as_adapter and not (model_args.load_in_4bit and model_args.use_peft):
        raise ValueError("--reward_as_adapter trains a LoRA on the 4-bit base: pass --load_in_4bit --use_peft")

    root = training_args.output_dir
    split = script_args.dataset_train_split
    dataset = load_prompts(script_args)[split]
    if rlhf_args.preference_dataset_name:
        preference_args = dataclasses.replace(script_args, dataset_name=rlhf_args.preference_dataset_name)
        pairs = load_prompts(preference_args)[split]
    else:
        pairs = dataset
    sft_dir, reward_dir = os.path.join(root, SFT_DIR), os.path.join(root, REWARD_DIR)

    if "sft" in rlhf_args.steps:
        sft_dir = run_sft(pairs, root, training_args, model_args, rlhf_args)
    if "reward" in rlhf_args.steps:
        reward_dir = run_reward(pairs, root, sft_dir, training_args, model_args, rlhf_args)
    if "ppo" in rlhf_args.steps:
        prompts = dataset.map(to_ppo_prompt, remove_columns=dataset.column_names)
        run_ppo(prompts, root, sft_dir, reward_dir, training_args, model_args, rlhf_args, script_args.dataset_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

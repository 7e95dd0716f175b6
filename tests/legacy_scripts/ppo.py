# /// script
# dependencies = ["trl-ppo-plus"]
# ///
"""A script in the shape of TRL <= 1.12's `examples/scripts/ppo/ppo.py` (written for these tests, not TRL's file).

Same arguments and the same calls: `HfArgumentParser((ScriptArguments, PPOConfig, ModelConfig))`, a left-padded
tokenizer given a `[PAD]` token at run time, sequence-classification reward and value models, a pre-tokenized
`input_ids` dataset, `PPOTrainer(args=..., processing_class=..., model=..., ...)`, `train`, `save_model`,
`generate_completions`. Only the imports differ from a TRL 1.12 script (TRL 1.16 dropped `get_kbit_device_map`), and
`trust_remote_code`, which TRL 1.16 moved from `ModelConfig` to the trainer configs, is read from `training_args`.

Run by tests/test_legacy_scripts.py on the tiny models, e.g. (MODEL a `trl_ppo_plus.tiny` folder, DATA a local
dataset folder):

    python tests/legacy_scripts/ppo.py --model_name_or_path MODEL --sft_model_path MODEL \
        --reward_model_path MODEL/reward --dataset_name DATA --dataset_train_split descriptiveness --output_dir OUT \
        --per_device_train_batch_size 2 --total_episodes 8 --missing_eos_penalty 1.0
"""

import shutil

import torch
from accelerate import PartialState
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, HfArgumentParser
from trl import ModelConfig, ScriptArguments, get_peft_config, get_quantization_config

from trl_ppo_plus import PPOConfig, PPOTrainer  # was: from trl import PPOConfig, PPOTrainer
from trl_ppo_plus.legacy import get_kbit_device_map  # was: from trl import get_kbit_device_map


if __name__ == "__main__":
    parser = HfArgumentParser((ScriptArguments, PPOConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_into_dataclasses()
    shutil.rmtree(training_args.output_dir, ignore_errors=True)

    # Model & tokenizer
    dtype = model_args.dtype if model_args.dtype in ["auto", None] else getattr(torch, model_args.dtype)
    model_kwargs = dict(
        revision=model_args.model_revision, attn_implementation=model_args.attn_implementation, dtype=dtype
    )
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None:
        model_kwargs["device_map"] = get_kbit_device_map()
        model_kwargs["quantization_config"] = quantization_config

    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path, padding_side="left", trust_remote_code=training_args.trust_remote_code
    )
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    value_model = AutoModelForSequenceClassification.from_pretrained(
        training_args.reward_model_path,
        trust_remote_code=training_args.trust_remote_code,
        num_labels=1,
        **model_kwargs,
    )
    reward_model = AutoModelForSequenceClassification.from_pretrained(
        training_args.reward_model_path,
        trust_remote_code=training_args.trust_remote_code,
        num_labels=1,
        **model_kwargs,
    )
    policy = AutoModelForCausalLM.from_pretrained(
        training_args.sft_model_path, trust_remote_code=training_args.trust_remote_code, **model_kwargs
    )
    peft_config = get_peft_config(model_args)
    if peft_config is None:
        ref_policy = AutoModelForCausalLM.from_pretrained(
            training_args.sft_model_path, trust_remote_code=training_args.trust_remote_code, **model_kwargs
        )
    else:
        ref_policy = None

    # Dataset: the last 100 rows are the eval set; pre-tokenized, collated during training
    dataset = load_dataset(
        script_args.dataset_name, name=script_args.dataset_config, split=script_args.dataset_train_split
    )
    eval_samples = 100
    train_dataset = dataset.select(range(len(dataset) - eval_samples))
    eval_dataset = dataset.select(range(len(dataset) - eval_samples, len(dataset)))
    dataset_text_field = "prompt"

    def to_input_ids(split):
        """Pre-tokenized prompts, as a TRL <= 1.12 PPO dataset holds them: one `input_ids` column."""
        return split.map(
            lambda batch: {"input_ids": tokenizer(batch[dataset_text_field], padding=False)["input_ids"]},
            batched=True,
            remove_columns=split.column_names,
            num_proc=training_args.dataset_num_proc,
        )

    with PartialState().local_main_process_first():
        train_dataset, eval_dataset = to_input_ids(train_dataset), to_input_ids(eval_dataset)

    # Training
    trainer = PPOTrainer(
        args=training_args,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref_policy,
        reward_model=reward_model,
        value_model=value_model,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=peft_config,
    )
    trainer.train()

    trainer.save_model(training_args.output_dir)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)

    trainer.generate_completions()

# /// script
# dependencies = ["trl-ppo-plus"]
# ///
"""A script in the shape of TRL <= 1.12's `examples/scripts/ppo/ppo_tldr.py` (written for these tests, not TRL's).

Same arguments and calls as `ppo.py`, plus: the dataset's train and test splits, a prompt-length
filter, an eval set only when `--eval_strategy` is not `no`, and a check that prompts do not end with EOS. As in
`ppo.py`, only the imports differ from a TRL 1.12 script, and `trust_remote_code` is read from `training_args`
(TRL 1.16 moved it there from `ModelConfig`).

Run by tests/test_legacy_scripts.py on the tiny models, e.g. (MODEL a `trl_ppo_plus.tiny` folder, DATA a local
dataset folder):

    python tests/legacy_scripts/ppo_tldr.py --model_name_or_path MODEL --sft_model_path MODEL \
        --reward_model_path MODEL/reward --dataset_name DATA --dataset_test_split validation --output_dir OUT \
        --per_device_train_batch_size 2 --total_episodes 8 --missing_eos_penalty 1.0 --eval_strategy steps --eval_steps 2
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

    # Dataset
    dataset = load_dataset(script_args.dataset_name, name=script_args.dataset_config)
    train_dataset = dataset[script_args.dataset_train_split]
    eval_dataset = dataset[script_args.dataset_test_split] if training_args.eval_strategy != "no" else None

    def chat_prompt_ids(split, max_prompt_tokens=512):
        """Tokenize the chat-templated `prompt` column into `input_ids`, dropping prompts over the budget."""
        num_proc = training_args.dataset_num_proc
        ids = split.map(
            lambda row: {"input_ids": tokenizer(row["prompt"], padding=False)["input_ids"]},
            remove_columns=split.column_names,
            num_proc=num_proc,
        )
        return ids.filter(lambda row: len(row["input_ids"]) <= max_prompt_tokens, num_proc=num_proc)

    with PartialState().local_main_process_first():
        train_dataset = chat_prompt_ids(train_dataset)
        eval_dataset = None if eval_dataset is None else chat_prompt_ids(eval_dataset)

    assert train_dataset[0]["input_ids"][-1] != tokenizer.eos_token_id, "The last token should not be an EOS token"

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

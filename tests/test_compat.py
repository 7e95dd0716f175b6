"""Drop-in compatibility: a TRL <= 1.12 PPO script with only its import changed, and its positional call."""

import torch
from datasets import Dataset
from ppo_helpers import logged
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from trl_ppo_plus import PPOConfig, PPOTrainer  # was: from trl import PPOConfig, PPOTrainer


def _legacy_dataset(tokenizer, n):
    # The shape of TRL <= 1.12 example datasets: pre-tokenized `input_ids` (+ `lengths`), no text prompt column.
    texts = [f"Bob has {i} pens and finds {i + 1} more. How many pens?" for i in range(n)]

    def tokenize(element):
        input_ids = tokenizer(element["text"], padding=False)["input_ids"]
        return {"input_ids": input_ids, "lengths": [len(ids) for ids in input_ids]}

    return Dataset.from_dict({"text": texts}).map(tokenize, batched=True, remove_columns=["text"])


def test_trl_1_12_script_runs_with_only_the_import_changed(tiny_model_path, tmp_path, capsys):
    reward_path = f"{tiny_model_path}/reward"
    training_args = PPOConfig(
        output_dir=str(tmp_path),
        total_episodes=16,
        response_length=8,
        num_ppo_epochs=2,
        num_mini_batches=2,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        local_rollout_forward_batch_size=4,
        learning_rate=1e-3,
        stop_token="eos",
        missing_eos_penalty=1.0,
        kl_coef=0.05,
        sft_model_path=tiny_model_path,
        reward_model_path=reward_path,
        num_sample_generations=0,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
    )
    tokenizer = AutoTokenizer.from_pretrained(training_args.sft_model_path, padding_side="left")
    value_model = AutoModelForSequenceClassification.from_pretrained(training_args.reward_model_path, num_labels=1)
    reward_model = AutoModelForSequenceClassification.from_pretrained(training_args.reward_model_path, num_labels=1)
    ref_policy = AutoModelForCausalLM.from_pretrained(training_args.sft_model_path)
    policy = AutoModelForCausalLM.from_pretrained(training_args.sft_model_path)
    train_dataset = _legacy_dataset(tokenizer, 16)
    eval_dataset = _legacy_dataset(tokenizer, 4)

    trainer = PPOTrainer(
        args=training_args,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref_policy,
        reward_model=reward_model,
        value_model=value_model,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
    )
    before_policy = {k: v.clone() for k, v in policy.named_parameters()}
    before_value = {k: v.clone() for k, v in value_model.named_parameters()}
    trainer.train()
    # total_episodes=16 with a rollout batch of 8 → 2 rollouts × 2 epochs × 2 mini-batches = 8 optimizer steps
    assert trainer.state.global_step == 8
    assert trainer.ref_model is not None and trainer.accelerator.unwrap_model(trainer.ref_model) is ref_policy
    assert len(trainer.reward_funcs) == 1, "reward_model and reward_model_path name the same model: load it once"
    assert any(not torch.equal(v, before_policy[k]) for k, v in policy.named_parameters())
    assert any(not torch.equal(v, before_value[k]) for k, v in value_model.named_parameters())
    assert max(logged(trainer, "completions/max_length")) <= 8  # response_length
    trainer.save_model(str(tmp_path / "out"))
    records = trainer.generate_completions()
    assert len(records) == 4 and all(isinstance(r["score"], float) for r in records)
    assert "completions at step 8" in capsys.readouterr().out


def test_trl_1_12_positional_order(tiny_model_path, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path, padding_side="left")
    reward_model = AutoModelForSequenceClassification.from_pretrained(f"{tiny_model_path}/reward", num_labels=1)
    args = PPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        response_length=4,
        max_steps=1,
        num_ppo_epochs=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    trainer = PPOTrainer(args, tokenizer, policy, None, reward_model, _legacy_dataset(tokenizer, 8))
    assert trainer.args is args and trainer.processing_class is tokenizer
    assert "prompt" in trainer.train_dataset.column_names
    trainer.train()
    assert trainer.state.global_step == 1

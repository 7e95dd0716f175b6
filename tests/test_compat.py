"""Drop-in compatibility: a TRL <= 1.12 PPO script with only its import changed, and its positional call."""

import pytest
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


# ---------------------------------------------------------------- what TRL <= 1.12 scripts and TRL's tests rely on


def _save_without_tokenizer(path, out):
    AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).save_pretrained(out)
    return str(out)


def test_value_model_check_compares_base_vocabularies_only_when_both_have_tokenizers(tiny_model_path, tmp_path):
    from trl_ppo_plus.validation import check_models_before_loading

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path, padding_side="left")
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})  # added at run time: not part of the base vocabulary
    bare = _save_without_tokenizer(f"{tiny_model_path}/reward", tmp_path / "bare")  # transformers would invent one
    for value_model in (f"{tiny_model_path}/reward", bare):
        check_models_before_loading(tiny_model_path, ["r"], value_model, tokenizer, {})


def test_reward_models_keep_their_own_tokenizer_or_get_the_policys(tiny_model_path, tiny_cache_dir, tmp_path):
    from ppo_helpers import fast_args, prompts_dataset

    from trl_ppo_plus.tiny import tiny_model_dir

    other = tiny_model_dir(cache_dir=tiny_cache_dir, vocab_size=300, corpus=("a b c d e f g 1 2 3",) * 20)
    bare = _save_without_tokenizer(f"{tiny_model_path}/reward", tmp_path / "bare")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path, padding_side="left")
    trainer = PPOTrainer(
        model=tiny_model_path,
        reward_funcs=[str(other / "reward"), bare],  # GRPO re-tokenizes prompt + completion for each
        args=fast_args(tmp_path, max_steps=1, max_completion_length=3),
        train_dataset=prompts_dataset(8),
        processing_class=tokenizer,
    )
    own, policys = trainer.reward_processing_classes
    assert own.get_vocab() == AutoTokenizer.from_pretrained(other).get_vocab() != tokenizer.get_vocab()
    assert policys is tokenizer  # saved without a tokenizer: it reads the policy's ids, as in TRL <= 1.12
    trainer.train()
    assert len(trainer.state.log_history[0]) and trainer.state.global_step == 1


def test_input_ids_prompts_keep_their_special_tokens(tiny_model_path):
    from trl_ppo_plus.legacy import prompts_from_input_ids

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(chat)["input_ids"]
    data = Dataset.from_dict({"input_ids": [ids], "attention_mask": [[1] * len(ids)], "lengths": [len(ids)]})
    converted = prompts_from_input_ids({"held-out": data}, tokenizer)["held-out"]  # a dict of eval datasets too
    assert converted.column_names == ["prompt"]
    assert converted["prompt"] == [chat] and "<|im_start|>" in chat
    assert tokenizer(converted["prompt"][0])["input_ids"] == ids  # GRPO re-tokenizes it to the same ids


def test_pad_token_added_at_run_time_is_never_embedded(tiny_model_path):
    from trl_ppo_plus.legacy import never_embed_pad

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path, padding_side="left")
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    pad = tokenizer.pad_token_id
    assert pad == model.get_input_embeddings().num_embeddings  # one past the model's vocabulary
    batch = tokenizer(["2 + 3 =", "Ann has 12 apples and gets 4 more. How many"], return_tensors="pt", padding=True)
    never_embed_pad(model, pad)
    with torch.no_grad():
        logits = model(**batch).logits[:, -1]
        out = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=pad)
        unpadded = model(**tokenizer(["2 + 3 ="], return_tensors="pt")).logits[:, -1]
    assert out.shape[1] == batch["input_ids"].shape[1] + 4
    torch.testing.assert_close(logits[0], unpadded[0], atol=1e-4, rtol=1e-4)  # the pad rows are masked out anyway


def test_legacy_trainer_attributes_model_adapter_name_and_eval_dataset_dict(tiny_model_path, tmp_path):
    from peft import LoraConfig, get_peft_model
    from ppo_helpers import DigitReward, fast_args, logged, prompts_dataset

    policy = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    policy = get_peft_model(policy, lora, adapter_name="sft")
    policy.add_adapter("ppo", lora)
    value_model = AutoModelForSequenceClassification.from_pretrained(f"{tiny_model_path}/reward", num_labels=1)
    args = fast_args(
        tmp_path,
        max_steps=1,
        max_completion_length=3,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        model_adapter_name="ppo",
        eval_strategy="steps",
        eval_steps=1,
    )
    trainer = PPOTrainer(
        model=policy,
        reward_funcs=DigitReward(tiny_model_path),
        args=args,
        train_dataset=prompts_dataset(8),
        eval_dataset={"easy": prompts_dataset(4), "hard": prompts_dataset(4)},
        value_model=value_model,
    )
    assert trainer.model.policy is trainer.model and trainer.model.value_model is value_model
    assert trainer.model.active_adapter == "ppo"
    before = {k: v.clone() for k, v in trainer.model.named_parameters() if "lora" in k}
    trainer.train()
    changed = {
        k.split(".")[-2] for k, v in trainer.model.named_parameters() if "lora" in k and not torch.equal(v, before[k])
    }
    assert changed == {"ppo"}, changed  # the named adapter trained, the other did not
    assert logged(trainer, "eval_easy_loss") and logged(trainer, "eval_hard_loss")  # one evaluation per dataset

    wrong = fast_args(tmp_path, model_adapter_name="nope")
    with pytest.raises(ValueError, match="model_adapter_name='nope'"):
        PPOTrainer(
            model=policy, reward_funcs=DigitReward(tiny_model_path), args=wrong, train_dataset=prompts_dataset(4)
        )


def test_reward_model_scores_the_last_real_token_when_the_pad_is_added_at_run_time(tiny_model_path):
    # GRPO right-pads the reward batch with the run-time [PAD]; a classifier pooling the last token that is not its
    # config.pad_token_id (the old pad) scored a [PAD] position for every text shorter than the longest.
    from trl_ppo_plus.legacy import never_embed_pad

    reward_model = AutoModelForSequenceClassification.from_pretrained(f"{tiny_model_path}/reward", num_labels=1).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    never_embed_pad(reward_model, tokenizer.pad_token_id)
    texts = ["Ann has 12 apples and gets 4 more", "7"]
    with torch.no_grad():
        batched = reward_model(**tokenizer(texts, padding=True, padding_side="right", return_tensors="pt")).logits
        alone = torch.cat([reward_model(**tokenizer([t], return_tensors="pt")).logits for t in texts])
    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=1e-4)

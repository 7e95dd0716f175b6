"""The example scripts, their YAML configs and the `trl-ppo-plus` CLI, run offline on a tiny local model for 2 steps.

Each example runs in-process through its `main(argv)` with its own YAML (`--config examples/xxx.yaml`) and the
flags that shrink it: a local dataset file written here, the tiny model, 2 steps, 8-token completions.
"""

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from tests.scripts import load_script


ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCRIPTS = ("ppo_gsm8k_qlora", "ppo_code_qlora", "ppo_rlhf_reward_model")


def load_example(name: str):
    """Import `examples/<name>.py`."""
    return load_script(f"examples/{name}.py")


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def tiny_run_flags(model_path: str, dataset: str, output_dir: Path) -> list[str]:
    """Shrink any of the example configs to 2 PPO steps on the tiny model."""
    return [
        "--model_name_or_path", model_path,
        "--dataset_name", dataset,
        "--output_dir", str(output_dir),
        "--per_device_train_batch_size", "2",
        "--gradient_accumulation_steps", "1",
        "--num_ppo_epochs", "1",
        "--max_steps", "2",
        "--max_completion_length", "8",
        "--lora_r", "4",
        "--bf16", "false",
        "--report_to", "none",
        "--save_strategy", "no",
        "--logging_steps", "1",
        "--disable_tqdm", "true",
    ]  # fmt: skip


def trainer_state(output_dir: Path) -> dict:
    return json.loads((output_dir / "trainer_state.json").read_text())


def assert_qlora_checkpoint(output_dir: Path) -> None:
    """Policy adapter at the root and value adapter + head in value_model/, both trained (LoRA B starts at 0)."""
    for directory in (output_dir, output_dir / "value_model"):
        assert (directory / "adapter_config.json").is_file()
        weights = load_file(directory / "adapter_model.safetensors")
        assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k), f"{directory}: LoRA B still 0"
    assert (output_dir / "value_model" / "value_head.safetensors").is_file()
    assert (output_dir / "kl_controller.json").is_file()


def run_qlora_example(name: str, model_path: str, dataset: str, output_dir: Path, eval_steps: int) -> list[dict]:
    """Run `examples/<name>.py` with its YAML, 4-bit + LoRA, for 2 steps; returns the log history."""
    argv = ["--config", str(EXAMPLES / f"{name}.yaml"), *tiny_run_flags(model_path, dataset, output_dir)]
    argv += ["--load_in_4bit", "--use_peft", "--accuracy_eval_examples", "2", "--accuracy_eval_steps", str(eval_steps)]
    assert load_example(name).main(argv) == 0
    state = trainer_state(output_dir)
    assert state["global_step"] == 2
    return state["log_history"]


def assert_card(output_dir: Path, dataset: str) -> None:
    card = (output_dir / "README.md").read_text()
    assert "trl-ppo-plus" in card and dataset in card
    run = json.loads((output_dir / "trl_ppo_plus_run.json").read_text())
    assert run["dataset_names"] == [dataset]


# ---------------------------------------------------------------------- the scripts' shape
@pytest.mark.parametrize("name", SCRIPTS)
def test_example_has_pep723_header_usage_and_yaml(name):
    source = (EXAMPLES / f"{name}.py").read_text()
    header = source.split("# /// script\n", 1)[1].split("# ///\n", 1)[0]
    metadata = tomllib.loads("".join(line.removeprefix("#").removeprefix(" ") + "\n" for line in header.splitlines()))
    assert "trl-ppo-plus" in metadata["dependencies"]
    module = load_example(name)
    assert f"python examples/{name}.py --config examples/{name}.yaml" in module.__doc__
    config = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    assert config["model_name_or_path"].startswith("Qwen/") and config["dataset_name"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_example(name).main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--model_name_or_path", "--dataset_name", "--kl_controller", "--load_in_4bit", "--use_peft"):
        assert flag in out


@pytest.mark.parametrize("name", ["multi_gpu", "deepspeed_zero2", "deepspeed_zero3"])
def test_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(EXAMPLES / "accelerate" / f"{name}.yaml"))
    if name == "multi_gpu":
        assert config.distributed_type == "MULTI_GPU"
    else:
        assert config.distributed_type == "DEEPSPEED"
        assert config.deepspeed_config["zero_stage"] == int(name[-1])


# ---------------------------------------------------------------------- GSM8K
def test_gsm8k_qlora_example(tiny_model_path, tmp_path):
    rows = [
        {
            "question": f"Ann has {a} apples and gets {b} more. How many apples?",
            "answer": f"{a}+{b}={a + b}\n#### {a + b}",
        }
        for a in range(4)
        for b in range(2)
    ]
    data = write_jsonl(tmp_path / "gsm8k.jsonl", rows)
    out = tmp_path / "run"
    logs = run_qlora_example("ppo_gsm8k_qlora", tiny_model_path, data, out, eval_steps=1)
    assert [h["step"] for h in logs if "eval/accuracy" in h] == [0, 1, 2]  # held-out accuracy before and during
    assert any("rewards/math_accuracy_reward/mean" in h for h in logs)
    kl_config = json.loads((out / "kl_controller.json").read_text())
    assert kl_config["kind"] == "adaptive"  # from the YAML
    assert_qlora_checkpoint(out)
    assert_card(out, data)


def test_gsm8k_rows_become_conversational_prompts():
    example = load_example("ppo_gsm8k_qlora")
    row = example.to_prompt({"question": "What is 2+3?", "answer": "2+3=5\n#### 5"}, example.INSTRUCTION)
    assert row["prompt"][0]["role"] == "user" and row["prompt"][0]["content"].startswith("What is 2+3?")
    from trl_ppo_plus.rewards import math_accuracy_reward

    assert math_accuracy_reward(["So 2+3=5.\n#### 5"], [row["solution"]]) == [1.0]


# ---------------------------------------------------------------------- code
def test_code_qlora_example_mbpp(tiny_model_path, tmp_path):
    rows = [
        {
            "task_id": i,
            "text": f"Write a function add_{i}(x) that adds {i}.",
            "code": f"def add_{i}(x):\n    return x + {i}\n",
            "test_list": [f"assert add_{i}(1) == {1 + i}", f"assert add_{i}(0) == {i}"],
            "test_setup_code": "",
            "challenge_test_list": [],
        }
        for i in range(6)
    ]
    data = write_jsonl(tmp_path / "mbpp.jsonl", rows)
    out = tmp_path / "run"
    logs = run_qlora_example("ppo_code_qlora", tiny_model_path, data, out, eval_steps=2)
    assert [h["step"] for h in logs if "eval/accuracy" in h] == [0, 2]
    assert any("rewards/code_execution_reward/mean" in h for h in logs)  # scored (garbage code: 0.0, not None)
    assert_qlora_checkpoint(out)
    assert_card(out, data)


def test_code_rows_mbpp_and_humaneval_prompts_and_rewards():
    example = load_example("ppo_code_qlora")
    mbpp = {"text": "Add one.", "test_list": ["assert inc(1) == 2", "assert inc(2) == 3"], "test_setup_code": ""}
    humaneval = {"prompt": "def inc(x):\n    '''Add one.'''\n", "test": "def check(f):\n    assert f(1) == 2\n"}
    humaneval["entry_point"] = "inc"
    mbpp_prompt = example.to_prompt(mbpp, shown_tests=1)["prompt"][0]["content"]
    assert "assert inc(1) == 2" in mbpp_prompt and "assert inc(2) == 3" not in mbpp_prompt  # one test shown
    assert "def inc(x):" in example.to_prompt(humaneval, shown_tests=1)["prompt"][0]["content"]

    from trl_ppo_plus.rewards import make_code_reward

    reward = make_code_reward(partial_credit=True, timeout=5.0)
    answer = [{"role": "assistant", "content": "```python\ndef inc(x):\n    return x + 1\n```"}]
    half = [{"role": "assistant", "content": "```python\ndef inc(x):\n    return 2\n```"}]
    assert reward([answer, half], test_list=[mbpp["test_list"]] * 2) == [1.0, 0.5]
    assert reward([answer], test=[humaneval["test"]], entry_point=["inc"]) == [1.0]


# ---------------------------------------------------------------------- classic RLHF
@pytest.fixture(scope="module")
def preference_file(tmp_path_factory):
    rows = []
    for i in range(8):
        question = [{"role": "user", "content": f"Ann has {i} apples and gets 2 more. How many?"}]
        rows.append(
            {
                "chosen": question + [{"role": "assistant", "content": f"The answer is {i + 2}."}],
                "rejected": question + [{"role": "assistant", "content": "I do not know."}],
            }
        )
    return write_jsonl(tmp_path_factory.mktemp("pref") / "preferences.jsonl", rows)


RLHF_TINY = ["--sft_max_steps", "2", "--reward_max_steps", "2", "--max_length", "64"]


def test_rlhf_example_reward_adapter_on_the_4bit_base(tiny_model_path, preference_file, tmp_path):
    out = tmp_path / "run"
    argv = [
        "--config",
        str(EXAMPLES / "ppo_rlhf_reward_model.yaml"),
        *tiny_run_flags(tiny_model_path, preference_file, out),
    ]
    argv += [*RLHF_TINY, "--dtype", "float32", "--load_in_4bit", "--use_peft", "--reward_as_adapter"]
    assert load_example("ppo_rlhf_reward_model").main(argv) == 0

    # 1. SFT: a LoRA, merged into a full model that later steps load like any checkpoint
    assert (out / "sft" / "adapter" / "adapter_config.json").is_file()
    assert json.loads((out / "sft" / "config.json").read_text())["architectures"] == ["Qwen2ForCausalLM"]
    # 2. the reward model: a SEQ_CLS LoRA with its score head, on the 4-bit SFT base
    reward_config = json.loads((out / "reward_model" / "adapter_config.json").read_text())
    assert reward_config["task_type"] == "SEQ_CLS"
    assert reward_config["base_model_name_or_path"] == str(out / "sft")
    assert any("score" in k for k in load_file(out / "reward_model" / "adapter_model.safetensors"))
    # 3. PPO scored by that adapter, with the value adapter as the critic
    state = trainer_state(out / "ppo")
    assert state["global_step"] == 2
    assert any("rewards/reward_adapter/mean" in h for h in state["log_history"])
    assert_qlora_checkpoint(out / "ppo")
    assert_card(out / "ppo", preference_file)


def test_rlhf_example_full_reward_model_and_critic(tiny_model_path, preference_file, tmp_path):
    out = tmp_path / "run"
    argv = [
        "--config",
        str(EXAMPLES / "ppo_rlhf_reward_model.yaml"),
        *tiny_run_flags(tiny_model_path, preference_file, out),
    ]
    argv += [*RLHF_TINY, "--dtype", "float32"]
    assert load_example("ppo_rlhf_reward_model").main(argv) == 0

    reward_config = json.loads((out / "reward_model" / "config.json").read_text())
    assert reward_config["architectures"] == ["Qwen2ForSequenceClassification"] and len(reward_config["id2label"]) == 1
    state = trainer_state(out / "ppo")
    assert state["global_step"] == 2
    assert any("rewards/reward_model/mean" in h for h in state["log_history"])
    assert (out / "ppo" / "model.safetensors").is_file()  # full policy
    critic = json.loads((out / "ppo" / "value_model" / "config.json").read_text())
    assert critic["architectures"] == ["Qwen2ForSequenceClassification"]  # the critic, initialised from the RM
    assert_card(out / "ppo", preference_file)


def test_rlhf_example_rejects_adapter_without_qlora(tiny_model_path, preference_file, tmp_path):
    argv = [*tiny_run_flags(tiny_model_path, preference_file, tmp_path), "--reward_as_adapter"]
    with pytest.raises(ValueError, match="--load_in_4bit --use_peft"):
        load_example("ppo_rlhf_reward_model").main(argv)


# ---------------------------------------------------------------------- the CLI
def test_cli_ppo_with_a_yaml_config(tiny_model_path, tmp_path):
    from trl_ppo_plus.cli import main

    rows = [{"prompt": f"What is {a} + 1? Answer: ", "solution": f"#### {a + 1}"} for a in range(8)]
    data = write_jsonl(tmp_path / "prompts.jsonl", rows)
    config = {
        "model_name_or_path": tiny_model_path,
        "dataset_name": data,
        "reward": ["math"],
        "per_device_train_batch_size": 2,
        "num_ppo_epochs": 1,
        "max_steps": 2,
        "max_completion_length": 8,
        "kl_controller": "adaptive",
        "report_to": "none",
        "save_strategy": "no",
        "bf16": False,
        "disable_tqdm": True,
    }
    config_file = tmp_path / "cfg.yaml"
    config_file.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    # a flag overrides the YAML, as with `trl grpo`
    assert main(["ppo", "--config", str(config_file), "--output_dir", str(out), "--kl_coef", "0.2"]) == 0

    assert (out / "model.safetensors").is_file()  # a full policy (no --use_peft): value head on its trunk
    assert (out / "value_model").is_dir()
    kl = json.loads((out / "kl_controller.json").read_text())
    assert kl["kind"] == "adaptive"
    run = json.loads((out / "trl_ppo_plus_run.json").read_text())
    assert run["kl_controller"]["init_kl_coef"] == 0.2
    assert [r["name"] for r in run["reward_funcs"]] == ["math_accuracy_reward"]
    assert "trl-ppo-plus" in (out / "README.md").read_text()


def test_cli_help(capsys):
    from trl_ppo_plus.cli import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(command in out for command in ("ppo", "demo", "push", "--config"))
    with pytest.raises(SystemExit) as exit_info:
        main(["ppo", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--reward",
        "--model_name_or_path",
        "--dataset_name",
        "--kl_controller",
        "--load_in_4bit",
    ):
        assert flag in out


@pytest.mark.parametrize("model, field, default", [("tiny", "--ppo_steps", "160"), ("smollm2", "--n_eval", "50")])
def test_demo_help_shows_every_field_with_its_default(model, field, default, capsys):
    from trl_ppo_plus.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--model", model, "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"{field} " in out and f"(default: {default})" in out


def test_cli_entry_point_help_in_a_fresh_process():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "trl_ppo_plus.cli", "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0 and "trl-ppo-plus ppo --config" in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "trl_ppo_plus.cli", "nope"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 2 and "unknown command" in result.stderr

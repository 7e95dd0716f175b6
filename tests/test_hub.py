"""Publishing to the Hub: the real `huggingface_hub` client against the local Hub in `hub_server.py` (127.0.0.1 only).

conftest sets HF_HUB_OFFLINE=1 for the whole suite; `online_hub` lifts it for these tests by patching the constant the
client reads on every request, and disables Xet so uploads take the LFS path the local server implements.
"""

import hashlib
import json
import logging
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from hub_server import HubServer

from trl_ppo_plus.hub import RUN_INFO_FILE, HubPublishError, RunInfo, publish, push_cli, render_model_card


TOKEN = "hf_TestTokenDoNotLeak0123456789abcdef"
REPO = "alice/tiny-ppo"
FAST = {"backoff_base": 0.01}


def _png(path: Path) -> None:
    """A valid 1x1 PNG, so the curve file is a real image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0\0\0\0")) + chunk(b"IEND", b""))  # fmt: skip


def _run_info(**overrides) -> RunInfo:
    fields = dict(
        model_name="tiny-ppo",
        base_model="tiny/qwen2",
        dataset_names=["openai/gsm8k"],
        license="apache-2.0",
        reward_funcs=[
            {"name": "math_accuracy", "weight": 1.0, "kind": "math"},
            {"name": "tiny_rm", "weight": 0.5, "kind": "reward_model"},
        ],
        ppo_config={"learning_rate": 3e-6, "num_ppo_epochs": 4, "cliprange": 0.2, "vf_coef": 0.1, "hub_token": TOKEN},
        kl_controller={"kind": "adaptive", "init_kl_coef": 0.05, "final_kl_coef": 0.031, "target": 6.0, "horizon": 10000},
        qlora={"quantization": "nf4", "lora_r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], "value_head": "fp32"},
        eval_results=[{"metric": "pass@1", "value": 0.42, "dataset_name": "openai/gsm8k", "dataset_type": "openai/gsm8k", "split": "test"}],
        curves=["training_curves.png"],
        command=f"trl-ppo-plus train --config examples/gsm8k.yaml --hub_token {TOKEN}",
    )  # fmt: skip
    return RunInfo(**{**fields, **overrides})


def _add_run_files(out: Path, run_info: RunInfo) -> Path:
    _png(out / "training_curves.png")
    (out / "kl_controller.json").write_text(json.dumps({"kl_coef": 0.031, "pushed_with": TOKEN}))
    (out / "eval_completions.jsonl").write_text(json.dumps({"prompt": "2+3?", "completion": "5", "score": 1.0}) + "\n")
    (out / "training_args.bin").write_bytes(b"pickled args with hub_token=" + TOKEN.encode())  # must never go up
    run_info.to_json(out / RUN_INFO_FILE)
    return out


@pytest.fixture
def full_run(tmp_path, tiny_model_path):
    """A run whose output_dir holds a full policy model, a value model, curves and the run description."""
    out = tmp_path / "run"
    shutil.copytree(tiny_model_path, out, ignore=shutil.ignore_patterns("reward"))
    shutil.copytree(Path(tiny_model_path) / "reward", out / "value_model")
    return _add_run_files(out, _run_info())


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, tiny_model_path):
    """A LoRA adapter on the tiny model with non-zero B matrices, so merging changes the weights."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("adapter") / "run"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(out)
    return _add_run_files(out, _run_info(base_model=None))


@pytest.fixture
def online_hub(monkeypatch):
    """Lift the suite's offline mode for the client, talk to a fresh local Hub only, and capture every log line."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    records: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: records.append(handler.format(record))
    loggers = [logging.getLogger(), logging.getLogger("huggingface_hub")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    with HubServer() as server:
        server.require_token = TOKEN
        server.log_records = records
        yield server
    for lg, level in zip(loggers, levels):
        lg.removeHandler(handler)
        lg.setLevel(level)


def _download(server: HubServer, repo_id: str, cache_dir: Path, repo_type: str = "model") -> Path:
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(repo_id, repo_type=repo_type, endpoint=server.url, token=TOKEN, cache_dir=str(cache_dir))
    )


def _assert_no_token_anywhere(server: HubServer, capfd) -> None:
    assert any(TOKEN in auth for auth in server.authorizations), (
        "the token was never sent, so this check proves nothing"
    )
    for repo in server.repos.values():
        for commit in repo.commits.values():
            for path, blob in commit.files.items():
                assert TOKEN.encode() not in blob.data, f"token leaked into {repo.repo_id}/{path}"
    assert server.log_records, "no log lines were captured"
    for line in server.log_records:
        assert TOKEN not in line
    out, err = capfd.readouterr()
    assert TOKEN not in out and TOKEN not in err


def test_run_info_json_roundtrip_and_card_metadata(tmp_path):
    info = _run_info()
    assert RunInfo.from_json(info.to_json()) == info
    info.to_json(tmp_path / RUN_INFO_FILE)
    assert RunInfo.from_json(tmp_path) == info
    with pytest.raises(ValueError, match="kind"):
        _run_info(reward_funcs=[{"name": "x", "weight": 1.0, "kind": "vibes"}])

    card = render_model_card(info)
    data = card.data
    assert data.base_model == "tiny/qwen2" and data.library_name == "transformers"
    assert data.pipeline_tag == "text-generation" and data.license == "apache-2.0"
    assert {"trl", "ppo", "rlhf", "trl-ppo-plus", "math", "reward_model"} <= set(data.tags)
    assert data.eval_results[0].metric_type == "pass@1" and data.eval_results[0].metric_value == 0.42
    text = card.text
    for needle in ("| `cliprange` | 0.2 |", "| initial β | 0.05 |", "| final β | 0.031 |", "| `math_accuracy` | math | 1 |",
                   "| lora_r | 8 |", "| pass@1 | 0.42 | openai/gsm8k | test |", "![training_curves.png](training_curves.png)",
                   "- transformers: ", "arXiv:1707.06347", "arXiv:1909.08593", "arXiv:2305.14314", "vonwerra2020trl"):  # fmt: skip
        assert needle in text, needle
    assert "--hub_token ***" in text and TOKEN not in card.content


def test_push_full_model(online_hub, full_run, tmp_path, capfd):
    from huggingface_hub import ModelCard

    result = publish(full_run, REPO, endpoint=online_hub.url, token=TOKEN, **FAST)
    remote = online_hub.files(REPO)
    assert set(remote) == {path for path, _ in result.files} | {".gitattributes"}
    expected = {"README.md", RUN_INFO_FILE, "config.json", "generation_config.json", "model.safetensors",
                "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "kl_controller.json",
                "training_curves.png", "value_model/config.json", "value_model/model.safetensors"}  # fmt: skip
    assert expected <= set(remote) and "training_args.bin" not in remote
    assert remote["model.safetensors"] == (full_run / "model.safetensors").read_bytes()
    lfs_oid = hashlib.sha256(remote["model.safetensors"]).hexdigest()
    assert lfs_oid in online_hub.lfs_store and online_hub.count("lfs_upload") >= 3  # weights and the PNG went by LFS
    assert len(online_hub.repo(REPO).commits) == 2  # the initial commit plus exactly ONE upload commit

    card = ModelCard.load(_download(online_hub, REPO, tmp_path / "cache") / "README.md")
    assert card.data.model_name == "tiny-ppo"
    assert card.data.eval_results[0].metric_value == 0.42 and card.data.eval_results[0].dataset_split == "test"
    assert "math" in card.data.tags and card.data.base_model == "tiny/qwen2"
    assert f'from_pretrained("{REPO}")' in card.text and "under `value_model/`" in card.text
    _assert_no_token_anywhere(online_hub, capfd)


def test_merged_adapter_loads_without_peft(online_hub, adapter_dir, tiny_model_path, tmp_path, capfd):
    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    result = publish(adapter_dir, REPO, merge_adapter=True, endpoint=online_hub.url, token=TOKEN, **FAST)
    paths = {path for path, _ in result.files}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= paths
    assert not paths & {"adapter_config.json", "adapter_model.safetensors"}

    local = _download(online_hub, REPO, tmp_path / "cache")
    merged = AutoModelForCausalLM.from_pretrained(local)
    reference = AutoPeftModelForCausalLM.from_pretrained(adapter_dir)
    ids = torch.tensor([[5, 17, 42, 9, 3]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, reference(ids).logits, atol=1e-5, rtol=1e-4)
    run = json.loads((local / RUN_INFO_FILE).read_text())
    assert run["merged"] is True and run["base_model"] == str(tiny_model_path)  # read from adapter_config.json
    assert "library_name: transformers" in (local / "README.md").read_text()
    _assert_no_token_anywhere(online_hub, capfd)


def test_adapter_card_says_peft(online_hub, adapter_dir, capfd):
    publish(adapter_dir, REPO, endpoint=online_hub.url, token=TOKEN, **FAST)
    remote = online_hub.files(REPO)
    assert "adapter_model.safetensors" in remote and "config.json" not in remote
    readme = remote["README.md"].decode()
    assert "library_name: peft" in readme and "AutoPeftModelForCausalLM" in readme


def test_two_500s_then_success_makes_one_commit(online_hub, full_run):
    online_hub.fail("commit", status=500, times=2)
    publish(full_run, REPO, endpoint=online_hub.url, token=TOKEN, **FAST)
    assert online_hub.count("commit") == 3
    assert len(online_hub.repo(REPO).commits) == 2


def test_dropped_connection_is_retried(online_hub, full_run):
    online_hub.fail("commit", status=0, times=1)
    publish(full_run, REPO, endpoint=online_hub.url, token=TOKEN, **FAST)
    assert online_hub.count("commit") == 2 and len(online_hub.repo(REPO).commits) == 2


def test_persistent_failure_is_clear_and_changes_nothing(online_hub, full_run):
    publish(full_run, REPO, endpoint=online_hub.url, token=TOKEN, **FAST)
    before = online_hub.snapshot()
    _run_info(model_name="tiny-ppo-v2").to_json(full_run / RUN_INFO_FILE)
    online_hub.fail("commit", status=500)
    with pytest.raises(HubPublishError) as info:
        publish(full_run, REPO, endpoint=online_hub.url, token=TOKEN, max_retries=3, **FAST)
    message = str(info.value)
    assert REPO in message and "500" in message and "4 attempts" in message and TOKEN not in message
    assert online_hub.snapshot() == before


@pytest.mark.parametrize("status", [401, 403, 404])
def test_auth_and_missing_repo_errors_name_the_repo(online_hub, full_run, status):
    online_hub.fail("*", status=status)
    with pytest.raises(HubPublishError) as info:
        publish(full_run, REPO, endpoint=online_hub.url, token=TOKEN, **FAST)
    message = str(info.value)
    assert REPO in message and f"HTTP {status}" in message and TOKEN not in message
    assert info.value.status_code == status and online_hub.count("commit") == 0


def test_dry_run_writes_what_a_push_uploads(online_hub, full_run, tmp_path, capsys):
    result = publish(full_run, REPO, dry_run=True, dry_run_dir=tmp_path / "dry", push_eval_dataset=True, token=TOKEN)
    assert online_hub.calls == []  # a dry run talks to nobody
    printed = capsys.readouterr().out
    assert "model.safetensors" in printed and "bytes" in printed

    def tree(root: Path) -> dict[str, str]:
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}  # fmt: skip

    publish(full_run, REPO, endpoint=online_hub.url, token=TOKEN, push_eval_dataset=True, **FAST)
    for kind, repo_id in (("model", REPO), ("dataset", result.dataset_repo_id)):
        remote = online_hub.files(repo_id, repo_type=kind)
        remote.pop(".gitattributes")
        assert tree(tmp_path / "dry" / kind) == {p: hashlib.sha256(b).hexdigest() for p, b in remote.items()}
    assert "data/eval_completions.jsonl" in online_hub.files(result.dataset_repo_id, repo_type="dataset")


def test_endpoint_from_env_revision_and_cli(online_hub, full_run, monkeypatch, tmp_path, capfd):
    monkeypatch.setenv("HF_ENDPOINT", online_hub.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert push_cli([str(full_run), REPO, "--revision", "ppo-v1", "--private", "--no-value-model"]) == 0
    repo = online_hub.repo(REPO)
    assert repo.private and set(repo.branches) == {"main", "ppo-v1"}
    files = online_hub.files(REPO, revision="ppo-v1")
    assert "model.safetensors" in files and not any(p.startswith("value_model/") for p in files)
    assert push_cli([str(full_run), REPO, "--dry-run", "--dry-run-dir", str(tmp_path / "dry")]) == 0
    assert (tmp_path / "dry" / "model" / "README.md").exists()
    _assert_no_token_anywhere(online_hub, capfd)


def test_trainer_push_to_hub_renders_our_card_and_commits_once(online_hub, tiny_model_path, tmp_path, capfd):
    """`PPOTrainer.create_model_card` uses our template; `push_to_hub` uploads policy, critic, card in one commit."""
    from huggingface_hub import ModelCard
    from ppo_helpers import DigitReward, fast_args, prompts_dataset

    from trl_ppo_plus import PPOTrainer

    args = fast_args(
        tmp_path / "run",
        max_steps=2,
        hub_model_id=REPO,
        hub_token=TOKEN,
        kl_controller="adaptive",
        kl_target=1.0,
        kl_horizon=100,
    )
    trainer = PPOTrainer(
        model=tiny_model_path, reward_funcs=DigitReward(tiny_model_path), args=args, train_dataset=prompts_dataset(16)
    )
    trainer.train()
    trainer.state.log_history.append({"eval/accuracy": 0.25, "step": 2})  # as VerifiableEvalCallback logs it
    import huggingface_hub.constants as constants

    original = constants.ENDPOINT
    constants.ENDPOINT = online_hub.url
    try:
        result = trainer.push_to_hub()
    finally:
        constants.ENDPOINT = original
    remote = online_hub.files(REPO)
    assert {
        "README.md",
        RUN_INFO_FILE,
        "model.safetensors",
        "kl_controller.json",
        "value_model/value_head.safetensors",
    } <= set(remote)
    assert len(online_hub.repo(REPO).commits) == 2 and result.commit_oid
    card = ModelCard.load(_download(online_hub, REPO, tmp_path / "cache") / "README.md")
    assert "ppo" in card.data.tags and "trl-ppo-plus" in card.data.tags
    assert card.data.eval_results[0].metric_value == 0.25
    info = json.loads(remote[RUN_INFO_FILE])
    assert info["kl_controller"]["kind"] == "adaptive"
    assert info["kl_controller"]["final_kl_coef"] == trainer.kl_ctl.value != info["kl_controller"]["init_kl_coef"]
    assert TOKEN.encode() not in remote["README.md"] and TOKEN.encode() not in remote[RUN_INFO_FILE]


def test_callbacks_bind_at_construction_and_save_model_publishes_the_full_card(tiny_model_path, tmp_path, capsys):
    """`callbacks=[...]` the HF way binds the evaluators; any `save_model` folder publishes with `model-index`."""
    import yaml
    from datasets import Dataset
    from ppo_helpers import DigitReward, fast_args, prompts_dataset

    from trl_ppo_plus import PPOTrainer
    from trl_ppo_plus.callbacks import CompletionSamplesCallback, VerifiableEvalCallback

    reward = DigitReward(tiny_model_path)
    held_out = Dataset.from_dict({"prompt": ["Ann has 2 apples and gets 3 more.", "Bob has 4 pens."]})
    evaluator = VerifiableEvalCallback(held_out, [reward], eval_steps=1, max_new_tokens=3, correct_threshold=0.0)
    samples = CompletionSamplesCallback(evaluator, num_print=0)  # holds the evaluator, which is not in `callbacks`
    args = fast_args(tmp_path / "run", max_steps=2, kl_controller="adaptive", kl_target=1.0, kl_horizon=100)
    trainer = PPOTrainer(
        model=tiny_model_path, reward_funcs=reward, args=args, train_dataset=prompts_dataset(16), callbacks=[samples]
    )
    assert evaluator.trainer is trainer and evaluator in trainer.callback_handler.callbacks
    trainer.train()
    assert [e["step"] for e in trainer.state.log_history if "eval/accuracy" in e] == [0, 1, 2]

    out = tmp_path / "saved"  # not output_dir, and no create_model_card / push_to_hub call
    trainer.save_model(str(out))
    result = publish(out, "me/ppo-run", dry_run=True, dry_run_dir=tmp_path / "dry")
    card = (Path(result.local_dir) / "model" / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    results = meta["model-index"][0]["results"]
    metrics = {m["name"]: m["value"] for r in results for m in r["metrics"]}
    assert metrics["accuracy"] == evaluator.last_results.metrics["eval/accuracy"] == 1.0
    info = json.loads((out / RUN_INFO_FILE).read_text())
    init = args.kl_coef
    assert info["kl_controller"]["init_kl_coef"] == init and info["kl_controller"]["final_kl_coef"] != init  # β moved
    assert info["reward_funcs"] == [{"name": "digit_reward", "weight": 1.0, "kind": "custom"}]
    assert (out / "training_curves.png").exists() and "training_curves.png" in card

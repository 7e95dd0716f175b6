"""The demo pipeline end to end on a very small config: every artifact is written and the summary is consistent.

Whether the demo *learns* is the full `trl-ppo-plus demo`'s job (see the README); this only checks the plumbing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trl_ppo_plus.demo import DemoConfig, run_demo
from trl_ppo_plus.demo_task import ITEMS, N_TRAIN_WORDS, NAMES, make_splits


SUMMARY_KEYS = {
    "sft_accuracy",
    "ppo_accuracy",
    "gain_points",
    "final_kl",
    "final_beta",
    "seconds",
    "held_out_problems",
    "eval_history",
    "dry_run_dir",
    "config",
}


def test_held_out_wording_never_seen_in_training():
    train, held_out = make_splits(seed=0, n_eval=64, wordings=2)
    train_text = " ".join(train["prompt"])
    for word in NAMES[N_TRAIN_WORDS:] + ITEMS[N_TRAIN_WORDS:]:
        assert f" {word} " not in f" {train_text} ".replace("?", " ").replace(".", " ")
    assert len(held_out) == 64 and len(set(held_out["prompt"])) == 64
    assert not set(held_out["prompt"]) & set(train["prompt"])


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    cfg = DemoConfig(
        output_dir=str(out),
        hidden_size=32,
        num_hidden_layers=1,
        wordings=1,
        n_eval=8,
        sft_steps=2,
        sft_batch_size=8,
        ppo_steps=3,
        ppo_batch_size=8,
        eval_steps=2,
    )
    return out, run_demo(cfg)


def test_demo_writes_summary(demo_run):
    out, summary = demo_run
    on_disk = json.loads((out / "demo_summary.json").read_text())
    assert SUMMARY_KEYS <= set(on_disk)
    assert on_disk["held_out_problems"] == 8
    history = on_disk["eval_history"]
    # evaluated before PPO (the SFT checkpoint, step 0), every eval_steps, and at the last step
    assert [h["step"] for h in history] == [0, 2, 3]
    assert on_disk["sft_accuracy"] == history[0]["accuracy"]
    assert on_disk["ppo_accuracy"] == history[-1]["accuracy"]
    assert on_disk["gain_points"] == pytest.approx(100 * (history[-1]["accuracy"] - history[0]["accuracy"]))
    assert on_disk["final_beta"] > 0 and on_disk["final_kl"] is not None
    assert summary["sft_accuracy"] == on_disk["sft_accuracy"]


def test_demo_writes_card_curves_and_dry_run(demo_run):
    out, summary = demo_run
    ppo_dir = out / "ppo"
    card = (ppo_dir / "README.md").read_text()
    assert "model-index" in card
    assert (ppo_dir / "training_curves.png").stat().st_size > 0
    assert (out / "sft" / "config.json").exists()
    dry = Path(summary["dry_run_dir"])
    assert dry.is_dir() and dry.resolve().is_relative_to(out.resolve())
    files = {p.relative_to(dry).as_posix() for p in dry.rglob("*") if p.is_file()}
    assert "model/README.md" in files
    assert "model/model.safetensors" in files
    assert any(f.startswith("model/value_model/") for f in files)  # the critic travels with the policy

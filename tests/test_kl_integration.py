"""KL controllers inside PPOTrainer: direction of β on a tiny model, and exact continuation after resume."""

import json

import pytest
from ppo_helpers import DigitReward, fast_args, logged, prompts_dataset

from trl_ppo_plus import PPOTrainer


@pytest.mark.parametrize("controller", ["adaptive", "pid"])
def test_beta_moves_towards_the_target(tiny_model_path, tmp_path, controller):
    def run(target):
        args = fast_args(
            tmp_path / f"{controller}-{target}",
            kl_controller=controller,
            kl_coef=0.1,
            kl_target=target,
            kl_horizon=200,
            max_steps=6,
            learning_rate=1e-2,
        )
        trainer = PPOTrainer(
            model=tiny_model_path,
            reward_funcs=DigitReward(tiny_model_path),
            args=args,
            train_dataset=prompts_dataset(16),
        )
        trainer.train()
        return trainer, logged(trainer, "objective/kl")

    low, kls = run(target=1e-4)  # far below any KL the run shows (after the first, KL-free, rollout)
    assert max(kls) > 1e-3
    assert low.kl_ctl.value > 0.1, "β should rise when the KL is above target"
    high, _ = run(target=1e4)  # far above
    assert high.kl_ctl.value < 0.1, "β should fall when the KL is below target"
    assert logged(high, "objective/kl_error")[-1] < 0 < logged(low, "objective/kl_error")[-1]


@pytest.mark.parametrize("controller", ["adaptive", "pid"])
def test_resume_continues_the_controller_exactly(tiny_model_path, tmp_path, controller):
    def args(out, steps):
        return fast_args(
            out,
            kl_controller=controller,
            kl_target=1e-3,
            kl_horizon=100,
            max_steps=steps,
            save_strategy="steps",
            save_steps=2,
            learning_rate=1e-2,
        )

    full = PPOTrainer(
        model=tiny_model_path,
        reward_funcs=DigitReward(tiny_model_path),
        args=args(tmp_path / "full", 4),
        train_dataset=prompts_dataset(32),
    )
    full.train()

    saved_file = json.loads((tmp_path / "full" / "checkpoint-2" / "kl_controller.json").read_text())
    saved = saved_file["state"]
    resumed = PPOTrainer(
        model=tiny_model_path,
        reward_funcs=DigitReward(tiny_model_path),
        args=args(tmp_path / "resumed", 4),
        train_dataset=prompts_dataset(32),
    )
    resumed.load_ppo_state(str(tmp_path / "full" / "checkpoint-2"))  # what resume runs
    assert resumed.kl_ctl.state_dict() == saved  # β after resume equals the saved β exactly
    assert resumed.kl_ctl.value != full.init_kl_coef
    # the score normaliser's running moments and the rollout count (critic warmup) come back too
    assert resumed.score_normalizer.state_dict() == saved_file["score_normalizer"]
    assert resumed.score_normalizer.moments.count == 2 * 8 and resumed._train_rollouts == 2

    resumed = PPOTrainer(
        model=tiny_model_path,
        reward_funcs=DigitReward(tiny_model_path),
        args=args(tmp_path / "resumed", 4),
        train_dataset=prompts_dataset(32),
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    assert logged(resumed, "objective/kl_coef") == logged(full, "objective/kl_coef")  # history 1-2 restored, 3-4 rerun
    assert resumed.kl_ctl.state_dict() == full.kl_ctl.state_dict()
    assert resumed._episodes == full._episodes  # the episode count continues too
    assert resumed.score_normalizer.state_dict() == full.score_normalizer.state_dict()
    assert logged(resumed, "objective/score_gain") == logged(full, "objective/score_gain")

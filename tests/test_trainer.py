"""PPOTrainer end to end on tiny local models: GRPO-script drop-in, critics, learning, validation."""

import pytest
import torch
from ppo_helpers import DigitReward, fast_args, logged, prompts_dataset
from transformers import AutoModelForSequenceClassification

from trl_ppo_plus import PPOConfig, PPOTrainer
from trl_ppo_plus.tiny import tiny_model_dir
from trl_ppo_plus.value import SeparateCritic, SharedTrunkCritic


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _changed(before, module, contains=""):
    return [k for k, v in module.named_parameters() if contains in k and not torch.equal(v, before[k])]


def test_grpo_style_script_with_swapped_class_names(tiny_model_path, tmp_path):
    # The shape of a TRL GRPO script: config, a Python reward, a model id/path, a "prompt" dataset.
    def reward_len(completions, **kwargs):
        return [-abs(4 - len(c.split())) for c in completions]

    training_args = PPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_completion_length=8,
        max_steps=2,
        learning_rate=1e-3,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = PPOTrainer(
        model=tiny_model_path, reward_funcs=reward_len, args=training_args, train_dataset=prompts_dataset(8)
    )
    assert isinstance(trainer.critic, SharedTrunkCritic)
    before = _snapshot(trainer.model)
    trainer.train()
    assert _changed(before, trainer.model, "model.layers"), "policy weights did not change"
    assert _changed(before, trainer.model, "ppo_critic"), "value head did not change"
    for key in [
        "objective/kl",
        "objective/scores",
        "objective/kl_coef",
        "policy/approxkl_avg",
        "policy/clipfrac_avg",
        "loss/policy_avg",
        "loss/value_avg",
        "val/ratio",
        "val/num_eos_tokens",
        "rewards/reward_len/mean",
        "completions/mean_length",
    ]:
        assert logged(trainer, key), f"metric {key} was not logged"


def test_separate_value_model_trains_and_saves(tiny_model_path, tmp_path):
    value_path = f"{tiny_model_path}/reward"
    trainer = PPOTrainer(
        model=tiny_model_path,
        reward_funcs=DigitReward(tiny_model_path),
        args=fast_args(tmp_path, max_steps=2),
        train_dataset=prompts_dataset(16),
        value_model=value_path,
    )
    assert isinstance(trainer.critic, SeparateCritic)
    before = _snapshot(trainer.critic)
    trainer.train()
    assert _changed(before, trainer.critic, "model.layers"), "value model trunk did not change"
    trainer.save_model(str(tmp_path / "final"))
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final" / "value_model")
    for name, param in trainer.critic.model.named_parameters():
        torch.testing.assert_close(param.detach(), reloaded.get_parameter(name).detach())
    policy_files = {p.name for p in (tmp_path / "final").iterdir()}
    assert {"model.safetensors", "config.json", "kl_controller.json", "value_model"} <= policy_files


@pytest.mark.parametrize("seed", [0, 1])
def test_learns_a_toy_verifiable_task(tiny_model_path, tmp_path, seed):
    trainer = PPOTrainer(
        model=tiny_model_path,
        reward_funcs=DigitReward(tiny_model_path),
        args=fast_args(tmp_path, per_device_train_batch_size=16, max_steps=40, learning_rate=1e-2, seed=seed),
        train_dataset=prompts_dataset(64),
    )
    trainer.train()
    rewards = logged(trainer, "reward")
    first, last = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    assert last > first + 0.1 and last > 2 * first, f"no learning: first 10 = {first:.3f}, last 10 = {last:.3f}"


def test_kl_penalty_in_loss_mode_changes_the_update(tiny_model_path, tmp_path):
    # In loss mode β does not enter the rollout's rewards, so two runs differing only in β see the same rollout. The
    # k3 term's gradient is 0 while the policy equals the reference (step 1) and pulls back toward it after (step 2):
    # with β = 1 the weights after step 2 differ from β = 0's. Replacing the loss-mode KL term by 0 fails this test.
    def run(beta):
        args = fast_args(
            tmp_path / str(beta),
            kl_penalty="loss",
            kl_estimator="k3",
            kl_coef=beta,
            num_ppo_epochs=2,
            max_steps=2,
            learning_rate=1e-2,
        )
        trainer = PPOTrainer(
            model=tiny_model_path,
            reward_funcs=DigitReward(tiny_model_path),
            args=args,
            train_dataset=prompts_dataset(8),
        )
        trainer.train()
        return trainer

    without_kl, with_kl = run(0.0), run(1.0)
    assert logged(without_kl, "objective/scores") == logged(with_kl, "objective/scores")  # the same rollout
    assert _changed(_snapshot(without_kl.model), with_kl.model, "model.layers"), "the loss-mode KL term did nothing"


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"cliprange": 0.0}, "cliprange"),
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": 1.5}, "gamma"),
        ({"lam": -0.1}, "lam"),
        ({"lam": 1.1}, "lam"),
        ({"kl_estimator": "k4"}, "kl_estimator"),
        ({"kl_penalty": "both"}, "kl_penalty"),
        ({"num_mini_batches": 3, "per_device_train_batch_size": 4}, "num_mini_batches"),
        ({"kl_controller": "adaptive", "kl_target": 0.0}, "kl_target"),
        ({"kl_controller": "adaptive", "kl_horizon": 0}, "kl_horizon"),
        ({"kl_controller": "pid", "kl_pid_ki": -1.0}, "kl_pid_ki"),
        ({"kl_controller": "pid", "kl_coef_min": 1.0, "kl_coef_max": 0.5}, "kl_coef"),
        ({"cpu_malloc_mmap_threshold": 64 * 2**20}, "cpu_malloc_mmap_threshold"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(tmp_path, overrides, field):
    kwargs = {"output_dir": str(tmp_path), "report_to": "none", **overrides}
    if "per_device_train_batch_size" in overrides:
        kwargs["generation_batch_size"] = 4
    with pytest.raises(ValueError, match=field):
        PPOConfig(**kwargs)


def test_num_generations_one_is_the_ppo_default(tmp_path):
    args = PPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=3, report_to="none")
    assert args.num_generations == 1 and args.generation_batch_size == 3
    grouped = PPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2, report_to="none")
    assert grouped.num_generations == 2


def test_missing_reward_fails_before_any_model_loads(tmp_path):
    # The policy path does not exist: reaching a model load would raise OSError, not this ValueError.
    with pytest.raises(ValueError, match="reward_funcs=None"):
        PPOTrainer(model=str(tmp_path / "no-such-model"), args=fast_args(tmp_path), train_dataset=prompts_dataset(4))


def test_value_model_with_other_vocabulary_is_rejected_before_loading(tiny_model_path, tiny_cache_dir, tmp_path):
    other = tiny_model_dir(cache_dir=tiny_cache_dir, vocab_size=300, corpus=("a b c d e f g 1 2 3",) * 20)
    with pytest.raises(ValueError, match=r"value_model=.*vocabulary"):
        PPOTrainer(
            model=tiny_model_path,
            reward_funcs=DigitReward(tiny_model_path),
            args=fast_args(tmp_path),
            train_dataset=prompts_dataset(4),
            value_model=str(other / "reward"),
        )
    # (A reward model may have its own tokenizer: GRPO re-tokenizes for it. tests/test_compat.py checks that.)

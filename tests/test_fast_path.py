"""The fast path (`trl_ppo_plus.fast_path`): a rollout trained on by one optimizer step gets its log-probs and values
from the loss forward. It must give the same step as the slow path, and be taken exactly when it applies."""

import math

import pytest
import torch
from ppo_helpers import DigitReward, fast_args, logged, prompts_dataset
from transformers import AutoModelForSequenceClassification, TrainerCallback

from trl_ppo_plus import PPOConfig, PPOTrainer, fast_path
from trl_ppo_plus.value import _backbone


# Two steps: the first rollout's KL is 0 (policy = reference); the second one's is not, and moves the controller.
BASE = dict(max_steps=2, kl_controller="adaptive", kl_coef=0.1, kl_target=0.01, kl_horizon=100, learning_rate=1e-2)
TIMING = {"step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos"}


def _trainer(model_path, out, model=None, value_model=None, **overrides):
    return PPOTrainer(
        model=model if model is not None else model_path,
        reward_funcs=DigitReward(model_path),
        args=fast_args(out, **{**BASE, **overrides}),
        train_dataset=prompts_dataset(16),
        value_model=value_model,
    )


def _train(build, fast: bool):
    torch.manual_seed(0)  # LoRA initialisations draw from it
    trainer = build()
    assert trainer._fast_path  # the configuration qualifies; the slow run turns it off by hand
    trainer._fast_path = fast
    torch.manual_seed(0)
    trainer.train()
    return trainer


def _assert_same_step(fast, slow):
    fast_params, slow_params = dict(fast.model.named_parameters()), dict(slow.model.named_parameters())
    assert fast_params.keys() == slow_params.keys()
    moved = 0
    # atol 1e-5 = 1e-3 of an Adam step at lr 1e-2: the loss forward (with grad) and the rollout forward (no grad)
    # round apart by ~1e-7 relative, which `whiten_rewards` amplifies to 2.2e-6 at lam 1.0, vf_coef 0.5.
    for name, p in fast_params.items():
        torch.testing.assert_close(p, slow_params[name], rtol=1e-5, atol=1e-5, msg=name)
        moved += p.requires_grad
    assert moved and any(name.startswith("ppo_critic.") for name in fast_params)  # policy and critic compared
    fast_logs, slow_logs = fast.state.log_history, slow.state.log_history
    assert len(fast_logs) == len(slow_logs) == fast.args.max_steps + 1  # the steps + the summary
    for fast_log, slow_log in zip(fast_logs[:-1], slow_logs[:-1], strict=True):
        assert fast_log.keys() == slow_log.keys()
        for key in fast_log.keys() - TIMING:
            a, b = fast_log[key], slow_log[key]
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-4, abs=1e-6), key
    if fast.kl_ctl.value:  # the second rollout's KL reached the controller, which moved β
        assert fast_logs[-2]["objective/kl"] != 0 and fast.kl_ctl.value != fast.init_kl_coef
    fast_state, slow_state = fast.kl_ctl.state_dict(), slow.kl_ctl.state_dict()
    assert fast_state.pop("kind") == slow_state.pop("kind")
    assert fast_state == pytest.approx(slow_state, rel=1e-6)
    assert fast._episodes == slow._episodes


CASES = {
    "shared trunk, beta > 0": {},
    "shared trunk, beta = 0": {"kl_controller": "fixed", "kl_coef": 0.0},
    "kl in the loss": {"kl_penalty": "loss", "kl_estimator": "k3"},
    "whitened advantages and rewards": {"whiten_advantages": True, "whiten_rewards": True},
    "gradient accumulation": {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2},
    "length-adaptive lambda": {"lam_actor_length_alpha": 0.5, "lam_critic": 1.0},
    "critic warmup": {"critic_warmup_rollouts": 1, "max_steps": 3},  # the policy moves from the second step on
}


@pytest.mark.parametrize("overrides", CASES.values(), ids=CASES.keys())
def test_fast_path_gives_the_slow_paths_step(tiny_model_path, tmp_path, overrides):
    def build():
        return _trainer(tiny_model_path, tmp_path, **overrides)

    _assert_same_step(_train(build, fast=True), _train(build, fast=False))


def test_fast_path_gives_the_slow_paths_step_with_a_separate_critic(tiny_model_path, tmp_path):
    def build():
        critic = AutoModelForSequenceClassification.from_pretrained(f"{tiny_model_path}/reward", num_labels=1)
        return _trainer(tiny_model_path, tmp_path, value_model=critic, gradient_accumulation_steps=2)

    _assert_same_step(_train(build, fast=True), _train(build, fast=False))


def test_fast_path_gives_the_slow_paths_step_with_the_qlora_value_adapter(tiny_model_path, tmp_path):
    pytest.importorskip("bitsandbytes")
    from trl_ppo_plus.modeling import load_policy_and_value

    def build():  # reference = the base with the adapters disabled
        model = load_policy_and_value(tiny_model_path, lora_r=4, lora_alpha=8, gradient_checkpointing=False)
        return _trainer(tiny_model_path, tmp_path, model=model)

    _assert_same_step(_train(build, fast=True), _train(build, fast=False))


def _rows_through(trainer, module) -> list[int]:
    """Rows of every forward through `module` outside generation, appended as they run."""
    rows, generating, generate = [], [], trainer._generate

    def count(mod, args, kwargs):
        if not generating:
            rows.append((kwargs.get("input_ids") if kwargs.get("input_ids") is not None else args[0]).size(0))

    def generate_uncounted(*args, **kwargs):
        generating.append(True)
        try:
            return generate(*args, **kwargs)
        finally:
            generating.pop()

    module.register_forward_pre_hook(count, with_kwargs=True)
    trainer._generate = generate_uncounted
    return rows


@pytest.mark.parametrize(
    ("overrides", "fast", "passes"),
    [
        ({}, True, 1),  # the loss forward is the rollout's
        ({"gradient_accumulation_steps": 2, "per_device_train_batch_size": 4}, True, 1),
        ({"num_ppo_epochs": 2}, False, 3),  # rollout forward + one loss forward per epoch
        ({"num_mini_batches": 2, "per_device_train_batch_size": 4}, False, 2),  # rollout forward + the loss forwards
    ],
)
def test_fast_path_skips_the_rollout_forwards_only_when_the_rollout_is_used_once(
    tiny_model_path, tmp_path, overrides, fast, passes
):
    critic = AutoModelForSequenceClassification.from_pretrained(f"{tiny_model_path}/reward", num_labels=1)
    steps = overrides.get("num_ppo_epochs", 1) * overrides.get("num_mini_batches", 1)  # one rollout's update
    trainer = _trainer(tiny_model_path, tmp_path, value_model=critic, max_steps=steps, **overrides)
    assert trainer._fast_path is fast
    policy_rows = _rows_through(trainer, _backbone(trainer._policy))
    critic_rows = _rows_through(trainer, _backbone(critic))
    reference_rows = _rows_through(trainer, _backbone(trainer.ref_model))
    trainer.train()
    rollout_rows = 8  # per_device_train_batch_size × gradient_accumulation_steps × num_mini_batches
    assert sum(policy_rows) == sum(critic_rows) == passes * rollout_rows
    assert sum(reference_rows) == rollout_rows  # the reference forward runs once per rollout on both paths


def test_fast_path_condition():
    def applies(**fields):
        return fast_path.applies(PPOConfig("out", report_to="none", **{"num_ppo_epochs": 1, **fields}))

    assert not fast_path.applies(PPOConfig("out", report_to="none"))  # the default: four epochs
    assert applies()
    assert applies(gradient_accumulation_steps=4, whiten_advantages=False)
    assert applies(whiten_advantages=True, whiten_rewards=True)  # one micro-batch: whitening sees the whole rollout
    assert not applies(num_ppo_epochs=2)
    assert not applies(num_mini_batches=2)
    assert not applies(gradient_accumulation_steps=2, whiten_advantages=True)  # needs every micro-batch first
    assert not applies(gradient_accumulation_steps=2, whiten_rewards=True)
    assert not applies(target_kl_early_stop=0.02)


def test_no_reference_forward_at_a_fixed_beta_of_zero_under_peft(tiny_model_path, tmp_path):
    # As GRPO at beta=0: no KL to compute, so no forward with the adapters disabled (the loss forward is the only one).
    from peft import LoraConfig

    trainer = PPOTrainer(
        model=tiny_model_path,
        reward_funcs=DigitReward(tiny_model_path),
        args=fast_args(tmp_path, max_steps=1, kl_coef=0.0, learning_rate=1e-2),
        train_dataset=prompts_dataset(8),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    rows = _rows_through(trainer, _backbone(trainer._policy))
    trainer.train()
    assert sum(rows) == 8  # one forward over the rollout's 8 rows: the loss's
    assert logged(trainer, "objective/kl") == [0.0]


class _InterruptInSecondRollout(TrainerCallback):
    """Stops training (as Ctrl-C would) after the first micro-batch of the second rollout, once."""

    armed = True

    def on_substep_end(self, args, state, control, **kwargs):
        if self.armed and state.global_step == 1:
            self.armed = False
            raise KeyboardInterrupt


def test_resuming_after_an_interrupted_rollout_logs_the_rollouts_own_metrics(tiny_model_path, tmp_path):
    # A rollout cut short leaves its first micro-batch's tensors behind; the resumed run's rollouts must not count
    # them (they would log, and steer β with, a mix of two rollouts, one micro-batch early).
    overrides = dict(kl_target=1.0, per_device_train_batch_size=4, gradient_accumulation_steps=2)
    overrides.update(save_strategy="steps", save_steps=1)
    full = _trainer(tiny_model_path, tmp_path / "full", **overrides)
    full.train()
    trainer = _trainer(tiny_model_path, tmp_path / "interrupted", **overrides)
    trainer.add_callback(_InterruptInSecondRollout())
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    trainer.train(resume_from_checkpoint=str(tmp_path / "interrupted" / "checkpoint-1"))
    assert logged(trainer, "objective/kl") == pytest.approx(logged(full, "objective/kl"), rel=1e-5)
    assert logged(full, "objective/kl")[1] > 0  # the second rollout has a KL to get wrong
    assert trainer.kl_ctl.value == pytest.approx(full.kl_ctl.value, rel=1e-6)
    for name, param in trainer.model.named_parameters():  # and the resumed run trains as the uninterrupted one
        torch.testing.assert_close(param, full.model.get_parameter(name), rtol=1e-5, atol=1e-6, msg=name)

"""Every GRPOConfig field is honoured, mapped to its PPO name, or refused; batching fields agree or raise."""

import dataclasses
from pathlib import Path

import pytest
import torch
from ppo_helpers import DigitReward, fast_args, logged, prompts_dataset
from transformers import TrainingArguments
from trl import GRPOConfig

from trl_ppo_plus import PPOConfig, PPOTrainer
from trl_ppo_plus.grpo_fields import HONOURED, LOSS_TYPE_TO_AGGREGATION, MAPPED, REFUSED


GRPO_OWN_FIELDS = sorted(
    {f.name for f in dataclasses.fields(GRPOConfig)} - {f.name for f in dataclasses.fields(TrainingArguments)}
)


PPO_EPOCHS_DEFAULT = next(f.default for f in dataclasses.fields(PPOConfig) if f.name == "num_ppo_epochs")


def _config(tmp_path, **kwargs) -> PPOConfig:
    return PPOConfig(output_dir=str(tmp_path), report_to="none", **kwargs)


def test_every_grpo_field_is_honoured_mapped_or_refused():
    tables = {"honoured": set(HONOURED), "mapped": set(MAPPED), "refused": set(REFUSED)}
    unaccounted = [f for f in GRPO_OWN_FIELDS if not any(f in names for names in tables.values())]
    assert not unaccounted, f"GRPOConfig fields in none of HONOURED / MAPPED / REFUSED: {unaccounted}"
    twice = [f for f in GRPO_OWN_FIELDS if sum(f in names for names in tables.values()) > 1]
    assert not twice, f"GRPOConfig fields in more than one table: {twice}"
    stale = set().union(*tables.values()) - set(GRPO_OWN_FIELDS)
    assert not stale, f"table entries that are not GRPOConfig fields: {stale}"
    ppo_fields = {f.name for f in dataclasses.fields(PPOConfig)}
    assert {ppo for ppo, _ in MAPPED.values()} <= ppo_fields


def test_readme_has_the_field_table():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for name in GRPO_OWN_FIELDS:
        kind = "honoured" if name in HONOURED else "mapped" if name in MAPPED else "refused"
        assert f"| `{name}` | {kind}" in readme, f"README's GRPOConfig table lacks {name}"


# A value away from PPOConfig's default for each refused field.
NON_DEFAULT = {
    "router_aux_loss_coef": 0.01,
    "importance_sampling_level": "sequence",
    "multi_objective_aggregation": "normalize_then_sum",
    "scale_rewards": "group",
    "sync_ref_model": True,
    "use_adaptive_entropy": True,
    "vllm_importance_sampling_correction": True,
    "vllm_importance_sampling_mode": "token_truncate",
    "vllm_importance_sampling_clip_min": 0.5,
    "vllm_importance_sampling_cap": 2.0,
    "off_policy_mask_threshold": 0.5,
    "use_bias_correction_kl": True,
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_fields_raise_naming_field_and_value(tmp_path, name):
    default = next(f.default for f in dataclasses.fields(PPOConfig) if f.name == name)
    value = NON_DEFAULT[name] if name in NON_DEFAULT else (default or 0.0) + 0.5
    with pytest.raises(ValueError, match=rf"PPOConfig\.{name}={value!r} is not supported"):
        _config(tmp_path, **{name: value})
    _config(tmp_path, **{name: default})  # the default is accepted


def test_sync_ref_model_is_refused_without_misquoting_beta(tmp_path):
    # GRPO's own error said "while `beta=0.0`" for a user who passed beta=0.1 (PPO moves beta onto kl_coef).
    with pytest.raises(ValueError, match="sync_ref_model=True is not supported") as err:
        _config(tmp_path, sync_ref_model=True, beta=0.1)
    assert "beta=0.0" not in str(err.value)


def test_scale_rewards_false_means_none(tmp_path):
    assert _config(tmp_path, scale_rewards=False).scale_rewards == "none"


@pytest.mark.parametrize("num_iterations", [1, 2, 3])
def test_num_iterations_sets_num_ppo_epochs_when_given(tmp_path, num_iterations):
    # A GRPO script's num_iterations=1 (its default, written out) means one epoch, not PPO's default of 4.
    args = _config(tmp_path, num_iterations=num_iterations, total_episodes=16, per_device_train_batch_size=8)
    assert args.num_ppo_epochs == args.num_iterations == num_iterations
    assert args.max_steps == 2 * num_iterations  # 2 rollouts of 8 × epochs × 1 mini-batch
    assert _config(tmp_path).num_ppo_epochs == PPO_EPOCHS_DEFAULT  # unset: PPO's default


def test_grpo_clip_names_set_the_clip_ranges(tmp_path):
    args = _config(tmp_path, epsilon=0.1, epsilon_high=0.28)
    assert (args.cliprange, args.cliprange_high) == (0.1, 0.28)
    assert (args.epsilon, args.epsilon_high) == (0.1, 0.28)  # GRPOTrainer reads these names: same values
    plain = _config(tmp_path)
    assert (plain.cliprange, plain.cliprange_high) == (0.2, None)


@pytest.mark.parametrize("loss_type, aggregation", sorted(LOSS_TYPE_TO_AGGREGATION.items()))
def test_loss_type_sets_the_loss_aggregation(tmp_path, loss_type, aggregation):
    assert _config(tmp_path, loss_type=loss_type).loss_aggregation == aggregation


@pytest.mark.parametrize("loss_type", ["cispo", "sapo", "luspo", "vespo"])
def test_loss_types_that_are_not_ppo_are_refused(tmp_path, loss_type):
    with pytest.raises(ValueError, match=f"loss_type='{loss_type}' is not supported"):
        _config(tmp_path, loss_type=loss_type)


def test_delta_sets_dual_clip(tmp_path):
    args = _config(tmp_path, delta=3.0)
    assert (args.dual_clip, args.delta) == (3.0, 3.0)
    assert _config(tmp_path).dual_clip is None


def test_delta_has_the_gradients_of_grpos_two_sided_clip_or_is_refused(tmp_path):
    # GRPO (INTELLECT-2): the ratio is clamped at delta, then the clipped min. With delta >= 1 + epsilon_high that is
    # dual-clip PPO; below it GRPO also stops positive-advantage ratios in (delta, 1 + ε], which dual-clip does not.
    from trl_ppo_plus.ppo_math import policy_loss

    eps, delta = 0.2, 1.5
    advantages = torch.tensor([[1.0, 1.0, 1.0, -1.0, -1.0, -1.0]])
    old, mask = torch.zeros_like(advantages), torch.ones_like(advantages)
    ratios = torch.tensor([[1.1, 1.3, 1.7, 0.7, 1.3, 1.7]])  # inside, past 1 + ε, past δ; for both signs of A

    def grads(loss_of):
        logprob = ratios.log().requires_grad_()
        loss_of(logprob).backward()
        return logprob.grad

    def grpo(logprob):
        ratio = (logprob - old).exp().clamp(max=delta)
        per_token = -torch.minimum(ratio * advantages, ratio.clamp(1 - eps, 1 + eps) * advantages)
        return per_token.mean()

    args = _config(tmp_path, delta=delta, epsilon=eps)
    ppo = grads(lambda lp: policy_loss(lp, old, advantages, mask, args.cliprange, dual_clip=args.dual_clip)[0])
    torch.testing.assert_close(ppo, grads(grpo))
    with pytest.raises(ValueError, match="delta=1.1 is below 1 \\+ epsilon_high = 1.2"):
        _config(tmp_path, delta=1.1, epsilon=eps)


def test_beta_sets_kl_coef_and_grpo_kl_stays_off(tmp_path):
    args = _config(tmp_path, beta=0.1)
    assert (args.kl_coef, args.beta) == (0.1, 0.0)


@pytest.mark.parametrize(
    "grpo, ppo",
    [
        ({"num_iterations": 2}, {"num_ppo_epochs": 3}),
        ({"epsilon": 0.1}, {"cliprange": 0.3}),
        ({"epsilon_high": 0.28}, {"cliprange_high": 0.3}),
        ({"delta": 3.0}, {"dual_clip": 2.0}),
        ({"loss_type": "grpo"}, {"loss_aggregation": "seq-mean-token-sum"}),
        ({"beta": 0.1}, {"kl_coef": 0.2}),
    ],
)
def test_conflicting_grpo_and_ppo_names_raise(tmp_path, grpo, ppo):
    (grpo_name,), (ppo_name,) = grpo, ppo
    with pytest.raises(ValueError, match=f"{grpo_name}=.* and PPOConfig.{ppo_name}=.* disagree"):
        _config(tmp_path, **grpo, **ppo)
    _config(tmp_path, **grpo, **{ppo_name: grpo[grpo_name] if grpo_name != "loss_type" else "seq-mean-token-mean"})


def test_mapped_values_obey_the_ppo_bounds(tmp_path):
    with pytest.raises(ValueError, match="num_ppo_epochs=0"):
        _config(tmp_path, num_iterations=0)
    with pytest.raises(ValueError, match="cliprange=-0.1"):
        _config(tmp_path, epsilon=-0.1)
    with pytest.raises(ValueError, match="delta=0.5 is below 1 \\+ epsilon_high"):  # before dual_clip's own bound
        _config(tmp_path, delta=0.5)


def test_new_ppo_fields_are_validated(tmp_path):
    with pytest.raises(ValueError, match="loss_aggregation='seq-sum'"):
        _config(tmp_path, loss_aggregation="seq-sum")
    with pytest.raises(ValueError, match="cliprange_high=0.0"):
        _config(tmp_path, cliprange_high=0.0)
    with pytest.raises(ValueError, match="dataset_num_proc=0"):
        _config(tmp_path, dataset_num_proc=0)
    assert _config(tmp_path, dataset_num_proc=2).dataset_num_proc == 2


# ---------------------------------------------------------------- re-initialised configs


def test_a_replaced_or_copied_config_derives_its_fields_again(tmp_path):
    # dataclasses.replace re-runs __post_init__ with every field, the derived ones included: before, the GRPO names'
    # copies of the PPO fields read as a conflict, and GRPOConfig refused its own derived batching pair.
    import copy
    import pickle

    args = _config(tmp_path, per_device_train_batch_size=2, total_episodes=16, loss_type="grpo")
    epochs = dataclasses.replace(args, num_ppo_epochs=3)
    assert (epochs.num_ppo_epochs, epochs.num_iterations, epochs.max_steps) == (3, 3, 3 * 8)
    assert dataclasses.replace(pickle.loads(pickle.dumps(args)), cliprange=0.3).epsilon == 0.3
    assert dataclasses.replace(args, loss_aggregation="token-mean").loss_aggregation == "token-mean"
    accumulated = dataclasses.replace(copy.deepcopy(args), gradient_accumulation_steps=2)
    assert (accumulated.steps_per_generation, accumulated.generation_batch_size) == (2, 4)
    assert accumulated.max_steps == 4 * args.num_ppo_epochs  # 16 episodes in rollouts of 4, one mini-batch per epoch
    with pytest.raises(ValueError, match="num_iterations=2 and PPOConfig.num_ppo_epochs=3"):
        dataclasses.replace(args, num_iterations=2, num_ppo_epochs=3)  # what the user sets still has to agree
    with pytest.raises(ValueError, match="max_steps=5 was set"):
        dataclasses.replace(args, max_steps=5)
    hparams = args.to_sanitized_dict()  # TensorBoard's: a marked value must not turn into a string
    assert (type(hparams["num_iterations"]), type(hparams["max_steps"]), hparams["loss_type"]) == (int, int, "grpo")


# ---------------------------------------------------------------- batching


def test_generation_batch_size_derives_num_mini_batches_and_max_steps(tmp_path):
    # The run: 64 episodes requested, rollouts of 16 at 2 per micro-batch. Before, num_mini_batches stayed 1
    # while a rollout held 8 micro-batches: max_steps covered 2 of the 8 per epoch.
    args = _config(
        tmp_path, total_episodes=64, generation_batch_size=16, per_device_train_batch_size=2, num_ppo_epochs=4
    )
    assert args.steps_per_generation == 8 and args.num_mini_batches == 8
    assert args.max_steps == 4 * 4 * 8  # 4 rollouts × 4 epochs × 8 mini-batches: every micro-batch, every epoch
    accumulated = _config(tmp_path, steps_per_generation=8, gradient_accumulation_steps=4, total_episodes=64)
    assert accumulated.num_mini_batches == 2 and accumulated.generation_batch_size == 64


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"generation_batch_size": 16, "per_device_train_batch_size": 2, "num_mini_batches": 2}, "num_mini_batches=2"),
        ({"steps_per_generation": 3, "gradient_accumulation_steps": 2}, "steps_per_generation=3"),
        ({"total_episodes": 16, "per_device_train_batch_size": 8, "max_steps": 5}, "total_episodes=16"),
    ],
)
def test_disagreeing_batching_fields_raise(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _config(tmp_path, **kwargs)


def test_num_mini_batches_sets_the_rollout_size(tmp_path):
    args = _config(tmp_path, num_mini_batches=4, per_device_train_batch_size=2, gradient_accumulation_steps=2)
    assert (args.steps_per_generation, args.generation_batch_size) == (8, 16)


def test_every_requested_episode_is_trained_on(tiny_model_path, tmp_path):
    # 16 episodes in rollouts of generation_batch_size=8, micro-batches of 4: 2 rollouts × 2 mini-batches × 2 epochs.
    # A GRPO script's settings (num_iterations, generation_batch_size), with PPOConfig's own defaults otherwise.
    args = _config(
        tmp_path,
        total_episodes=16,
        generation_batch_size=8,
        per_device_train_batch_size=4,
        num_iterations=2,
        max_completion_length=4,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = PPOTrainer(
        model=tiny_model_path, reward_funcs=DigitReward(tiny_model_path), args=args, train_dataset=prompts_dataset(16)
    )
    trainer.train()
    assert trainer.state.global_step == 8
    assert logged(trainer, "episode")[-1] == 16
    assert len(logged(trainer, "loss/policy_avg")) == 8  # each micro-batch of each epoch made a loss


def test_honoured_generation_fields_reach_the_generation_config(tiny_model_path, tmp_path):
    args = fast_args(
        tmp_path,
        temperature=0.5,
        top_p=0.9,
        top_k=7,
        min_p=0.05,
        repetition_penalty=1.3,
        max_completion_length=5,
        generation_kwargs={"no_repeat_ngram_size": 2},
        num_generations=2,
        num_generations_eval=4,
        reward_weights=[0.5],
        shuffle_dataset=False,
        chat_template_kwargs={"enable_thinking": False},
        mask_truncated_completions=True,
    )
    trainer = PPOTrainer(
        model=tiny_model_path, reward_funcs=DigitReward(tiny_model_path), args=args, train_dataset=prompts_dataset(8)
    )
    config = trainer.generation_config
    assert (config.temperature, config.top_p, config.top_k, config.min_p) == (0.5, 0.9, 7, 0.05)
    assert (config.repetition_penalty, config.max_new_tokens, config.no_repeat_ngram_size) == (1.3, 5, 2)
    assert (trainer.num_generations, trainer.num_generations_eval) == (2, 4)
    assert trainer.reward_weights.tolist() == [0.5] and trainer.shuffle_dataset is False
    assert trainer.chat_template_kwargs == {"enable_thinking": False} and trainer.mask_truncated_completions
    assert torch.equal(trainer.reward_weights, torch.tensor([0.5]))


def test_a_max_steps_that_buys_fewer_rollouts_than_grpo_says_so(tmp_path, caplog):
    # Issue 18: a GRPO script keeps its max_steps; with 4 epochs per rollout it generates a quarter of the completions.
    import logging

    def warnings_for(**kwargs):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="trl_ppo_plus.config"):
            _config(tmp_path, per_device_train_batch_size=16, **kwargs)
        return [r.getMessage() for r in caplog.records if "counts optimizer steps" in r.getMessage()]

    (message,) = warnings_for(max_steps=60)  # the default: 4 epochs, one mini-batch
    assert "240 completions in 15 rollout(s)" in message and "generates 960" in message
    assert "total_episodes" in message  # the fix it names
    assert "last rollout" not in message  # 60 = 15 × 4
    assert "the last rollout is trained for 2 of its 4 steps" in warnings_for(max_steps=10)[0].lower()
    by_two = warnings_for(max_steps=60, num_mini_batches=2)[0]  # rollouts of 32, 4 epochs of 2 steps
    assert "8 per rollout" in by_two and "256 completions in 8 rollout(s)" in by_two and "generates 960" in by_two
    assert "trained for 4 of its 8 steps" in by_two
    # A script that chose its epochs (the demo, the example YAMLs, a GRPO num_iterations) is not warned.
    assert warnings_for(max_steps=60, num_ppo_epochs=4) == []
    assert warnings_for(max_steps=60, num_ppo_epochs=2, num_mini_batches=2) == []
    assert warnings_for(max_steps=60, num_iterations=2) == []
    assert warnings_for(max_steps=60, num_ppo_epochs=1) == []  # GRPO's count: nothing to say
    assert warnings_for(total_episodes=960) == []  # a completion budget: 60 rollouts, max_steps derived
    assert warnings_for() == []  # no max_steps: the dataset and num_train_epochs decide


def test_an_explicit_four_epochs_still_conflicts_with_num_iterations(tmp_path):
    # 4 is the default, but a user who writes it (TRL 1.12's YAMLs do) and GRPO's num_iterations=2 disagree.
    with pytest.raises(ValueError, match="num_iterations=2 and PPOConfig.num_ppo_epochs=4 disagree"):
        _config(tmp_path, num_ppo_epochs=4, num_iterations=2)
    assert _config(tmp_path, num_iterations=2).num_ppo_epochs == 2  # the default gives way
    args = _config(tmp_path)
    assert dataclasses.replace(args, num_iterations=3).num_ppo_epochs == 3  # still the default after a replace

"""Each PPOConfig switch changes what it should, on one rollout of a tiny model (no training loop)."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from ppo_helpers import DigitReward, fast_args, prompts_dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from trl_ppo_plus import PPOTrainer, ppo_math
from trl_ppo_plus.value import SeparateCritic


PROMPTS = [f"Ann has {i} apples." for i in range(8)]


def _trainer(model, tmp_path, **overrides):
    return PPOTrainer(
        model=model,
        reward_funcs=DigitReward(model if isinstance(model, str) else model.name_or_path),
        args=fast_args(tmp_path, **overrides),
        train_dataset=prompts_dataset(8),
    )


def _rollout(trainer, seed=0):
    """One training rollout on PROMPTS, with the sampling seed fixed so two calls draw the same completions.

    Built whole, by the slow path: the fast path would leave its log-probs, values and advantages to the loss forward
    (tests/test_fast_path.py checks that both paths train alike)."""
    trainer.model.train()
    trainer._fast_path = False
    torch.manual_seed(seed)
    return trainer._generate_and_score_completions([{"prompt": p} for p in PROMPTS])


def _value_loss(trainer, batch) -> float:
    trainer._compute_loss(trainer.model, batch)
    return trainer._metrics["train"]["loss/value_avg"][-1]


@pytest.fixture(scope="module")
def trainer(tiny_model_path, tmp_path_factory):
    """Shared by the tests that only flip `args` fields read at rollout or loss time."""
    trainer = _trainer(tiny_model_path, tmp_path_factory.mktemp("fields"), kl_coef=0.0)
    trainer.current_gradient_accumulation_steps = 1  # set by `train()`; `_compute_loss` divides by it
    return trainer


@pytest.fixture
def args_of(trainer):
    """Set fields on the shared trainer's args for one test, and put them back after."""
    saved = {}

    def set_fields(**fields):
        for name, value in fields.items():
            saved.setdefault(name, getattr(trainer.args, name))
            setattr(trainer.args, name, value)

    yield set_fields
    for name, value in saved.items():
        setattr(trainer.args, name, value)


def test_whiten_rewards(trainer, args_of):
    args_of(whiten_rewards=False, reward_normalization="none")  # the running score scale moves between rollouts
    raw = _rollout(trainer)
    args_of(whiten_rewards=True)
    whitened = _rollout(trainer)
    mask = raw["loss_mask"]
    torch.testing.assert_close(whitened["rewards"], ppo_math.masked_whiten(raw["rewards"], mask, shift_mean=False))
    assert ppo_math.masked_var(whitened["rewards"], mask).item() == pytest.approx(1.0, rel=1e-4)
    assert not torch.allclose(whitened["rewards"], raw["rewards"])


@pytest.mark.parametrize("whiten", [True, False])
def test_whiten_advantages(trainer, args_of, whiten):
    args_of(whiten_advantages=whiten, lam=0.95)  # λ < 1: at λ = γ = 1 GAE telescopes and would not read `lam`
    batch = _rollout(trainer)
    mask = batch["loss_mask"]
    gae, returns = ppo_math.gae_advantages(batch["rewards"], batch["old_values"], mask, 1.0, 0.95)
    expected = ppo_math.masked_whiten(gae, mask) if whiten else gae
    torch.testing.assert_close(batch["advantages"], expected)
    torch.testing.assert_close(batch["returns"], returns)  # returns come from the raw advantages either way
    mean = ppo_math.masked_mean(batch["advantages"], mask).item()
    assert (abs(mean) < 1e-5) == whiten


def test_lam_critic_gives_the_returns_and_lam_the_advantages(trainer, args_of):
    # At the default λ = 1 `lam_critic=1.0` is a no-op; with λ = 0.95 the two GAE passes differ (VAPO).
    args_of(whiten_advantages=False, lam=0.95, lam_critic=1.0)
    batch = _rollout(trainer)
    rewards, values, mask = batch["rewards"], batch["old_values"], batch["loss_mask"]
    actor, _ = ppo_math.gae_advantages(rewards, values, mask, 1.0, 0.95)
    _, critic = ppo_math.gae_advantages(rewards, values, mask, 1.0, 1.0)
    torch.testing.assert_close(batch["advantages"], actor)
    torch.testing.assert_close(batch["returns"], critic)
    assert not torch.allclose(critic, actor + values * mask)  # the returns are not the policy's λ-returns


def test_vf_coef_weights_the_value_loss(trainer, args_of):
    batch = _rollout(trainer)
    losses = {}
    for vf_coef in (0.1, 0.5):
        args_of(vf_coef=vf_coef)
        losses[vf_coef] = trainer._compute_loss(trainer.model, batch).item()
    value_loss = trainer._metrics["train"]["loss/value_avg"][-1]
    assert value_loss > 0
    assert losses[0.5] - losses[0.1] == pytest.approx(0.4 * value_loss, rel=1e-4)


@pytest.mark.parametrize("clip, cliprange_value", [(False, 0.1), (True, 0.1), (True, 10.0)])
def test_clip_value_loss_and_cliprange_value(trainer, args_of, clip, cliprange_value):
    args_of(clip_value_loss=clip, cliprange_value=cliprange_value)
    batch = _rollout(trainer)
    values = batch["old_values"]  # the critic has not moved since the rollout: these are its current values
    batch["old_values"] = values + 1.0  # pretend the rollout's values were 1 higher, so the clip can bind
    returns, mask = batch["returns"], batch["loss_mask"]
    unclipped = (values - returns) ** 2
    v_clipped = batch["old_values"] + (values - batch["old_values"]).clamp(-cliprange_value, cliprange_value)
    per_token = torch.maximum(unclipped, (v_clipped - returns) ** 2) if clip else unclipped
    expected = 0.5 * ppo_math.masked_mean(per_token, mask).item()
    assert _value_loss(trainer, batch) == pytest.approx(expected, rel=1e-5)
    if clip and cliprange_value < 1.0:  # a binding clip gives a loss the unclipped formula does not
        assert expected != pytest.approx(0.5 * ppo_math.masked_mean(unclipped, mask).item())


def test_entropy_coef(trainer, args_of):
    batch = _rollout(trainer)
    args_of(entropy_coef=0.0)
    plain = trainer._compute_loss(trainer.model, batch).item()
    args_of(entropy_coef=0.1)
    with_bonus = trainer._compute_loss(trainer.model, batch).item()
    entropy = trainer._metrics["train"]["policy/entropy_avg"][-1]
    assert entropy > 0
    assert with_bonus == pytest.approx(plain - 0.1 * entropy, rel=1e-5)


def test_mask_truncated_completions_and_stop_token_id(tiny_model_path, tmp_path):
    def run(**overrides):
        trainer = _trainer(tiny_model_path, tmp_path, max_completion_length=4, **overrides)
        return trainer, _rollout(trainer)

    trainer, kept = run(mask_truncated_completions=False)
    last = kept["completion_ids"].gather(1, kept["completion_mask"].sum(1, keepdim=True) - 1).squeeze(1)
    ended = torch.isin(last, torch.tensor(trainer.eos_token_ids))  # (B,) completions that end with EOS
    assert (~ended).any()
    _, masked = run(mask_truncated_completions=True)
    torch.testing.assert_close(kept["completion_ids"], masked["completion_ids"])  # the same completions
    assert (kept["loss_mask"][~ended].sum(1) > 0).all()  # truncated ones are kept in the loss ...
    assert masked["loss_mask"][~ended].sum() == 0 and masked["completion_mask"][~ended].sum() == 0  # ... or not
    torch.testing.assert_close(masked["loss_mask"][ended], kept["loss_mask"][ended])

    stop = int(kept["completion_ids"][0, 0])  # the first token sampled for row 0 ...
    _, stopped = run(mask_truncated_completions=True, stop_token_id=stop)
    assert stopped["completion_ids"][0, 0] == stop and stopped["completion_mask"][0].tolist()[:2] == [1, 0]
    assert stopped["loss_mask"][0, 0] == 1  # ... now ends row 0's completion, which counts as ended


def test_ref_adapter_name(tiny_model_path, tmp_path):
    def peft_policy():
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_path)
        config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        model = get_peft_model(base, config)  # a random (non-zero) "default" adapter: the policy ...
        model.add_adapter("ref", config)
        copy = {k.replace(".default.", ".ref."): v for k, v in model.state_dict().items() if ".default." in k}
        assert model.load_state_dict(copy, strict=False).unexpected_keys == []  # ... and "ref", a copy of it
        return model

    base_ref = _rollout(_trainer(peft_policy(), tmp_path / "base"))
    adapter_ref = _rollout(_trainer(peft_policy(), tmp_path / "adapter", ref_adapter_name="ref"))
    mask = adapter_ref["loss_mask"].bool()
    torch.testing.assert_close(
        adapter_ref["ref_per_token_logps"][mask], adapter_ref["old_per_token_logps"][mask]
    )  # reference = the "ref" adapter = the policy
    assert not torch.allclose(base_ref["ref_per_token_logps"][mask], base_ref["old_per_token_logps"][mask])


def test_value_model_path(tiny_model_path, tmp_path):
    value_path = f"{tiny_model_path}/reward"
    trainer = _trainer(tiny_model_path, tmp_path, value_model_path=value_path)
    assert isinstance(trainer.critic, SeparateCritic)
    expected = AutoModelForSequenceClassification.from_pretrained(value_path, num_labels=1)
    for name, param in expected.named_parameters():
        torch.testing.assert_close(trainer.critic.model.get_parameter(name).detach(), param.detach())
    batch = _rollout(trainer)
    assert batch["old_values"].abs().sum() > 0  # a trained classifier's values, not the zero-initialised head's


def test_value_huber_delta_reaches_the_value_loss(trainer, args_of):
    args_of(clip_value_loss=False, value_huber_delta=None)
    batch = _rollout(trainer)
    values, mask = batch["old_values"], batch["loss_mask"]  # the critic's current values (it has not moved)
    batch["returns"] = values + 3.0 * mask  # every error is 3: above δ = 1, below δ = 10
    squared = _value_loss(trainer, batch)
    assert squared == pytest.approx(0.5 * 9.0, rel=1e-5)
    args_of(value_huber_delta=1.0)
    assert _value_loss(trainer, batch) == pytest.approx(1.0 * (3.0 - 0.5), rel=1e-5)  # Huber's linear branch
    args_of(value_huber_delta=10.0)
    assert _value_loss(trainer, batch) == pytest.approx(squared, rel=1e-5)  # quadratic below δ

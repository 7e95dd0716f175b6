"""Reference checks for the PPO tricks (dual clip, clip-higher, loss aggregation, length-adaptive and decoupled GAE
λ, explained variance, score normalisation): each against a slow loop over rows and tokens, on ragged float64 masks.
"""

import math
import statistics

import pytest
import torch

from tests.test_ppo_math import CASES, TOL, case_data, randn, ref_gae, scalar, with_garbage
from trl_ppo_plus import ppo_math as pm
from trl_ppo_plus.config import PPOConfig
from trl_ppo_plus.reward_norm import RunningMoments, ScoreNormalizer


def ref_policy_token_losses(lp, olp, adv, lengths, low, high, dual_clip):
    """Per-row lists of per-token losses: max(-A r, -A clip(r)), capped at -c A where A < 0 (dual clip)."""
    rows = []
    for i, n in enumerate(lengths):
        row = []
        for t in range(n):
            ratio = math.exp(float(lp[i, t]) - float(olp[i, t]))
            a = float(adv[i, t])
            loss = max(-a * ratio, -a * min(max(ratio, 1 - low), 1 + high))
            if dual_clip is not None and a < 0:
                loss = min(loss, -dual_clip * a)  # Ye et al. 2020 Eq. 5
            row.append(loss)
        rows.append(row)
    return rows


def ref_aggregate(rows, mode):
    if mode == "token-mean":
        flat = [x for row in rows for x in row]
        return sum(flat) / max(len(flat), 1)
    per_row = [sum(row) if mode == "seq-mean-token-sum" else sum(row) / len(row) for row in rows if row]
    return sum(per_row) / max(len(per_row), 1)


@pytest.mark.parametrize("seed,B,T", CASES)
@pytest.mark.parametrize("aggregation", pm.LOSS_AGGREGATIONS)
@pytest.mark.parametrize("dual_clip,high", [(None, None), (3.0, None), (None, 0.28), (1.5, 0.28)])
def test_policy_loss_tricks_match_reference(seed, B, T, aggregation, dual_clip, high):
    gen, lengths, mask = case_data(seed, B, T)
    olp = randn(B, T, gen) - 2
    lp = olp + 0.8 * randn(B, T, gen)  # wide ratios: many tokens clipped, some past the dual clip
    adv = randn(B, T, gen)
    rows = ref_policy_token_losses(lp, olp, adv, lengths, 0.2, high or 0.2, dual_clip)
    lpg = with_garbage(lp, mask).requires_grad_()
    loss, _ = pm.policy_loss(
        lpg,
        with_garbage(olp, mask),
        with_garbage(adv, mask),
        mask,
        0.2,
        cliprange_high=high,
        dual_clip=dual_clip,
        loss_aggregation=aggregation,
    )
    torch.testing.assert_close(loss, scalar(ref_aggregate(rows, aggregation)), **TOL)
    loss.backward()
    assert torch.isfinite(lpg.grad).all() and (lpg.grad[~mask.bool()] == 0).all()


def test_dual_clip_bounds_a_huge_ratio_on_a_negative_advantage():
    adv = torch.tensor([[-1.0, 1.0]], dtype=torch.float64)
    lp = torch.tensor([[5.0, 5.0]], dtype=torch.float64, requires_grad=True)  # ratio e^5 ≈ 148 on both tokens
    olp, mask = torch.zeros(1, 2, dtype=torch.float64), torch.ones(1, 2)
    plain, _ = pm.policy_loss(lp, olp, adv, mask, 0.2, loss_aggregation="seq-mean-token-sum")
    dual, _ = pm.policy_loss(lp, olp, adv, mask, 0.2, dual_clip=3.0, loss_aggregation="seq-mean-token-sum")
    assert plain.item() == pytest.approx(math.exp(5) - 1.2)  # unbounded on A < 0; clipped at 1.2 on A > 0
    assert dual.item() == pytest.approx(3.0 - 1.2)  # capped at -c·A = 3
    (grad,) = torch.autograd.grad(dual, lp)
    assert (grad == 0).all()  # both tokens on a flat branch: the stale token no longer pulls


def test_aggregation_unknown_names_it():
    with pytest.raises(ValueError, match="seq-mean"):
        pm.aggregate_loss(torch.zeros(2, 2), torch.ones(2, 2), "sequence-mean")


@pytest.mark.parametrize("seed,B,T", CASES)
def test_length_adaptive_lam_and_per_row_gae_match_reference(seed, B, T):
    gen, lengths, mask = case_data(seed, B, T)
    alpha = 0.5
    lam = pm.length_adaptive_lam(mask, alpha)
    expected = [min(max(1 - 1 / (alpha * n), 0.0), 1.0) if n else 0.0 for n in lengths]
    torch.testing.assert_close(lam, torch.tensor(expected, dtype=torch.float64), **TOL)
    rewards, values = randn(B, T, gen), randn(B, T, gen)
    adv, ret = pm.gae_advantages(with_garbage(rewards, mask), with_garbage(values, mask), mask, 1.0, lam)
    for i, n in enumerate(lengths):  # each row with its own λ equals the scalar-λ reference on that row
        exp_adv, exp_ret = ref_gae(rewards[i : i + 1], values[i : i + 1], [n], 1.0, expected[i])
        torch.testing.assert_close(adv[i], exp_adv[0], **TOL)
        torch.testing.assert_close(ret[i], exp_ret[0], **TOL)


@pytest.mark.parametrize("seed,B,T", CASES[:3])
def test_explained_variance_matches_reference(seed, B, T):
    gen, lengths, mask = case_data(seed, B, T)
    returns = randn(B, T, gen)
    values = returns + 0.5 * randn(B, T, gen)
    ys = [float(returns[i, t]) for i, n in enumerate(lengths) for t in range(n)]
    rs = [float(returns[i, t] - values[i, t]) for i, n in enumerate(lengths) for t in range(n)]
    expected = 1 - statistics.pvariance(rs) / statistics.pvariance(ys)
    got = pm.explained_variance(with_garbage(values, mask), with_garbage(returns, mask), mask)
    torch.testing.assert_close(got, scalar(expected), **TOL)
    assert pm.explained_variance(returns, returns, mask).item() == pytest.approx(1.0)
    assert math.isnan(pm.explained_variance(values, torch.ones_like(returns), mask).item())  # nothing to explain


def test_running_moments_match_statistics_over_batches():
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, generator=gen, dtype=torch.float64) * 3 + 1 for n in (1, 5, 16, 2)]
    moments = RunningMoments()
    for b in batches:
        moments.update(b)
    flat = [float(x) for b in batches for x in b]
    assert moments.count == len(flat)
    assert moments.mean == pytest.approx(statistics.mean(flat))
    assert moments.std == pytest.approx(statistics.stdev(flat))


@pytest.mark.parametrize("mode", ["running", "initial"])
def test_score_normalizer_makes_the_scale_irrelevant(mode):
    """Scores ×1000 normalise to the same values: β then means the same for any reward scale."""
    gen = torch.Generator().manual_seed(1)
    batches = [torch.zeros(8, dtype=torch.float64)]  # a first rollout where every score is 0 (sparse reward)
    batches += [(torch.rand(8, generator=gen, dtype=torch.float64) < 0.2).double() * 0.01 for _ in range(4)]
    small, large = ScoreNormalizer(mode), ScoreNormalizer(mode)
    for b in batches:
        torch.testing.assert_close(small(b), large(1000 * b), **TOL)
    flat = torch.cat(batches)
    if mode == "running":  # divided by the std of everything seen so far, sign and zero kept
        torch.testing.assert_close(small(batches[-1], update=False), batches[-1] / flat.std(), **TOL)
    else:  # fitted once, on the first rollout whose scores vary: mean 0, std 1 there
        first = next(b for b in batches if b.std() > 0)
        fitted = small(first, update=False)
        assert fitted.mean().item() == pytest.approx(0.0, abs=1e-9) and fitted.std().item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "field,value",
    [
        ("reward_normalization", "whiten"),
        ("critic_warmup_rollouts", -1),
        ("dual_clip", 1.0),
        ("cliprange_high", 0.0),
        ("loss_aggregation", "sum"),
        ("lam_critic", 1.5),
        ("lam_actor_length_alpha", 0.0),
        ("value_learning_rate", 0.0),
        ("value_huber_delta", 0.0),
        ("value_huber_delta", -1.0),
    ],
)
def test_trick_fields_validated_by_name(tmp_path, field, value):
    with pytest.raises(ValueError, match=f"PPOConfig.{field}="):
        PPOConfig(output_dir=str(tmp_path), **{field: value})


def test_tricks_run_through_the_trainer_and_critic_warmup_leaves_the_policy(tiny_model_path, tmp_path):
    """Every switch on at once trains, logs the critic's explained variance and the score gain; during critic
    warmup no policy weight moves (not even the trunk the default value head reads) while the value head does."""
    from tests.ppo_helpers import DigitReward, fast_args, logged, prompts_dataset
    from trl_ppo_plus import PPOTrainer

    tricks = dict(
        critic_warmup_rollouts=2,  # the value head starts at 0: the trunk gets its first gradient on rollout 2
        dual_clip=3.0,
        cliprange_high=0.28,
        loss_aggregation="seq-mean-token-sum",
        lam_critic=1.0,
        lam_actor_length_alpha=0.5,
        reward_normalization="initial",
    )
    trainer = PPOTrainer(
        model=tiny_model_path,
        reward_funcs=DigitReward(tiny_model_path),
        args=fast_args(tmp_path, max_steps=2, **tricks),
        train_dataset=prompts_dataset(16),
    )
    critic_ids = {id(p) for p in trainer.critic.parameters()}
    policy = {n: p.detach().clone() for n, p in trainer._policy.named_parameters() if id(p) not in critic_ids}
    lm_head = policy["lm_head.weight"]
    value_head = trainer.critic.head.summary.weight.detach().clone()
    trainer.train()
    moved = [n for n, p in trainer._policy.named_parameters() if n in policy and not torch.equal(p, policy[n])]
    assert moved == []  # warmup: neither the policy loss nor the value loss moves the policy
    assert not torch.equal(trainer.critic.head.summary.weight, value_head)
    assert len(logged(trainer, "val/explained_variance")) == 2
    assert logged(trainer, "objective/score_gain")[0] > 0

    trainer.args.max_steps = 4  # past the warmup, the policy moves
    trainer.train()
    assert not torch.equal(trainer._policy.lm_head.weight, lm_head)


@pytest.mark.parametrize("mode", ["running", "initial"])
@pytest.mark.parametrize("value,n", [(0.1, 3), (0.7, 12), (0.3, 16)])
def test_score_normalizer_equal_scores_keep_gain_one(mode, value, n):
    """Equal float64 scores have variance exactly 0: a mean rounded off in the last bit must not give them a
    tiny std and a gain near 1e16 (the first rollout of a sparse reward often scores every completion the same)."""
    norm = ScoreNormalizer(mode)
    for _ in range(3):
        scores = torch.full((n,), value, dtype=torch.float64)
        torch.testing.assert_close(norm(scores), scores, **TOL)
    assert norm.gain == 1.0 and norm.bias == 0.0


@pytest.mark.parametrize("layout", ["shared_trunk", "value_adapter"])
def test_value_learning_rate_moves_the_critic_at_its_own_rate(tiny_model_path, tmp_path, layout):
    """Adam's first step moves each parameter with a gradient by its group's lr (m/√v = ±1): the critic's own
    parameters by `value_learning_rate`, everything else (a shared trunk included) by `learning_rate`. Every
    trainable parameter sits in exactly one group."""
    from tests.ppo_helpers import DigitReward, fast_args, prompts_dataset
    from trl_ppo_plus import PPOTrainer
    from trl_ppo_plus.modeling import load_policy_and_value
    from trl_ppo_plus.run_info import run_info_from_trainer
    from trl_ppo_plus.value import critic_parameters

    lr, value_lr = 1e-3, 2e-2
    model = tiny_model_path if layout == "shared_trunk" else load_policy_and_value(tiny_model_path, lora_r=4)
    trainer = PPOTrainer(
        model=model,
        reward_funcs=DigitReward(tiny_model_path),
        args=fast_args(
            tmp_path,
            max_steps=1,
            learning_rate=lr,
            value_learning_rate=value_lr,
            weight_decay=0.0,
            lr_scheduler_type="constant",
            adam_epsilon=1e-12,
        ),  # fmt: skip
        train_dataset=prompts_dataset(16),
    )
    optimizer = trainer.create_optimizer()
    critic_ids = {id(p) for p in critic_parameters(trainer._policy, trainer.critic)}
    named = {id(p): n for n, p in trainer._policy.named_parameters() if p.requires_grad}
    if layout == "value_adapter":
        assert any(".value." in named[i] for i in critic_ids)  # the value adapter's LoRA weights
    grouped = [(id(p), g["lr"]) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(i for i, _ in grouped) == sorted(named)  # each trainable parameter exactly once
    assert all((rate == value_lr) == (i in critic_ids) for i, rate in grouped)

    before = {i: p.detach().clone() for i, p in ((id(p), p) for p in trainer._policy.parameters()) if i in named}
    trainer.train()
    steps = {i: (p.detach() - before[i]).abs().max().item() for i, p in ((id(p), p) for p in trainer._policy.parameters()) if i in named}  # fmt: skip
    critic_step = max(steps[i] for i in critic_ids)
    policy_step = max(s for i, s in steps.items() if i not in critic_ids)
    assert critic_step == pytest.approx(value_lr, rel=1e-3)
    assert policy_step == pytest.approx(lr, rel=1e-3)
    card = run_info_from_trainer(trainer).ppo_config  # the card's table: learning_rate alone would misstate it
    assert (card["learning_rate"], card["value_learning_rate"]) == (lr, value_lr)


def test_value_learning_rate_with_a_given_optimizer_is_refused_before_loading(tmp_path):
    from trl_ppo_plus import PPOTrainer

    args = PPOConfig(output_dir=str(tmp_path), value_learning_rate=1e-4)
    with pytest.raises(ValueError, match=r"PPOConfig.value_learning_rate=0.0001 .*optimizers"):
        PPOTrainer(model="no/such-model", reward_funcs=[len], args=args, optimizers=(object(), None))


def _bert_with_a_value_module(tmp_path) -> str:
    """A tiny BERT decoder: its attention has a linear literally named `value` (`attention.self.value`)."""
    from transformers import BertConfig, BertLMHeadModel

    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        is_decoder=True,
    )
    BertLMHeadModel(config).save_pretrained(tmp_path / "bert")
    return str(tmp_path / "bert")


@pytest.mark.parametrize("case", ["module_named_value", "embedding_lora_and_modules_to_save"])
def test_critic_parameters_are_the_value_adapters_whatever_the_module_names(tiny_model_path, tmp_path, case):
    """`critic_parameters` on a policy+value PEFT model is exactly what stays trainable once the policy adapter is
    frozen: a policy LoRA on a module named `value` is not the critic's; the value adapter's embedding LoRA
    (`lora_embedding_A.value`) and its `modules_to_save` copies are."""
    from peft import LoraConfig

    from trl_ppo_plus.modeling import load_policy_and_value
    from trl_ppo_plus.value import critic_parameters

    if case == "module_named_value":
        model = load_policy_and_value(_bert_with_a_value_module(tmp_path), quantization=None, lora_r=2)
    else:
        lora = LoraConfig(r=2, target_modules=["q_proj", "embed_tokens"], modules_to_save=["norm"], task_type="CAUSAL_LM")  # fmt: skip
        model = load_policy_and_value(tiny_model_path, quantization=None, lora=lora)
    names = {id(p): n for n, p in model.named_parameters()}
    critic = sorted(names[id(p)] for p in critic_parameters(model, model.ppo_critic))
    model.set_requires_grad("policy", False)
    expected = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    if case == "module_named_value":
        assert any(".self.value.lora_A.policy." in n for n in names.values())  # the policy's LoRA on `value`
    assert critic == expected


@pytest.mark.parametrize("saved, resumed", [(None, 1e-2), (1e-2, None)])
def test_resume_with_value_learning_rate_switched_names_the_field(tiny_model_path, tmp_path, saved, resumed):
    """The critic's own optimizer groups exist only with `value_learning_rate`: a checkpoint saved with it on (off)
    cannot resume with it off (on), and the error says why instead of torch's bare group count."""
    from tests.ppo_helpers import DigitReward, fast_args, prompts_dataset
    from trl_ppo_plus import PPOTrainer

    def trainer(value_learning_rate):
        args = fast_args(tmp_path, max_steps=1, save_strategy="steps", save_steps=1, value_learning_rate=value_learning_rate)  # fmt: skip
        return PPOTrainer(model=tiny_model_path, reward_funcs=DigitReward(tiny_model_path), args=args, train_dataset=prompts_dataset(8))  # fmt: skip

    trainer(saved).train()
    with pytest.raises(ValueError, match=rf"value_learning_rate.*{resumed}"):
        trainer(resumed).train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))


def test_value_learning_rate_splits_each_new_optimizer_once(tiny_model_path, tmp_path):
    """Trainer's `create_optimizer` hands back the optimizer it built: no second split. A new one (after
    `trainer.optimizer = None`) gets the critic's groups too."""
    from tests.ppo_helpers import DigitReward, fast_args, prompts_dataset
    from trl_ppo_plus import PPOTrainer

    args = fast_args(tmp_path, learning_rate=1e-3, value_learning_rate=1e-2)
    trainer = PPOTrainer(model=tiny_model_path, reward_funcs=DigitReward(tiny_model_path), args=args, train_dataset=prompts_dataset(8))  # fmt: skip
    first = trainer.create_optimizer()
    rates = [g["lr"] for g in first.param_groups]
    assert trainer.create_optimizer() is first and [g["lr"] for g in first.param_groups] == rates
    assert sorted(set(rates)) == [1e-3, 1e-2]
    trainer.optimizer = None
    assert [g["lr"] for g in trainer.create_optimizer().param_groups] == rates


def test_value_learning_rate_refuses_an_optimizer_without_the_critic(tiny_model_path, tmp_path):
    """An optimizer built elsewhere (a DeepSpeed config's, say) that holds none of the critic's parameters: the
    critic's rate cannot apply, and saying so beats training the critic at `learning_rate` silently."""
    from tests.ppo_helpers import DigitReward, fast_args, prompts_dataset
    from trl_ppo_plus import PPOTrainer
    from trl_ppo_plus.value import critic_parameters

    trainer = PPOTrainer(
        model=tiny_model_path,
        reward_funcs=DigitReward(tiny_model_path),
        args=fast_args(tmp_path, max_steps=1, value_learning_rate=1e-2),
        train_dataset=prompts_dataset(8),
    )
    critic_ids = {id(p) for p in critic_parameters(trainer._policy, trainer.critic)}
    policy_only = [p for p in trainer._policy.parameters() if p.requires_grad and id(p) not in critic_ids]
    trainer.optimizer = torch.optim.AdamW(policy_only, lr=1e-3)
    with pytest.raises(ValueError, match=r"value_learning_rate=0.01: the optimizer holds none of the critic"):
        trainer.create_optimizer()


def test_every_trick_in_the_readme_glossary_reaches_the_model_card():
    """A card that omits a switch misstates the recipe it trained with (e.g. a Huber critic read as a squared one)."""
    import re
    from pathlib import Path

    from trl_ppo_plus.run_info import _CARD_FIELDS

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    glossary = readme[readme.index("## PPO tricks (config glossary)") : readme.index("## Architecture map")]
    tricks = re.findall(r"^\| `(\w+)` \|", glossary, re.MULTILINE)
    assert "value_huber_delta" in tricks and len(tricks) >= 9
    assert [t for t in tricks if t not in _CARD_FIELDS] == []
    assert all(hasattr(PPOConfig, t) for t in tricks)  # the glossary names real fields

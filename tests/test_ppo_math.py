"""Reference checks for trl_ppo_plus.ppo_math.

Each vectorised function is compared with a slow, obviously correct reference written with Python loops over rows and
tokens, on float64 tensors with ragged right-padded masks (including a row with one valid token and a row with none).
"""

import math

import pytest
import torch

from trl_ppo_plus import ppo_math as pm


TOL = {"atol": 1e-6, "rtol": 1e-6}
# (seed, B, T): shapes small enough for the Python loops, varied enough to catch indexing bugs.
CASES = [(0, 4, 7), (1, 6, 1), (2, 5, 13), (3, 9, 5)]


def ragged_lengths(B, T, gen, allow_empty=True):
    """Row lengths in [0, T]: row 0 is full, row 1 has one token, row 2 (if any) is empty, the rest random."""
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    lengths[0] = T
    if B > 1:
        lengths[1] = 1
    if B > 2 and allow_empty:
        lengths[2] = 0
    return lengths.tolist()


def make_mask(lengths, T, as_bool=False):
    mask = torch.zeros(len(lengths), T, dtype=torch.float64)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1.0
    return mask.bool() if as_bool else mask


def randn(B, T, gen):
    return torch.randn(B, T, generator=gen, dtype=torch.float64)


def with_garbage(x, mask):
    """`x` with NaN / +inf / -inf in the padding positions."""
    x = x.clone()
    garbage = torch.tensor([math.nan, math.inf, -math.inf], dtype=x.dtype)
    pad = ~mask.bool()
    idx = torch.arange(int(pad.sum())) % 3
    x[pad] = garbage[idx]
    return x


def case_data(seed, B, T, allow_empty=True, as_bool=False):
    gen = torch.Generator().manual_seed(seed)
    lengths = ragged_lengths(B, T, gen, allow_empty)
    return gen, lengths, make_mask(lengths, T, as_bool)


# ---------------------------------------------------------------- references (slow, explicit loops)


def ref_valid(x, lengths):
    return [float(x[i, t]) for i, n in enumerate(lengths) for t in range(n)]


def ref_mean(vals):
    return sum(vals) / len(vals) if vals else 0.0


def ref_var(vals, unbiased=True):
    n = len(vals)
    mu = ref_mean(vals)
    ss = sum((v - mu) ** 2 for v in vals)
    if unbiased:
        return ss / (n - 1) if n > 1 else 0.0
    return ss / n


def ref_kl(lp, rlp, estimator):
    log_r = rlp - lp
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return 0.5 * log_r**2
    return (math.exp(log_r) - 1) - log_r


def ref_gae(rewards, values, lengths, gamma, lam):
    B, T = rewards.shape
    adv = torch.zeros(B, T, dtype=torch.float64)
    ret = torch.zeros(B, T, dtype=torch.float64)
    for i, n in enumerate(lengths):
        next_adv = 0.0
        for t in reversed(range(n)):
            next_value = float(values[i, t + 1]) if t + 1 < n else 0.0
            delta = float(rewards[i, t]) + gamma * next_value - float(values[i, t])
            next_adv = delta + gamma * lam * next_adv
            adv[i, t] = next_adv
            ret[i, t] = next_adv + float(values[i, t])
    return adv, ret


def scalar(x):
    return torch.tensor(x, dtype=torch.float64)


# ---------------------------------------------------------------- masked statistics


@pytest.mark.parametrize("seed,B,T", CASES)
@pytest.mark.parametrize("as_bool", [False, True])
def test_masked_mean_matches_reference(seed, B, T, as_bool):
    gen, lengths, mask = case_data(seed, B, T, as_bool=as_bool)
    x = randn(B, T, gen)
    xg = with_garbage(x, mask)
    torch.testing.assert_close(pm.masked_mean(xg, mask), scalar(ref_mean(ref_valid(x, lengths))), **TOL)
    rows = torch.tensor([ref_mean([float(x[i, t]) for t in range(n)]) for i, n in enumerate(lengths)])
    torch.testing.assert_close(pm.masked_mean(xg, mask, dim=1), rows.double(), **TOL)  # empty row -> 0
    cols = torch.tensor([ref_mean([float(x[i, t]) for i, n in enumerate(lengths) if t < n]) for t in range(T)])
    torch.testing.assert_close(pm.masked_mean(xg, mask, dim=0), cols.double(), **TOL)


def test_masked_mean_empty_mask_is_zero():
    x = torch.full((2, 3), math.nan, dtype=torch.float64)
    assert pm.masked_mean(x, torch.zeros(2, 3)).item() == 0.0


@pytest.mark.parametrize("seed,B,T", CASES)
@pytest.mark.parametrize("unbiased", [True, False])
def test_masked_var_matches_reference(seed, B, T, unbiased):
    gen, lengths, mask = case_data(seed, B, T)
    x = randn(B, T, gen) * 3 + 1
    expected = scalar(ref_var(ref_valid(x, lengths), unbiased))
    torch.testing.assert_close(pm.masked_var(with_garbage(x, mask), mask, unbiased=unbiased), expected, **TOL)


def test_masked_var_single_and_empty():
    x = torch.tensor([[5.0, math.nan]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert pm.masked_var(x, mask, unbiased=True).item() == 0.0  # n == 1: documented as 0, not NaN
    assert pm.masked_var(x, mask, unbiased=False).item() == 0.0
    with pytest.raises(ValueError, match="no element"):
        pm.masked_var(x, torch.zeros_like(mask))
    with pytest.raises(ValueError):
        pm.masked_whiten(x, torch.zeros_like(mask))


@pytest.mark.parametrize("seed,B,T", CASES)
@pytest.mark.parametrize("shift_mean", [True, False])
def test_masked_whiten_matches_reference(seed, B, T, shift_mean):
    gen, lengths, mask = case_data(seed, B, T)
    x = randn(B, T, gen) * 4 - 2
    vals = ref_valid(x, lengths)
    mu, var = ref_mean(vals), ref_var(vals, unbiased=True)
    expected = torch.zeros(B, T, dtype=torch.float64)
    for i, n in enumerate(lengths):
        for t in range(n):
            w = (float(x[i, t]) - mu) / math.sqrt(var + 1e-8)
            expected[i, t] = w if shift_mean else w + mu
    out = pm.masked_whiten(with_garbage(x, mask), mask, shift_mean=shift_mean)
    torch.testing.assert_close(out, expected, **TOL)
    if shift_mean and len(vals) > 1:
        torch.testing.assert_close(pm.masked_mean(out, mask), scalar(0.0), atol=1e-6, rtol=0)
        torch.testing.assert_close(pm.masked_var(out, mask), scalar(1.0), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- KL


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
@pytest.mark.parametrize("seed,B,T", CASES)
def test_kl_estimate_matches_definition(estimator, seed, B, T):
    gen = torch.Generator().manual_seed(seed)
    lp, rlp = randn(B, T, gen) - 2, randn(B, T, gen) - 2
    expected = torch.tensor(
        [[ref_kl(float(lp[i, t]), float(rlp[i, t]), estimator) for t in range(T)] for i in range(B)]
    )
    out = pm.kl_estimate(lp, rlp, estimator)
    torch.testing.assert_close(out, expected.double(), **TOL)
    if estimator in ("k2", "k3"):
        assert (out >= 0).all()


def test_k3_nonnegative_and_finite_for_extreme_ratios():
    lp = torch.tensor([0.0, -100.0, -1e-3, -50.0, 0.0], dtype=torch.float64)
    rlp = torch.tensor([-100.0, 0.0, -1e-3 + 1e-9, -50.0, -1e-12], dtype=torch.float64)
    k3 = pm.kl_estimate(lp, rlp, "k3")
    assert torch.isfinite(k3).all() and (k3 >= 0).all()
    c = 20.0  # documented clamp: log r in [-20, 20]
    torch.testing.assert_close(k3[:2], torch.tensor([math.expm1(-c) + c, math.expm1(c) - c], dtype=torch.float64))


def test_unknown_estimator_names_it():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="k4"):
        pm.kl_estimate(x, x, "k4")
    with pytest.raises(ValueError, match="abs"):
        pm.kl_penalty_loss(x, x, torch.ones(2, 3), "abs")


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
@pytest.mark.parametrize("seed,B,T", CASES)
def test_kl_penalty_loss_matches_reference_and_no_leak(estimator, seed, B, T):
    gen, lengths, mask = case_data(seed, B, T)
    lp, rlp = randn(B, T, gen) - 2, randn(B, T, gen) - 2
    vals = [ref_kl(float(lp[i, t]), float(rlp[i, t]), estimator) for i, n in enumerate(lengths) for t in range(n)]
    lpg = with_garbage(lp, mask).requires_grad_()
    loss = pm.kl_penalty_loss(lpg, with_garbage(rlp, mask), mask, estimator)
    torch.testing.assert_close(loss, scalar(ref_mean(vals)), **TOL)
    loss.backward()
    assert torch.isfinite(lpg.grad).all()
    assert (lpg.grad[~mask.bool()] == 0).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_kl_penalty_loss_expected_gradients(seed):
    """Exact expectation over y ~ pi on one categorical step: k1 -> 0, k2 -> grad KL(pi||ref), k3 -> grad KL(ref||pi)."""
    gen = torch.Generator().manual_seed(seed)
    V = 6
    logits0 = torch.randn(V, generator=gen, dtype=torch.float64)
    ref = torch.log_softmax(torch.randn(V, generator=gen, dtype=torch.float64), -1)

    def expected_grad(estimator):
        logits = logits0.clone().requires_grad_()
        logp = torch.log_softmax(logits, -1)
        weights = logp.exp().detach()  # P(y) under pi: sampled tokens are fixed, not differentiated
        # kl_penalty_loss on a "batch" of all V tokens, each weighted by its probability (sum of P(y) * loss_y).
        per_token = torch.stack(
            [pm.kl_penalty_loss(logp[y : y + 1], ref[y : y + 1], torch.ones(1), estimator) for y in range(V)]
        )
        (weights * per_token).sum().backward()
        return logits.grad

    def true_grad(reverse):
        logits = logits0.clone().requires_grad_()
        logp = torch.log_softmax(logits, -1)
        kl = (logp.exp() * (logp - ref)).sum() if reverse else (ref.exp() * (ref - logp)).sum()
        kl.backward()
        return logits.grad

    torch.testing.assert_close(expected_grad("k1"), torch.zeros(V, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(expected_grad("k2"), true_grad(reverse=True), **TOL)
    torch.testing.assert_close(expected_grad("k3"), true_grad(reverse=False), **TOL)


# ---------------------------------------------------------------- rewards and GAE


@pytest.mark.parametrize("seed,B,T", CASES)
@pytest.mark.parametrize("kl_coef", [0.05, 0.3])
def test_per_token_rewards_matches_reference(seed, B, T, kl_coef):
    gen, lengths, mask = case_data(seed, B, T)
    kl = randn(B, T, gen)
    scores = torch.randn(B, generator=gen, dtype=torch.float64)
    exp_rewards = torch.zeros(B, T, dtype=torch.float64)
    exp_nsr = torch.zeros(B, T, dtype=torch.float64)
    for i, n in enumerate(lengths):
        for t in range(n):
            exp_nsr[i, t] = -kl_coef * float(kl[i, t])
            exp_rewards[i, t] = exp_nsr[i, t] + (float(scores[i]) if t == n - 1 else 0.0)
    rewards, nsr = pm.per_token_rewards(scores, with_garbage(kl, mask), mask, kl_coef)
    torch.testing.assert_close(nsr, exp_nsr, **TOL)
    torch.testing.assert_close(rewards, exp_rewards, **TOL)
    # A tensor coefficient works the same way.
    rewards_t, _ = pm.per_token_rewards(scores, kl, mask.bool(), torch.tensor(kl_coef, dtype=torch.float64))
    torch.testing.assert_close(rewards_t, exp_rewards, **TOL)


def test_per_token_rewards_empty_row_drops_score():
    mask = torch.tensor([[0.0, 0.0], [1.0, 0.0]])  # row 0 has no valid token
    scores = torch.tensor([math.nan, 7.0])  # the empty row's score is dropped, even when it is NaN
    kl = torch.tensor([[math.inf, math.nan], [1.0, math.nan]])
    rewards, nsr = pm.per_token_rewards(scores, kl, mask, 0.1)
    torch.testing.assert_close(rewards, torch.tensor([[0.0, 0.0], [6.9, 0.0]]))
    torch.testing.assert_close(nsr, torch.tensor([[0.0, 0.0], [-0.1, 0.0]]))


@pytest.mark.parametrize("seed,B,T", CASES)
@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.99, 1.0), (0.9, 0.0), (1.0, 1.0)])
def test_gae_matches_reference(seed, B, T, gamma, lam):
    gen, lengths, mask = case_data(seed, B, T)
    rewards, values = randn(B, T, gen), randn(B, T, gen)
    exp_adv, exp_ret = ref_gae(rewards, values, lengths, gamma, lam)
    adv, ret = pm.gae_advantages(with_garbage(rewards, mask), with_garbage(values, mask), mask, gamma, lam)
    torch.testing.assert_close(adv, exp_adv, **TOL)
    torch.testing.assert_close(ret, exp_ret, **TOL)


def test_gae_lambda_one_gamma_one_is_return_to_go_minus_value():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 99.0]], dtype=torch.float64)
    values = torch.tensor([[0.5, 0.25, 0.125, 99.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0]])
    adv, ret = pm.gae_advantages(rewards, values, mask, 1.0, 1.0)
    torch.testing.assert_close(ret, torch.tensor([[6.0, 5.0, 3.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(adv, torch.tensor([[5.5, 4.75, 2.875, 0.0]], dtype=torch.float64))


def test_gae_skips_interior_gaps_issue_example():
    # Issue 17, item 1: tokens 2-3 are environment output inside the completion. They are skipped, not terminal.
    mask = torch.tensor([[1, 1, 0, 0, 1]])
    values = torch.tensor([[0.5, 0.5, 0.7, 0.7, 0.8]], dtype=torch.float64)
    rewards = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    adv, ret = pm.gae_advantages(rewards, values, mask, 1.0, 0.95)
    # Agent tokens only: V = [.5, .5, .8], r = [0, 0, 1] -> A = [0.4655, 0.49, 0.2] (issue: 0.466; 0.374 when the gap is terminal)
    torch.testing.assert_close(adv, torch.tensor([[0.4655, 0.49, 0.0, 0.0, 0.2]], dtype=torch.float64))
    torch.testing.assert_close(ret, torch.tensor([[0.9655, 0.99, 0.0, 0.0, 1.0]], dtype=torch.float64))


@pytest.mark.parametrize("seed", range(6))
def test_gae_with_interior_gaps_equals_gae_on_compacted_agent_tokens(seed):
    # Slow reference: keep only each row's agent tokens, run plain GAE on them, scatter the results back.
    gen = torch.Generator().manual_seed(seed)
    B, T, gamma, lam = 5, 9, 0.97, 0.9
    mask = (torch.rand(B, T, generator=gen) < 0.6).long()
    mask[0] = 0  # an empty row
    mask[1] = torch.tensor([1, 0, 0, 1, 1, 0, 1, 0, 0])  # gaps inside and trailing padding
    rewards, values = randn(B, T, gen), randn(B, T, gen)
    exp_adv = torch.zeros(B, T, dtype=torch.float64)
    exp_ret = torch.zeros(B, T, dtype=torch.float64)
    for i in range(B):
        keep = mask[i].nonzero().flatten()
        n = len(keep)
        if n == 0:
            continue
        adv_i, ret_i = ref_gae(rewards[i : i + 1, keep], values[i : i + 1, keep], [n], gamma, lam)
        exp_adv[i, keep], exp_ret[i, keep] = adv_i[0], ret_i[0]
    adv, ret = pm.gae_advantages(with_garbage(rewards, mask), with_garbage(values, mask), mask, gamma, lam)
    torch.testing.assert_close(adv, exp_adv, **TOL)
    torch.testing.assert_close(ret, exp_ret, **TOL)


# ---------------------------------------------------------------- losses


def ref_policy_loss(lp, olp, adv, lengths, low, high):
    losses, clipped, kls, ratios = [], [], [], []
    for i, n in enumerate(lengths):
        for t in range(n):
            ratio = math.exp(float(lp[i, t]) - float(olp[i, t]))
            a = float(adv[i, t])
            l1, l2 = -a * ratio, -a * min(max(ratio, 1 - low), 1 + high)
            losses.append(max(l1, l2))
            clipped.append(1.0 if l2 > l1 else 0.0)
            kls.append(0.5 * (float(lp[i, t]) - float(olp[i, t])) ** 2)
            ratios.append(ratio)
    info = {"clipfrac": ref_mean(clipped), "approxkl": ref_mean(kls), "ratio": ref_mean(ratios)}
    info["ratio_var"] = ref_var(ratios, unbiased=True) if ratios else 0.0
    return ref_mean(losses), info


@pytest.mark.parametrize("seed,B,T", CASES)
@pytest.mark.parametrize("clip", [(0.2, None, None), (0.1, None, None), (0.2, 0.2, 0.28)])
def test_policy_loss_matches_reference(seed, B, T, clip):
    cliprange, low, high = clip
    gen, lengths, mask = case_data(seed, B, T)
    olp = randn(B, T, gen) - 2
    lp = olp + 0.3 * randn(B, T, gen)  # ratios spread around 1, many clipped
    adv = randn(B, T, gen)
    exp_loss, exp_info = ref_policy_loss(lp, olp, adv, lengths, low or cliprange, high or cliprange)
    lpg = with_garbage(lp, mask).requires_grad_()
    loss, info = pm.policy_loss(
        lpg, with_garbage(olp, mask), with_garbage(adv, mask), mask, cliprange, cliprange_low=low, cliprange_high=high
    )
    torch.testing.assert_close(loss, scalar(exp_loss), **TOL)
    for key, value in exp_info.items():
        torch.testing.assert_close(info[key], scalar(value), **TOL, msg=key)
        assert not info[key].requires_grad
    loss.backward()
    assert torch.isfinite(lpg.grad).all() and (lpg.grad[~mask.bool()] == 0).all()


def test_policy_loss_ratio_one_is_minus_mean_advantage():
    gen, lengths, mask = case_data(5, 6, 8)
    lp, adv = randn(6, 8, gen), randn(6, 8, gen)
    loss, info = pm.policy_loss(lp, lp.clone(), adv, mask, 0.2)
    torch.testing.assert_close(loss, -pm.masked_mean(adv, mask), **TOL)
    assert info["clipfrac"].item() == 0.0 and info["approxkl"].item() == 0.0
    assert info["ratio"].item() == 1.0 and info["ratio_var"].item() == 0.0


def test_policy_loss_gradient_zero_where_clipped_in_advantage_direction():
    old = torch.zeros(1, 6, dtype=torch.float64)
    # ratio 1.5 with A > 0 and ratio 0.5 with A < 0: clipped in the direction of A, no gradient.
    # ratio 0.5 with A > 0 and ratio 1.5 with A < 0: clipped against A, the gradient flows (pessimistic bound).
    # ratio 1.05 inside the clip range: gradient -A * ratio / n.  Last token is padding.
    lp = torch.log(torch.tensor([[1.5, 0.5, 0.5, 1.5, 1.05, 1.0]], dtype=torch.float64)).requires_grad_()
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0, 2.0, 5.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    loss, info = pm.policy_loss(lp, old, adv, mask, 0.2)
    loss.backward()
    n = 5
    expected = torch.tensor([[0.0, 0.0, -1.0 * 0.5 / n, 1.0 * 1.5 / n, -2.0 * 1.05 / n, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(lp.grad, expected, **TOL)
    torch.testing.assert_close(info["clipfrac"], scalar(2 / 5))


def test_policy_loss_empty_mask_is_zero_and_finite():
    lp = torch.full((2, 3), math.nan, requires_grad=True)
    loss, info = pm.policy_loss(lp, torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), 0.2)
    loss.backward()
    assert loss.item() == 0.0 and all(torch.isfinite(v) for v in info.values())
    assert (lp.grad == 0).all()


def ref_value_loss(v, ov, ret, lengths, eps, clip, huber_delta=None):
    def rho(e):  # 0.5 e^2, or Huber's: quadratic up to delta, linear beyond
        if huber_delta is None or abs(e) <= huber_delta:
            return 0.5 * e * e
        return huber_delta * (abs(e) - 0.5 * huber_delta)

    losses, clipped, vs = [], [], []
    for i, n in enumerate(lengths):
        for t in range(n):
            vt, ot, rt = float(v[i, t]), float(ov[i, t]), float(ret[i, t])
            unclipped = rho(vt - rt)
            vc = ot + min(max(vt - ot, -eps), eps)
            clipped_loss = rho(vc - rt)
            losses.append(max(unclipped, clipped_loss) if clip else unclipped)
            clipped.append(1.0 if (clip and clipped_loss > unclipped) else 0.0)
            vs.append(vt)
    return ref_mean(losses), {"vf_clipfrac": ref_mean(clipped), "value_mean": ref_mean(vs)}


@pytest.mark.parametrize("seed,B,T", CASES)
@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("huber_delta", [None, 0.5])
def test_value_loss_matches_reference(seed, B, T, clip, huber_delta):
    gen, lengths, mask = case_data(seed, B, T)
    ov = randn(B, T, gen)
    v = ov + 0.5 * randn(B, T, gen)
    ret = randn(B, T, gen)
    exp_loss, exp_info = ref_value_loss(v, ov, ret, lengths, 0.2, clip, huber_delta)
    vg = with_garbage(v, mask).requires_grad_()
    loss, info = pm.value_loss(
        vg, with_garbage(ov, mask), with_garbage(ret, mask), mask, 0.2, clip=clip, huber_delta=huber_delta
    )
    torch.testing.assert_close(loss, scalar(exp_loss), **TOL)
    for key, value in exp_info.items():
        torch.testing.assert_close(info[key], scalar(value), **TOL, msg=key)
        assert not info[key].requires_grad
    loss.backward()
    assert torch.isfinite(vg.grad).all() and (vg.grad[~mask.bool()] == 0).all()


def test_huber_value_loss_caps_the_pull_of_one_large_return():
    """One return of 12 among zeros: the squared error's gradient on the shared prediction grows with the return, the
    Huber loss's stops at δ per token, so the zeros outweigh it (what keeps a critic from overshooting everywhere)."""
    mask = torch.ones(1, 16)
    returns = torch.zeros(1, 16)
    returns[0, 0] = 12.0
    grads = {}
    for delta in (None, 1.0):
        v = torch.full((1, 16), 0.5, requires_grad=True)  # the critic's prediction after one step up
        loss, _ = pm.value_loss(v, v.detach(), returns, mask, 0.2, clip=False, huber_delta=delta)
        loss.backward()
        grads[delta] = v.grad.sum().item()  # the gradient on a prediction every token shares (a bias)
    assert grads[None] == pytest.approx((15 * 0.5 + (0.5 - 12.0)) / 16)  # < 0: keeps pushing the value up
    assert grads[1.0] == pytest.approx((15 * 0.5 - 1.0) / 16)  # > 0: pulls it back down
    assert grads[None] < 0 < grads[1.0]


# ---------------------------------------------------------------- entropy


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entropy_matches_reference(seed):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 4, 11, generator=gen, dtype=torch.float64) * 3
    expected = torch.zeros(3, 4, dtype=torch.float64)
    for i in range(3):
        for t in range(4):
            zs = [float(z) for z in logits[i, t]]
            zmax = max(zs)
            total = sum(math.exp(z - zmax) for z in zs)
            ps = [math.exp(z - zmax) / total for z in zs]
            expected[i, t] = -sum(p * math.log(p) for p in ps if p > 0)
    torch.testing.assert_close(pm.entropy_from_logits(logits), expected, **TOL)


def test_entropy_stable_for_huge_and_masked_logits():
    logits = torch.tensor([[1e4, 1e4, -1e4], [0.0, -math.inf, 0.0], [5.0, 5.0, 5.0]], dtype=torch.float64)
    logits.requires_grad_()
    h = pm.entropy_from_logits(logits)
    torch.testing.assert_close(h, torch.tensor([math.log(2), math.log(2), math.log(3)], dtype=torch.float64))
    h.sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert pm.entropy_from_logits(torch.randn(2, 3, 5, 7)).shape == (2, 3, 5)


def test_entropy_chunked_equals_unchunked():
    logits = torch.randn(3, 5, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for chunk_size in (1, 4, 15, 100):
        torch.testing.assert_close(
            pm.entropy_from_logits(logits, chunk_size=chunk_size), pm.entropy_from_logits(logits)
        )

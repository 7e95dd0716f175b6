"""Pure tensor math of PPO for language models: masked statistics, KL estimators, per-token rewards, GAE, losses.

No trainer state, no distributed code, torch only. Every function works on right-padded, ragged batches:

- `B` is the batch (rows), `T` the completion length, `V` the vocabulary.
- `mask` is a `(B, T)` 0/1 float or bool tensor marking the valid completion tokens of each row. Positions where
  `mask` is 0 are padding. They never influence a result, even if they hold NaN or inf, unless a docstring says
  otherwise. Outputs of shape `(B, T)` are 0 at padding positions.

Conventions for rows with no valid token: `masked_mean` divides by `max(n, 1)`, so an empty selection averages to 0
instead of NaN (a minibatch of empty completions gives a zero loss and zero gradient). `masked_var` and
`masked_whiten` raise `ValueError` on an empty mask, because whitening nothing is a bug upstream.
"""

import torch
from torch import Tensor


__all__ = [
    "aggregate_loss",
    "dual_clip_loss",
    "explained_variance",
    "length_adaptive_lam",
    "entropy_from_logits",
    "gae_advantages",
    "kl_estimate",
    "kl_penalty_loss",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "per_token_rewards",
    "policy_loss",
    "value_loss",
]

KL_ESTIMATORS = ("k1", "k2", "k3")


def _zero_padding(x: Tensor, mask: Tensor) -> Tensor:
    """`x` with padding positions replaced by 0, so NaN/inf garbage can leak neither forward nor backward."""
    return torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `x` over the positions where `mask` is 1.

    Args:
        x: any shape, e.g. `(B, T)`.
        mask: same shape as `x`.
        dim: reduce over this dimension only (e.g. `dim=1` gives per-row means `(B,)`); `None` reduces everything
            to a scalar.

    Returns:
        A scalar, or `x` reduced over `dim`. An empty selection gives 0, not NaN (the count is clamped to 1).
    """
    total = _zero_padding(x, mask).sum(dim=dim)
    count = mask.bool().sum(dim=dim).to(total.dtype)
    return total / count.clamp(min=1)


def _masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """`masked_var` without the empty-mask check (no host sync); an empty mask gives 0."""
    mean = masked_mean(x, mask)
    centered = _zero_padding(x - mean, mask)
    n = mask.bool().sum().to(x.dtype)
    var = (centered**2).sum() / n.clamp(min=1)  # biased (population) variance
    if unbiased:
        # Bessel's correction n/(n-1), as TRL's masked_var. With n == 1 the biased variance is exactly 0 and we keep 0
        # (a single sample has no spread) instead of 0 * inf = NaN.
        var = var * n / (n - 1).clamp(min=1)
    return var


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of `x` over the positions where `mask` is 1, as a scalar.

    Args:
        x: any shape, e.g. `(B, T)`.
        mask: same shape as `x`.
        unbiased: apply Bessel's correction n/(n-1) (TRL's convention). With a single valid entry (n == 1) the result
            is 0, not NaN: one sample has no spread, so whitening it maps it to 0.

    Raises:
        ValueError: if `mask` selects nothing (this check syncs with the device once).
    """
    if not bool(mask.bool().any()):
        raise ValueError("masked_var: the mask selects no element (mask.sum() == 0), the variance is undefined.")
    return _masked_var(x, mask, unbiased=unbiased)


def masked_whiten(
    x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8, *, unbiased: bool = True
) -> Tensor:
    """Whiten `x` over the masked entries: `(x - mean) / sqrt(var + eps)`.

    Args:
        x: any shape, e.g. advantages or rewards `(B, T)`.
        mask: same shape as `x`.
        shift_mean: if False, add the mean back after scaling (TRL's convention for reward whitening: rescale the
            rewards but keep their sign and offset).
        eps: added to the variance before the square root.
        unbiased: use the unbiased variance (TRL's convention).

    Returns:
        Same shape as `x`; padding positions are 0.

    Raises:
        ValueError: if `mask` selects nothing.
    """
    mean = masked_mean(x, mask)
    var = masked_var(x, mask, unbiased=unbiased)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return _zero_padding(whitened, mask)


def kl_estimate(logprob: Tensor, ref_logprob: Tensor, estimator: str, *, log_ratio_clamp: float = 20.0) -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi, with log r = ref_logprob - logprob.

    The estimators (http://joschu.net/blog/kl-approx.html):
        - `k1 = -log r`: unbiased, high variance, can be negative per token.
        - `k2 = 0.5 * (log r)^2`: biased, low variance, always >= 0.
        - `k3 = (r - 1) - log r`: unbiased, low variance, always >= 0.

    Args:
        logprob: `(B, T)` log-probs of the sampled tokens under the policy.
        ref_logprob: `(B, T)` log-probs of the same tokens under the reference.
        estimator: one of `"k1"`, `"k2"`, `"k3"`.
        log_ratio_clamp: for `k3` only, log r is clamped to `[-c, c]` before use so `exp` stays finite (`exp(20)` is
            about 5e8); `k1` and `k2` are not clamped. Inside the clamp `k3` is exact.

    Returns:
        `(B, T)` per-token estimates. No mask: padding positions carry whatever the inputs give; mask them
        downstream (`per_token_rewards`, `kl_penalty_loss` and `masked_mean` do).
    """
    log_ratio = ref_logprob - logprob  # log r = log pi_ref - log pi
    if estimator == "k1":
        return -log_ratio  # k1: http://joschu.net/blog/kl-approx.html
    if estimator == "k2":
        return 0.5 * log_ratio**2  # k2: http://joschu.net/blog/kl-approx.html
    if estimator == "k3":
        log_ratio = log_ratio.clamp(-log_ratio_clamp, log_ratio_clamp)  # keep exp finite
        return torch.expm1(log_ratio) - log_ratio  # k3: http://joschu.net/blog/kl-approx.html
    raise ValueError(f"Unknown KL estimator {estimator!r}; expected one of {', '.join(KL_ESTIMATORS)}.")


def kl_penalty_loss(
    logprob: Tensor, ref_logprob: Tensor, mask: Tensor, estimator: str, *, log_ratio_clamp: float = 20.0
) -> Tensor:
    """Masked mean of the per-token KL estimate, to add as `beta * kl_penalty_loss(...)` (`kl_penalty="loss"`).

    In loss mode the sampled tokens are fixed and only log pi is differentiated, so what matters is each estimator's
    gradient in expectation over y ~ pi (per token, given the prefix):
        - `k3`: E[(1 - r) grad log pi] = grad KL(pi_ref || pi). Low variance, pulls toward the reference; the usual
          choice here, as in GRPO (Shao et al. 2024, arXiv:2402.03300).
        - `k2`: E[-log r * grad log pi] = grad KL(pi || pi_ref), the reverse KL that the reward-mode penalty targets.
        - `k1`: E[grad log pi] = 0 (score-function identity): `k1` in the loss has no effect in expectation, only
          noise. Use `k1` with `kl_penalty="reward"`, where it enters through the advantages instead.

    Args:
        logprob: `(B, T)` policy log-probs of the sampled tokens (requires grad).
        ref_logprob: `(B, T)` reference log-probs (detached).
        mask: `(B, T)` completion mask.
        estimator: `"k1"`, `"k2"` or `"k3"`, see `kl_estimate`.

    Returns:
        A scalar; padding positions get zero gradient.
    """
    logprob = _zero_padding(logprob, mask)  # so garbage gives no NaN gradient either
    ref_logprob = _zero_padding(ref_logprob, mask)
    kl = kl_estimate(logprob, ref_logprob, estimator, log_ratio_clamp=log_ratio_clamp)  # (B, T)
    return masked_mean(kl, mask)  # KL term in the loss, k3 as in GRPO: arXiv:2402.03300


def per_token_rewards(scores: Tensor, kl: Tensor, mask: Tensor, kl_coef: float | Tensor) -> tuple[Tensor, Tensor]:
    """Per-token rewards: a KL penalty on every token plus the sequence score on the last one.

    r_t = -kl_coef * KL_t, and r_{last} += score (Ziegler et al. 2019 arXiv:1909.08593; Ouyang et al. 2022
    arXiv:2203.02155).

    Args:
        scores: `(B,)` scalar score of each completion (reward model or verifier, after any EOS penalty).
        kl: `(B, T)` per-token KL estimate (see `kl_estimate`).
        mask: `(B, T)` completion mask, right-padded.
        kl_coef: the KL coefficient beta, a float or a scalar tensor (or `(B, 1)` for per-row coefficients).

    Returns:
        `(rewards, non_score_reward)`, both `(B, T)` and 0 at padding positions. The score lands on the last valid
        token of each row (index `mask.sum(1) - 1` for a right-padded mask). A row with no valid token has no token
        to carry its score: the score is dropped and the row is all zeros.
    """
    valid = mask.bool()
    non_score_reward = _zero_padding(-kl_coef * kl, valid)  # per-token KL reward: Ziegler et al. 2019
    B, T = valid.shape
    positions = torch.arange(T, device=valid.device).expand(B, T)
    last = torch.where(valid, positions, -1).amax(dim=1)  # (B,) index of the last valid token, -1 if none
    has_token = last >= 0
    score = torch.where(has_token, scores.to(non_score_reward.dtype), 0)  # (B,) dropped for empty rows
    rows = torch.arange(B, device=valid.device)
    rewards = non_score_reward.clone()
    rewards[rows, last.clamp(min=0)] += (
        score  # sequence score on the final token: Ziegler et al. 2019, Ouyang et al. 2022
    )
    return rewards, non_score_reward


def gae_advantages(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float | Tensor
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over the agent's tokens (Schulman et al. 2016, arXiv:1506.02438).

        delta_t = r_t + gamma * V_next - V_t
        A_t     = delta_t + gamma * lam * A_next
        R_t     = A_t + V_t

    "next" is the next *valid* token of the row, not position t + 1: masked positions inside a completion (tool or
    environment output, `env_mask`) are skipped, as if the agent's tokens had been written contiguously. They are
    not episode ends. After the last valid token of a row the episode ends: V_next = 0 and A_next = 0 (no
    bootstrap). Rewards at masked positions are ignored.

    Args:
        rewards: `(B, T)` per-token rewards (see `per_token_rewards`).
        values: `(B, T)` critic values V_t, detached.
        mask: `(B, T)` completion mask; may have interior gaps.
        gamma: discount, usually 1.0 for language models.
        lam: GAE lambda, trades bias (low) for variance (high); 0.95 (CleanRL) or 1.0 (veRL, PPOConfig). A `(B,)`
            tensor gives each row its own λ (`length_adaptive_lam`).

    Returns:
        `(advantages, returns)`, both `(B, T)` and 0 at masked positions.
    """
    valid = mask.bool()
    rewards = _zero_padding(rewards, valid)
    values = _zero_padding(values, valid)
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(values[:, 0])  # (B,) V of the next valid token; 0 past the end of the row
    next_advantage = torch.zeros_like(rewards[:, 0])  # (B,) A of the next valid token
    for t in range(rewards.shape[1] - 1, -1, -1):  # backwards in time
        td_error = rewards[:, t] + gamma * next_value - values[:, t]  # delta_t: arXiv:1506.02438 Eq. 10
        advantage = td_error + gamma * lam * next_advantage  # A_t = sum_l (gamma*lam)^l delta_{t+l}: Eq. 16
        here = valid[:, t]
        advantages[:, t] = torch.where(here, advantage, 0.0)
        next_value = torch.where(here, values[:, t], next_value)  # a gap carries its successor's V and A through
        next_advantage = torch.where(here, advantage, next_advantage)
    returns = _zero_padding(advantages + values, valid)
    return advantages, returns


def policy_loss(
    logprob: Tensor,
    old_logprob: Tensor,
    advantages: Tensor,
    mask: Tensor,
    cliprange: float,
    *,
    cliprange_low: float | None = None,
    cliprange_high: float | None = None,
    dual_clip: float | None = None,
    loss_aggregation: str = "token-mean",
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate loss (Schulman et al. 2017, arXiv:1707.06347), averaged over valid tokens.

    Args:
        logprob: `(B, T)` log-probs of the sampled tokens under the current policy (requires grad).
        old_logprob: `(B, T)` log-probs under the policy that sampled them (detached).
        advantages: `(B, T)` advantages (usually whitened).
        mask: `(B, T)` completion mask.
        cliprange: epsilon, how far the ratio may move from 1 before the objective stops rewarding it; usually
            0.1 to 0.3.
        cliprange_low, cliprange_high: asymmetric clip `[1 - low, 1 + high]`, as DAPO's "clip-higher"
            (Yu et al. 2025, arXiv:2503.14476); each defaults to `cliprange`.
        dual_clip: c > 1 bounds the loss of negative-advantage tokens by `-c * A` (see `dual_clip_loss`); None: off.
        loss_aggregation: how token losses become one scalar, see `aggregate_loss`; `"token-mean"` is the masked mean.

    Returns:
        `(loss, info)`: a scalar loss, and detached 0-dim tensors `clipfrac` (fraction of valid tokens where the
        clipped term is active), `approxkl` (masked mean of 0.5 * (log ratio)^2, TRL 1.12's `approxkl`), `ratio`
        (masked mean) and `ratio_var` (unbiased masked variance; 0 for fewer than two valid tokens).
    """
    low = cliprange if cliprange_low is None else cliprange_low  # asymmetric clip-higher: DAPO arXiv:2503.14476
    high = cliprange if cliprange_high is None else cliprange_high
    advantages = _zero_padding(advantages, mask)
    log_ratio = _zero_padding(logprob - old_logprob, mask)  # (B, T); masked before exp so garbage gives no NaN grad
    ratio = log_ratio.exp()  # (B, T) r = pi / pi_old
    surrogate = ratio * advantages  # (B, T) the unclipped objective r * A
    clipped_surrogate = ratio.clamp(1.0 - low, 1.0 + high) * advantages  # clip(r, 1-eps, 1+eps) * A
    # PPO-Clip takes the smaller (pessimistic) of the two objectives per token: arXiv:1707.06347 Eq. 7
    objective = torch.minimum(surrogate, clipped_surrogate)
    per_token_loss = -objective  # maximise the objective = minimise its negative
    if dual_clip is not None:
        per_token_loss = dual_clip_loss(per_token_loss, advantages, dual_clip)
    loss = aggregate_loss(per_token_loss, mask, loss_aggregation)
    with torch.no_grad():
        info = {
            "clipfrac": masked_mean((clipped_surrogate < surrogate).to(ratio.dtype), mask),  # the clip is binding
            "approxkl": masked_mean(0.5 * log_ratio**2, mask),  # k2 approx kl: http://joschu.net/blog/kl-approx.html
            "ratio": masked_mean(ratio, mask),
            "ratio_var": _masked_var(ratio, mask, unbiased=True),
        }
    return loss, info


def _half_square_or_huber(error: Tensor, delta: float | None) -> Tensor:
    """0.5 * e^2, or the Huber loss of e with threshold `delta` (equal to 0.5 * e^2 for |e| <= delta)."""
    if delta is None:
        return 0.5 * error**2
    return torch.nn.functional.huber_loss(error, torch.zeros_like(error), reduction="none", delta=delta)


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    cliprange_value: float,
    clip: bool = True,
    huber_delta: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value loss: 0.5 * max((V - R)^2, (clip(V, V_old - eps_v, V_old + eps_v) - R)^2), masked mean.

    Value clipping comes from OpenAI Baselines' PPO2, not from the PPO paper; TRL and CleanRL default to it. It often
    does not help and can hurt (Andrychowicz et al. 2021, "What matters in on-policy RL", arXiv:2006.05990), hence
    `clip=False`. Note that
    `cliprange_value` is in the units of the rewards: rescale it if the scores are large.

    Args:
        values: `(B, T)` current critic values (requires grad).
        old_values: `(B, T)` critic values at rollout time (detached).
        returns: `(B, T)` GAE returns (detached).
        mask: `(B, T)` completion mask.
        cliprange_value: eps_v, the largest step the clipped branch allows from `old_values`; usually 0.2.
        clip: if False, the plain loss 0.5 * masked_mean((V - R)^2).
        huber_delta: if set, every 0.5 * e^2 above (clipped or not) becomes the Huber loss of e with threshold δ:
            0.5 * e^2 for |e| <= δ, else δ * (|e| - δ/2) (Huber 1964). The gradient of a large error is capped at δ,
            so one rare, large return cannot pull the critic far for every state (`value_huber_delta`).

    Returns:
        `(loss, info)`: a scalar loss, and detached 0-dim tensors `vf_clipfrac` (fraction of valid tokens where the
        clipped loss is the larger one; 0 when `clip=False`) and `value_mean` (masked mean of `values`).
    """
    values = _zero_padding(values, mask)
    old_values = _zero_padding(old_values, mask)
    returns = _zero_padding(returns, mask)
    v_loss_unclipped = _half_square_or_huber(values - returns, huber_delta)  # (B, T)
    if not clip:
        loss = masked_mean(v_loss_unclipped, mask)
        vf_clipfrac = torch.zeros((), dtype=values.dtype, device=values.device)
    else:
        # value clipping, a PPO implementation detail (Andrychowicz et al. 2021, arXiv:2006.05990, find it can hurt)
        v_clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
        v_loss_clipped = _half_square_or_huber(v_clipped - returns, huber_delta)
        loss = masked_mean(torch.max(v_loss_unclipped, v_loss_clipped), mask)
        with torch.no_grad():
            vf_clipfrac = masked_mean((v_loss_clipped > v_loss_unclipped).to(values.dtype), mask)
    info = {"vf_clipfrac": vf_clipfrac.detach(), "value_mean": masked_mean(values, mask).detach()}
    return loss, info


def entropy_from_logits(logits: Tensor, *, chunk_size: int | None = None) -> Tensor:
    """Entropy of the categorical distribution given by `logits`: `(..., V) -> (...)`.

    H = -sum_i p_i log p_i with log p from `log_softmax` (logsumexp-stable for large logits). Entries at -inf (masked
    vocabulary) contribute 0, with finite gradients. Computed in the dtype of `logits`.

    Args:
        logits: `(..., V)`, e.g. `(B, T, V)`.
        chunk_size: if set, process this many rows of the flattened `(N, V)` logits at a time, so the temporaries of
            a long `(B, T, V)` batch never exist all at once (most useful under `torch.no_grad()`).
    """
    if chunk_size is None:
        return _entropy(logits)
    flat = logits.reshape(-1, logits.shape[-1])  # (N, V)
    entropy = torch.cat([_entropy(chunk) for chunk in flat.split(chunk_size)])  # (N,)
    return entropy.reshape(logits.shape[:-1])


def _entropy(logits: Tensor) -> Tensor:
    logp = torch.log_softmax(logits, dim=-1)  # (..., V)
    p = logp.exp()
    logp = torch.where(p > 0, logp, torch.zeros((), dtype=logp.dtype, device=logp.device))  # 0 * log 0 := 0
    return -(p * logp).sum(dim=-1)


LOSS_AGGREGATIONS = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean")


def aggregate_loss(per_token_loss: Tensor, mask: Tensor, mode: str = "token-mean") -> Tensor:
    """Reduce a `(B, T)` per-token loss to a scalar (the `loss_agg_mode`s of veRL; Liu et al. 2025 "Dr. GRPO",
    arXiv:2503.20783; Yu et al. 2025 "DAPO", arXiv:2503.14476).

    - `"token-mean"`: sum over all valid tokens / number of valid tokens: every token weighs the same, so long
      completions weigh more (DAPO's token-level loss).
    - `"seq-mean-token-mean"`: the mean over rows of each row's token mean: every completion weighs the same, so a
      token of a long completion weighs less (the original GRPO).
    - `"seq-mean-token-sum"`: the mean over rows of each row's token sum: no division by the length (Dr. GRPO's
      remedy for the length bias; the scale grows with the completion length).

    Rows with no valid token are left out of the row mean. An empty mask gives 0.
    """
    loss = _zero_padding(per_token_loss, mask)
    if mode == "token-mean":
        return masked_mean(loss, mask)
    has_token = mask.bool().any(dim=1)  # (B,)
    if mode == "seq-mean-token-mean":
        per_row = masked_mean(loss, mask, dim=1)  # (B,)
    elif mode == "seq-mean-token-sum":
        per_row = loss.sum(dim=1)  # (B,)
    else:
        raise ValueError(f"Unknown loss aggregation {mode!r}; expected one of {', '.join(LOSS_AGGREGATIONS)}.")
    return masked_mean(per_row, has_token)


def dual_clip_loss(pg_loss: Tensor, advantages: Tensor, dual_clip: float) -> Tensor:
    """Dual-clip PPO (Ye et al. 2020, arXiv:1912.09729, Eq. 5): where A < 0, cap the clipped loss at `-c * A`.

    With A < 0 the clipped objective min(r·A, clip(r)·A) is unbounded below as the ratio r grows, so one stale,
    very unlikely token can dominate a batch; the second clip bounds it: max(min(r·A, clip(r)·A), c·A). In loss
    terms (the negated objective) that is min(pg_loss, -c·A) on negative advantages. `c` must be > 1 (usually 3).

    Args:
        pg_loss: `(B, T)` per-token clipped loss, max(-A·r, -A·clip(r)).
        advantages: `(B, T)` advantages.
        dual_clip: c > 1.
    """
    bounded = torch.min(pg_loss, -dual_clip * advantages)  # dual clip: arXiv:1912.09729 Eq. 5
    return torch.where(advantages < 0, bounded, pg_loss)


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """1 − Var[R − V] / Var[R] over the valid tokens: 1 is a perfect critic, 0 no better than a constant, < 0 worse.

    The critic's health check of OpenAI Baselines, CleanRL and veRL (`critic/vf_explained_var`). NaN when the returns
    do not vary (nothing to explain). Population variances (the ratio does not depend on the correction).
    """
    var_returns = _masked_var(returns, mask, unbiased=False)
    var_residual = _masked_var(returns - values, mask, unbiased=False)
    return torch.where(var_returns > 0, 1 - var_residual / var_returns, torch.full_like(var_returns, float("nan")))


def length_adaptive_lam(mask: Tensor, alpha: float) -> Tensor:
    """VAPO's length-adaptive GAE λ for the policy, per row: λ = 1 − 1/(α·l), l the completion length, in [0, 1].

    Yuan et al. 2025, arXiv:2504.05118 (α = 0.05 there): long completions get λ near 1 (less bias from the critic on
    a reward that arrives at the end), short ones a smaller λ. Rows with α·l ≤ 1 get λ = 0. Pass the result as the
    `lam` of `gae_advantages` (a `(B,)` tensor broadcasts per row).

    Returns:
        `(B,)` λ per row, in the dtype of `mask` if floating, else float32.
    """
    dtype = mask.dtype if mask.dtype.is_floating_point else torch.float32
    lengths = mask.bool().sum(dim=1).to(dtype)  # (B,)
    lam = 1 - 1 / (alpha * lengths).clamp(min=torch.finfo(dtype).tiny)  # VAPO length-adaptive GAE: arXiv:2504.05118
    return lam.clamp(0.0, 1.0)

"""Score normalisation before the KL penalty, so that the scale of a reward does not decide whether PPO learns.

PPO adds the sequence score to a per-token penalty −β·KL_t (`ppo_math.per_token_rewards`). β only means something
relative to the score's scale: a verifier scoring 0/1 and a reward averaging 0.005 need β values 100× apart. Ziegler
et al. 2019 (arXiv:1909.08593, §2.2) normalise the reward model's output to unit variance before adding the KL
term; lm-human-preferences fits a gain and bias on samples of the initial policy. Two modes
(`PPOConfig.reward_normalization`):

- `"running"`: divide every score by the standard deviation of all scores seen so far (running moments over the
  whole run, trlx's `scale_reward="running"`). The mean is kept, so 0 stays 0 and the sign of a score never flips.
- `"initial"`: `(score − μ₀) / σ₀`, with μ₀, σ₀ fitted once on the first rollout whose scores vary
  (lm-human-preferences' gain and bias, target mean 0 and std 1). Scores pass unchanged until then.

    >>> import torch
    >>> norm = ScoreNormalizer("running")
    >>> norm(torch.tensor([0.0, 0.01, 0.0, 0.01]))   # σ = 0.00577 → scores / σ
    tensor([0.0000, 1.7321, 0.0000, 1.7321])
"""

from __future__ import annotations

import math

from torch import Tensor


REWARD_NORMALIZATIONS = ("none", "running", "initial")


class RunningMoments:
    """Mean and (unbiased) variance of every value passed to `update`, merged batch by batch (Chan et al. 1979)."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, x: Tensor) -> None:
        x = x.detach().double().flatten()
        n = x.numel()
        if n == 0:
            return
        shifted = x - x[0]  # shifted data: equal values give exactly 0, not a mean rounded off in the last bit
        batch_mean = x[0].item() + shifted.mean().item()
        batch_m2 = ((shifted - shifted.mean()) ** 2).sum().item()
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * (n / total)  # parallel merge of (count, mean, M2): Chan, Golub & LeVeque 1979
        self.m2 += batch_m2 + delta**2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        """Unbiased standard deviation; 0 until two values were seen."""
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 0.0

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.m2 = state["count"], state["mean"], state["m2"]


class ScoreNormalizer:
    """Maps raw scores `(B,)` to the scale PPO's KL penalty is calibrated for (see the module docstring).

    Args:
        mode: `"none"`, `"running"` or `"initial"`.

    Call it once per rollout with every process's scores (gathered), so that all ranks hold the same statistics.
    `gain` and `bias` give the map in use: `normalized = gain * score + bias`.
    """

    def __init__(self, mode: str):
        if mode not in REWARD_NORMALIZATIONS:
            raise ValueError(f"reward_normalization={mode!r} is invalid: expected one of {REWARD_NORMALIZATIONS}")
        self.mode = mode
        self.moments = RunningMoments()
        self.gain, self.bias = 1.0, 0.0

    def update(self, scores: Tensor) -> None:
        """Fold `scores` (all of a rollout's scored completions) into the statistics and refresh gain and bias."""
        if self.mode == "running":
            self.moments.update(scores)
            std = self.moments.std
            self.gain = 1.0 / std if std > 0 else 1.0  # all scores equal so far: nothing to scale
        elif self.mode == "initial" and self.moments.count == 0:
            fit = RunningMoments()
            fit.update(scores)
            if fit.std > 0:  # fit once, on the first rollout whose scores vary: lm-human-preferences' gain and bias
                self.moments = fit
                self.gain, self.bias = 1.0 / fit.std, -fit.mean / fit.std

    def __call__(self, scores: Tensor, update: bool = True) -> Tensor:
        if update:
            self.update(scores)
        return scores * self.gain + self.bias

    def state_dict(self) -> dict:
        return {"mode": self.mode, "moments": self.moments.state_dict(), "gain": self.gain, "bias": self.bias}

    def load_state_dict(self, state: dict) -> None:
        self.moments.load_state_dict(state["moments"])
        self.gain, self.bias = state["gain"], state["bias"]

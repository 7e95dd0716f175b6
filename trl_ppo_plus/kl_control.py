"""KL controllers: the rule that sets the KL penalty coefficient β after each rollout batch.

The per-token reward is r_t = −β·KL_t (+ the score at the last token), so β trades reward against drift from the
reference policy. A controller reads the batch's KL after each rollout and returns the β for the next one:

    >>> ctl = build_kl_controller("pid", kl_coef=0.2, kl_target=6.0, kl_horizon=10000, kl_pid_kp=0.2,
    ...                           kl_pid_ki=0.02, kl_pid_kd=0.0, kl_coef_min=1e-4, kl_coef_max=10.0)
    >>> beta = ctl.value                              # used in this rollout's per-token rewards
    >>> beta = ctl.update(current_kl=7.5, n_steps=64)  # once per rollout batch, with that batch's KL

Here `current_kl` is the batch mean of the per-sequence summed KL (reduced across processes by the caller) and
`n_steps` is the number of episodes in the update, across all processes.

Every controller has `.value` (β, a float), `.error` (the last normalised error, logged as `objective/kl_error`;
alias `.last_error`),
`.update(current_kl, n_steps) -> float`, and `state_dict()` / `load_state_dict()`. The state dict holds plain
Python floats and ints (JSON-serialisable) and restores the controller bit-for-bit, so a resumed run continues
exactly where it stopped. Hyperparameters are not part of the state: they come from the config on resume.

Three controllers:
- `FixedKLController`: β never moves (Tulu 3 RLVR, TRL ≥ 0.12).
- `AdaptiveKLController`: the proportional rule of Ziegler et al. 2019, as in TRL ≤ 0.11, trlx, OpenRLHF, veRL.
- `PIDKLController`: a PID loop on log β with anti-windup and bounds; reaches the target several times faster
  (see `benchmarks/kl_controllers.py`).
"""

from __future__ import annotations

import math


KL_CONTROLLERS = ("fixed", "adaptive", "pid")

# PID defaults, tuned with `benchmarks/kl_controllers.py` (per-update gains on log β; see PIDKLController).
PID_KP = 0.2
PID_KI = 0.02
PID_KD = 0.0
PID_KL_COEF_MIN = 1e-4
PID_KL_COEF_MAX = 10.0
PID_ERROR_CLIP = 1.0


# ---------------------------------------------------------------------------------------------------------------
# Validation. One check per config field, shared by `validate_kl_control_args` (called from the config's
# __post_init__) and the constructors. OpenRLHF PR #1289 shipped these bugs: target ≤ 0 divides by zero in the
# error and horizon ≤ 0 sends β to −∞ or flips the sign of the correction.
# ---------------------------------------------------------------------------------------------------------------
def _is_number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _check_kl_coef(kl_coef) -> None:
    if not _is_number(kl_coef) or not math.isfinite(kl_coef) or kl_coef < 0:
        raise ValueError(f"kl_coef must be a finite number >= 0, got kl_coef={kl_coef!r}.")


def _check_target(kl_target) -> None:
    # target <= 0 divides by zero (or flips the sign of) KL/target (OpenRLHF PR #1289)
    if not _is_number(kl_target) or not math.isfinite(kl_target) or kl_target <= 0:
        raise ValueError(f"kl_target must be a finite number > 0, got kl_target={kl_target!r}.")


def _check_horizon(kl_horizon) -> None:
    # horizon <= 0 turns the correction around and drives β to −∞ (OpenRLHF PR #1289)
    if not _is_number(kl_horizon) or not math.isfinite(kl_horizon) or kl_horizon <= 0:
        raise ValueError(f"kl_horizon must be a finite number > 0, got kl_horizon={kl_horizon!r}.")


def _check_pid(kl_coef, kp, ki, kd, kl_coef_min, kl_coef_max) -> None:
    for name, gain in (("kl_pid_kp", kp), ("kl_pid_ki", ki), ("kl_pid_kd", kd)):
        # a negative gain is positive feedback: β runs away from the target
        if not _is_number(gain) or not math.isfinite(gain) or gain < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {name}={gain!r}.")
    # the PID acts on log β, so both bounds must be > 0
    if not _is_number(kl_coef_min) or not math.isfinite(kl_coef_min) or kl_coef_min <= 0:
        raise ValueError(f"kl_coef_min must be a finite number > 0, got kl_coef_min={kl_coef_min!r}.")
    if not _is_number(kl_coef_max) or not math.isfinite(kl_coef_max) or kl_coef_max < kl_coef_min:
        raise ValueError(
            f"kl_coef_max must be a finite number >= kl_coef_min={kl_coef_min!r}, got kl_coef_max={kl_coef_max!r}."
        )
    if not kl_coef_min <= kl_coef <= kl_coef_max:
        raise ValueError(
            f"kl_coef must lie in [kl_coef_min, kl_coef_max] = [{kl_coef_min!r}, {kl_coef_max!r}] for the pid "
            f"controller, got kl_coef={kl_coef!r}."
        )


def validate_kl_control_args(kind, kl_coef, kl_target, kl_horizon, kp, ki, kd, kl_coef_min, kl_coef_max) -> None:
    """Raise `ValueError`, naming the config field and its value, for an invalid KL-control setting.

    A field is checked only when the chosen controller reads it:

    | field                                     | fixed | adaptive | pid |
    |-------------------------------------------|-------|----------|-----|
    | `kl_controller` in {fixed, adaptive, pid} |   x   |    x     |  x  |
    | `kl_coef` >= 0                            |   x   |    x     |  x  |
    | `kl_target` > 0                           |       |    x     |  x  |
    | `kl_horizon` > 0                          |       |    x     |     |
    | `kl_pid_kp/ki/kd` >= 0                    |       |          |  x  |
    | 0 < `kl_coef_min` <= `kl_coef_max`        |       |          |  x  |
    | `kl_coef_min` <= `kl_coef` <= `kl_coef_max` |     |          |  x  |

    All numbers must also be finite (NaN and inf are rejected).
    """
    if kind not in KL_CONTROLLERS:
        raise ValueError(f"kl_controller must be one of {KL_CONTROLLERS}, got kl_controller={kind!r}.")
    _check_kl_coef(kl_coef)
    if kind in ("adaptive", "pid"):
        _check_target(kl_target)
    if kind == "adaptive":
        _check_horizon(kl_horizon)
    if kind == "pid":
        _check_pid(kl_coef, kp, ki, kd, kl_coef_min, kl_coef_max)


def _check_update_args(current_kl, n_steps) -> None:
    # A NaN/inf KL would make β NaN for the rest of the run; fail at the batch that produced it.
    if not _is_number(current_kl) or not math.isfinite(current_kl):
        raise ValueError(f"current_kl must be a finite number, got {current_kl!r}.")
    if not isinstance(n_steps, int) or isinstance(n_steps, bool) or n_steps < 0:
        raise ValueError(f"n_steps must be an int >= 0, got {n_steps!r}.")


def _check_state(state: dict, kind: str, keys: tuple[str, ...]) -> None:
    if state.get("kind") != kind:
        raise ValueError(f"state_dict is for a {state.get('kind')!r} KL controller, not {kind!r}.")
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"state_dict for the {kind!r} KL controller is missing {missing}.")


# ---------------------------------------------------------------------------------------------------------------
# Controllers
# ---------------------------------------------------------------------------------------------------------------
class _KLController:
    """The shared interface: `value` (β), `error` (last normalised error), `update`, `state_dict`, `load_state_dict`."""

    value: float
    error: float

    @property
    def last_error(self) -> float:
        """Alias of `error`: the last normalised error, logged as `objective/kl_error`."""
        return self.error


class FixedKLController(_KLController):
    """A constant β.

    Args:
        kl_coef: β, the weight of the per-token KL penalty. Typical values: 0.01–0.1 (Tulu 3 RLVR uses 0.05, TRL
            1.12's PPO 0.05). 0 disables the penalty.

    `error` is always 0.0: a fixed controller has no target.
    """

    def __init__(self, kl_coef: float):
        _check_kl_coef(kl_coef)
        self.value = float(kl_coef)
        self.error = 0.0

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict:
        return {"kind": "fixed", "value": self.value, "error": self.error}

    def load_state_dict(self, state: dict) -> None:
        _check_state(state, "fixed", ("value",))
        self.value = float(state["value"])


class AdaptiveKLController(_KLController):
    """The adaptive KL controller of Ziegler et al. 2019 (arXiv:1909.08593, Sec. 2.2), exactly:

        e = clip(KL/target − 1, −0.2, 0.2)
        β ← β·(1 + e·n_steps/horizon)

    Args:
        init_kl_coef: β at the start. TRL 0.11: 0.2; veRL: 0.001; OpenRLHF: 0.01.
        target: the KL (batch mean of the per-sequence summed KL, in nats) the controller steers to. TRL 0.11: 6.0;
            veRL: 0.1. Larger targets let the policy move further from the reference.
        horizon: how many episodes the controller takes to correct a deviation: at the maximal error (±20%) β
            changes by a factor e^{±0.2} every `horizon` episodes. TRL 0.11 and veRL: 10000. Smaller is faster.

    `error` is the last clipped e (0.0 before the first update). β is not bounded; it moves by at most a factor
    (1 ± 0.2·n_steps/horizon) per update.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        _check_kl_coef(init_kl_coef)
        _check_target(target)
        _check_horizon(horizon)
        self.value = float(init_kl_coef)
        self.target = target
        self.horizon = horizon
        self.error = 0.0

    def update(self, current_kl: float, n_steps: int) -> float:
        _check_update_args(current_kl, n_steps)
        # proportional error, clipped at ±20% (Ziegler et al. 2019, arXiv:1909.08593, eq. in Sec. 2.2)
        proportional_error = min(max(current_kl / self.target - 1, -0.2), 0.2)
        mult = 1 + proportional_error * n_steps / self.horizon  # same operation order as TRL 0.11 / lm-human-prefs
        self.value = float(self.value * mult)
        self.error = float(proportional_error)
        return self.value

    def state_dict(self) -> dict:
        return {"kind": "adaptive", "value": self.value, "error": self.error}

    def load_state_dict(self, state: dict) -> None:
        _check_state(state, "adaptive", ("value", "error"))
        self.value = float(state["value"])
        self.error = float(state["error"])


class PIDKLController(_KLController):
    """A PID controller on log β with anti-windup, keeping β in [kl_coef_min, kl_coef_max].

    Each update (k counts updates):

        e_k   = clip(log(KL_k / target), −error_clip, error_clip)     # −error_clip when KL <= 0
        PD_k  = kp·e_k + kd·(e_k − e_{k−1})                           # no derivative term on the first update
        I_k   = I_{k−1} + ki·e_k, anti-windup as below                 # I_0 = log init_kl_coef
        log β = clamp(I_k + PD_k, log β_min, log β_max)

    How to think about it:
    - Why log β: the KL responds roughly to the ratio of β changes (KL ∝ 1/β in the simplest model), so equal
      steps in log β give equal relative steps in KL, β stays positive, and one set of gains works for targets and
      β's of any scale.
    - Why the error is log(KL/target) and not adaptive's KL/target − 1: it is symmetric (2× too high and 2× too
      low give ±0.69) and, with KL ∝ 1/β, exactly linear in log β, so the loop gain does not depend on where it
      starts. Near the target both agree to first order, so `objective/kl_error` reads the same for both.
    - Why the gains are per update and not scaled by n_steps/horizon (as adaptive is): the policy's KL responds
      per optimisation round, so loop stability depends on the gain per update. Scaling by episodes would make the
      same gains unstable when the batch grows. `n_steps` is therefore not used, except that `n_steps == 0` (no
      data) leaves the controller unchanged. `horizon` is not used.
    - The integral term I is what removes steady-state error (the KL drifts as the policy learns). Adaptive KL is
      itself an integral-only controller on log β with gain n_steps/horizon (≈ 0.0064 for TRL 0.11) and its error
      clipped at ±0.2; the PID adds a proportional term, a ~3× larger integral gain (0.02) and clips its (log) error at ±1.

    Anti-windup: the integral integrates towards a bound only until I + PD reaches it, and stops there while the
    output is saturated (conditional integration); I itself is also clamped to [log β_min, log β_max] (integrator
    clamping). So after a long saturation β leaves the bound as soon as the error changes sign, instead of
    waiting for a wound-up integral to unwind (Åström & Murray, "Feedback Systems", 2008, Sec. 10.4 "Integrator
    windup").

    Args:
        init_kl_coef: β at the start; must lie in [kl_coef_min, kl_coef_max].
        target: the KL (batch mean of the per-sequence summed KL, in nats) to steer to. TRL 0.11: 6.0; veRL: 0.1.
        kp: proportional gain, log β per unit of log error. Reacts at once to the current error; with the
            integral it sets the speed. Usually 0–0.5; above ~1 the noise of the batch KL passes straight into β.
        ki: integral gain, log β per update per unit of log error. Removes steady-state error and tracks drift.
            Usually 0.005–0.05; too large overshoots when the policy's KL lags behind β.
        kd: derivative gain on the change of error between updates. Damps overshoot on a lagging plant but
            amplifies batch noise; 0 (the default) is usually best, at most ~0.1.
        kl_coef_min, kl_coef_max: bounds on β (> 0, because the controller acts on log β). Defaults 1e-4 and 10.
        error_clip: bound on |e|, in log units (1.0 = a factor e ≈ 2.7). Limits the reaction to outlier batches
            and to KL ≈ 0 at the very start, when the policy still equals the reference.

    Defaults (kp=0.2, ki=0.02, kd=0, error_clip=1.0) were tuned with `benchmarks/kl_controllers.py` (plant: KL ∝
    1/β reached with a 10-update lag, 10% batch noise, slow upward drift; TRL 0.11's β₀=0.2, target 6, horizon
    10000, 64 episodes per update). There they settle within ±10% of the target about 5–6× faster than adaptive,
    with ≤ 6% overshoot. They were chosen as the most robust of the fast settings: overshoot stays ≤ 10% for plant
    lags from 3 to 30 updates and elasticities (d log KL / d log β) from 0.5 to 2 (`--robustness`). Larger ki
    (0.03–0.05) settles 1.5–2× faster on the nominal plant but overshoots 14–18% when the plant is slow and
    steep. A derivative term brought nothing measurable on a noisy batch KL, hence kd=0.

    `error` is the last clipped log error (0.0 before the first update). Because the error is taken in log, the
    loop steers the geometric mean of the measured KL to the target; with batch noise of relative size σ the
    arithmetic mean ends ≈ σ²/2 above it (0.5% for σ = 0.1).
    """

    def __init__(
        self,
        init_kl_coef: float,
        target: float,
        kp: float = PID_KP,
        ki: float = PID_KI,
        kd: float = PID_KD,
        kl_coef_min: float = PID_KL_COEF_MIN,
        kl_coef_max: float = PID_KL_COEF_MAX,
        error_clip: float = PID_ERROR_CLIP,
    ):
        _check_kl_coef(init_kl_coef)
        _check_target(target)
        _check_pid(init_kl_coef, kp, ki, kd, kl_coef_min, kl_coef_max)
        if not _is_number(error_clip) or not error_clip > 0:
            raise ValueError(f"error_clip must be a number > 0, got error_clip={error_clip!r}.")
        self.target, self.kp, self.ki, self.kd = target, kp, ki, kd
        self.kl_coef_min, self.kl_coef_max, self.error_clip = kl_coef_min, kl_coef_max, error_clip
        self.value = float(init_kl_coef)
        self.integral = math.log(init_kl_coef)  # I: the integral term, in log β
        self.error = 0.0
        self.n_updates = 0

    def _log_error(self, current_kl: float) -> float:
        if current_kl <= 0:  # k1 batch means can be <= 0 at the start, when policy == reference
            return -self.error_clip
        return min(max(math.log(current_kl / self.target), -self.error_clip), self.error_clip)

    def update(self, current_kl: float, n_steps: int) -> float:
        _check_update_args(current_kl, n_steps)
        if n_steps == 0:
            return self.value
        log_min, log_max = math.log(self.kl_coef_min), math.log(self.kl_coef_max)
        e = self._log_error(current_kl)
        de = e - self.error if self.n_updates > 0 else 0.0  # no derivative kick on the first update
        pd = self.kp * e + self.kd * de
        integral = self.integral + self.ki * e
        # anti-windup (Åström & Murray, "Feedback Systems", 2008, Sec. 10.4): I integrates towards a bound only
        # until I + PD reaches it (conditional integration; the max/min keep this rule from pulling I back), and
        # never leaves [log β_min, log β_max] (integrator clamping)
        if e > 0:
            integral = max(self.integral, min(integral, log_max - pd))
        elif e < 0:
            integral = min(self.integral, max(integral, log_min - pd))
        integral = min(max(integral, log_min), log_max)
        u = integral + pd
        self.integral = integral
        # clamp after exp too: exp(log(x)) can exceed x by one ulp
        self.value = float(min(max(math.exp(u), self.kl_coef_min), self.kl_coef_max))
        self.error = float(e)
        self.n_updates += 1
        return self.value

    def state_dict(self) -> dict:
        return {
            "kind": "pid",
            "value": self.value,
            "integral": self.integral,
            "error": self.error,
            "n_updates": self.n_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        _check_state(state, "pid", ("value", "integral", "error", "n_updates"))
        self.value = float(state["value"])
        self.integral = float(state["integral"])
        self.error = float(state["error"])
        self.n_updates = int(state["n_updates"])


# ---------------------------------------------------------------------------------------------------------------
# Factory: the config's field names in, a controller out.
# ---------------------------------------------------------------------------------------------------------------
_BUILDERS = {
    "fixed": lambda a: FixedKLController(a["kl_coef"]),
    "adaptive": lambda a: AdaptiveKLController(a["kl_coef"], a["kl_target"], a["kl_horizon"]),
    "pid": lambda a: PIDKLController(
        a["kl_coef"],
        a["kl_target"],
        kp=a["kl_pid_kp"],
        ki=a["kl_pid_ki"],
        kd=a["kl_pid_kd"],
        kl_coef_min=a["kl_coef_min"],
        kl_coef_max=a["kl_coef_max"],
    ),
}


def build_kl_controller(
    kind: str,
    *,
    kl_coef: float,
    kl_target: float,
    kl_horizon: float,
    kl_pid_kp: float,
    kl_pid_ki: float,
    kl_pid_kd: float,
    kl_coef_min: float,
    kl_coef_max: float,
) -> FixedKLController | AdaptiveKLController | PIDKLController:
    """Build the controller named by `kind` ("fixed", "adaptive" or "pid") from the config's fields.

    `kl_coef` is the initial β. Fields the chosen controller does not read are ignored (and not validated).
    """
    validate_kl_control_args(
        kind, kl_coef, kl_target, kl_horizon, kl_pid_kp, kl_pid_ki, kl_pid_kd, kl_coef_min, kl_coef_max
    )
    args = dict(
        kl_coef=kl_coef,
        kl_target=kl_target,
        kl_horizon=kl_horizon,
        kl_pid_kp=kl_pid_kp,
        kl_pid_ki=kl_pid_ki,
        kl_pid_kd=kl_pid_kd,
        kl_coef_min=kl_coef_min,
        kl_coef_max=kl_coef_max,
    )
    return _BUILDERS[kind](args)

"""KL controllers: the adaptive formula by hand, clipping, validation, exact state round-trips, PID anti-windup, and
convergence on the benchmark's simulated plant."""

import json
import math
import random
import re

import numpy as np
import pytest

from tests.scripts import load_script
from trl_ppo_plus.kl_control import (
    AdaptiveKLController,
    FixedKLController,
    PIDKLController,
    build_kl_controller,
    validate_kl_control_args,
)


def _load_benchmark():
    return load_script("benchmarks/kl_controllers.py")  # the plant has one implementation: the benchmark's


CONFIG = dict(
    kl_coef=0.2,
    kl_target=6.0,
    kl_horizon=10000,
    kl_pid_kp=0.2,
    kl_pid_ki=0.02,
    kl_pid_kd=0.1,
    kl_coef_min=1e-3,
    kl_coef_max=10.0,
)


# --- adaptive ---------------------------------------------------------------------------------------------------
def test_adaptive_matches_hand_computed_sequence():
    ctl = AdaptiveKLController(init_kl_coef=0.5, target=4.0, horizon=100)
    n = 10  # n_steps / horizon = 0.1
    # (KL, clipped error, β after the update) with e = clip(KL/4 − 1, ±0.2) and β ← β·(1 + e·10/100)
    expected = [
        (4.4, 0.1, 0.5 * (1 + 0.1 * 0.1)),  # 0.505
        (6.0, 0.2, 0.505 * (1 + 0.2 * 0.1)),  # e = 0.5 clipped to 0.2 -> 0.5151
        (2.0, -0.2, 0.5151 * (1 - 0.2 * 0.1)),  # e = -0.5 clipped to -0.2 -> 0.504798
        (3.8, -0.05, 0.504798 * (1 - 0.05 * 0.1)),  # 0.50227401
        (4.0, 0.0, 0.50227401),  # on target: β does not move
    ]
    for kl, error, beta in expected:
        assert ctl.update(kl, n) == pytest.approx(beta, rel=1e-12)
        assert ctl.value == pytest.approx(beta, rel=1e-12)
        assert ctl.error == pytest.approx(error, abs=1e-12)


def test_adaptive_equals_trl_0_11_reference_bit_for_bit():
    class TRLAdaptiveKLController:  # verbatim from TRL 0.11 trl/trainer/utils.py
        def __init__(self, init_kl_coef, target, horizon):
            self.value = init_kl_coef
            self.target = target
            self.horizon = horizon

        def update(self, current, n_steps):
            target = self.target
            proportional_error = np.clip(current / target - 1, -0.2, 0.2)
            mult = 1 + proportional_error * n_steps / self.horizon
            self.value *= mult

    ours, ref = AdaptiveKLController(0.2, 6.0, 10000), TRLAdaptiveKLController(0.2, 6.0, 10000)
    rng = random.Random(0)
    for _ in range(500):
        kl = rng.uniform(-1.0, 15.0)
        ref.update(kl, 64)
        assert ours.update(kl, 64) == ref.value


@pytest.mark.parametrize("kl, error", [(1e9, 0.2), (6.0 * 1.2000001, 0.2), (0.0, -0.2), (-3.0, -0.2), (4.8, -0.2)])
def test_adaptive_error_clips_at_0_2(kl, error):
    ctl = AdaptiveKLController(0.2, 6.0, 10000)
    assert ctl.update(kl, 64) == 0.2 * (1 + error * 64 / 10000)
    assert ctl.error == error


def test_adaptive_does_not_move_without_episodes():
    ctl = AdaptiveKLController(0.2, 6.0, 10000)
    assert ctl.update(100.0, 0) == 0.2


# --- fixed ------------------------------------------------------------------------------------------------------
def test_fixed_never_moves():
    ctl = FixedKLController(0.05)
    for kl in [0.0, 1e-9, 6.0, 1e9, -5.0, float("nan")]:
        assert ctl.update(kl, 64) == 0.05
    assert ctl.value == 0.05 and ctl.error == 0.0


# --- validation -------------------------------------------------------------------------------------------------
def _args(kind_, **overrides):
    a = dict(
        kind=kind_,
        kl_coef=0.2,
        kl_target=6.0,
        kl_horizon=10000,
        kp=0.2,
        ki=0.02,
        kd=0.0,
        kl_coef_min=1e-4,
        kl_coef_max=10.0,
    )
    a.update(overrides)
    return a


INVALID = [
    ("fixed", {"kind": "ppo"}, "kl_controller", "'ppo'"),
    ("fixed", {"kl_coef": -0.1}, "kl_coef", "-0.1"),
    ("adaptive", {"kl_coef": float("nan")}, "kl_coef", "nan"),
    ("adaptive", {"kl_target": 0.0}, "kl_target", "0.0"),
    ("pid", {"kl_target": -1.0}, "kl_target", "-1.0"),
    ("adaptive", {"kl_horizon": 0}, "kl_horizon", "0"),
    ("adaptive", {"kl_horizon": -10000}, "kl_horizon", "-10000"),
    ("pid", {"kp": -0.1}, "kl_pid_kp", "-0.1"),
    ("pid", {"ki": -0.01}, "kl_pid_ki", "-0.01"),
    ("pid", {"kd": -1.0}, "kl_pid_kd", "-1.0"),
    ("pid", {"kl_coef_min": 0.0}, "kl_coef_min", "0.0"),
    ("pid", {"kl_coef_min": -1e-3}, "kl_coef_min", "-0.001"),
    ("pid", {"kl_coef_min": 1.0, "kl_coef_max": 0.5, "kl_coef": 0.7}, "kl_coef_max", "0.5"),
    ("pid", {"kl_coef": 20.0}, "kl_coef", "20.0"),
    ("pid", {"kl_coef": 1e-6}, "kl_coef", "1e-06"),
]


@pytest.mark.parametrize("kind, overrides, field, value", INVALID)
def test_validation_names_field_and_value(kind, overrides, field, value):
    with pytest.raises(ValueError, match=re.escape(f"{field}={value}")) as info:
        validate_kl_control_args(**_args(kind, **overrides))
    assert field in str(info.value)


@pytest.mark.parametrize("kind, overrides, field, value", INVALID)
def test_factory_validates_too(kind, overrides, field, value):
    a = _args(kind, **overrides)
    config = dict(
        kl_coef=a["kl_coef"],
        kl_target=a["kl_target"],
        kl_horizon=a["kl_horizon"],
        kl_pid_kp=a["kp"],
        kl_pid_ki=a["ki"],
        kl_pid_kd=a["kd"],
        kl_coef_min=a["kl_coef_min"],
        kl_coef_max=a["kl_coef_max"],
    )
    with pytest.raises(ValueError, match=re.escape(f"{field}={value}")):
        build_kl_controller(a["kind"], **config)


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: FixedKLController(-1.0), "kl_coef"),
        (lambda: AdaptiveKLController(0.2, 0.0, 10000), "kl_target"),
        (lambda: AdaptiveKLController(0.2, 6.0, 0), "kl_horizon"),
        (lambda: PIDKLController(0.2, 6.0, kp=-1.0), "kl_pid_kp"),
        (lambda: PIDKLController(0.2, 6.0, kl_coef_min=1.0, kl_coef_max=0.1), "kl_coef_max"),
        (lambda: PIDKLController(0.2, 6.0, error_clip=0.0), "error_clip"),
    ],
)
def test_constructors_validate(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_fields_a_controller_does_not_read_are_not_validated():
    validate_kl_control_args(**_args("fixed", kl_target=0.0, kl_horizon=0, kp=-1.0, kl_coef_min=0.0))
    validate_kl_control_args(**_args("adaptive", kp=-1.0, kl_coef_min=5.0, kl_coef_max=1.0))


@pytest.mark.parametrize("kind", ["adaptive", "pid"])
@pytest.mark.parametrize("kl, n_steps", [(float("nan"), 64), (float("inf"), 64), (6.0, -1), (6.0, 1.5)])
def test_update_rejects_bad_inputs(kind, kl, n_steps):
    ctl = build_kl_controller(kind, **CONFIG)
    with pytest.raises(ValueError):
        ctl.update(kl, n_steps)
    assert ctl.value == 0.2


# --- state_dict -------------------------------------------------------------------------------------------------
def _kl_sequence(n, seed=0):
    rng = random.Random(seed)
    return [rng.choice([0.0, -0.5, 1e3]) if rng.random() < 0.05 else rng.uniform(1.0, 15.0) for _ in range(n)]


@pytest.mark.parametrize("kind", ["fixed", "adaptive", "pid"])
def test_state_dict_round_trips_exactly_and_resume_continues_bit_for_bit(kind):
    kls = _kl_sequence(200)
    uninterrupted = build_kl_controller(kind, **CONFIG)
    full = [uninterrupted.update(kl, 64) for kl in kls]

    first = build_kl_controller(kind, **CONFIG)
    before = [first.update(kl, 64) for kl in kls[:77]]
    state = first.state_dict()
    assert all(type(v) in (int, float, str) for v in state.values())  # plain Python, JSON-serialisable
    restored = build_kl_controller(kind, **CONFIG)
    restored.load_state_dict(json.loads(json.dumps(state)))  # through a checkpoint file
    assert restored.state_dict() == state
    assert restored.value == first.value and restored.error == first.error == restored.last_error
    after = [restored.update(kl, 64) for kl in kls[77:]]

    assert before + after == full  # exact float equality
    assert restored.state_dict() == uninterrupted.state_dict()


def test_load_state_dict_rejects_another_controllers_state():
    pid = build_kl_controller("pid", **CONFIG)
    with pytest.raises(ValueError, match="adaptive"):
        pid.load_state_dict(build_kl_controller("adaptive", **CONFIG).state_dict())


# --- PID --------------------------------------------------------------------------------------------------------
def test_pid_hand_computed_steps():
    ctl = PIDKLController(0.2, 6.0, kp=0.2, ki=0.02, kd=0.5)
    # e = log(KL/6) = 0.5; no derivative on the first update: log β = log 0.2 + ki·0.5 + kp·0.5
    assert ctl.update(6.0 * math.exp(0.5), 64) == pytest.approx(0.2 * math.exp(0.01 + 0.1), rel=1e-12)
    assert ctl.error == pytest.approx(0.5, rel=1e-12)
    # on target: e = 0, de = -0.5: log β = log 0.2 + 0.01 + kd·(-0.5)
    assert ctl.update(6.0, 64) == pytest.approx(0.2 * math.exp(0.01 - 0.25), rel=1e-12)
    # no data: nothing changes
    assert ctl.update(100.0, 0) == pytest.approx(0.2 * math.exp(0.01 - 0.25), rel=1e-12)


@pytest.mark.parametrize("kl, error", [(0.0, -1.0), (-2.0, -1.0), (1e6, 1.0), (6.0, 0.0)])
def test_pid_error_is_clipped_log_ratio(kl, error):
    ctl = PIDKLController(0.2, 6.0)
    ctl.update(kl, 64)
    assert ctl.error == error


def test_pid_stays_within_bounds():
    ctl = PIDKLController(0.2, 6.0, kp=2.0, ki=0.5, kd=1.0, kl_coef_min=0.01, kl_coef_max=1.0)
    rng = random.Random(0)
    for _ in range(2000):
        beta = ctl.update(rng.choice([0.0, 1e-3, 6.0, 1e3, rng.uniform(0, 50)]), 64)
        assert 0.01 <= beta <= 1.0


@pytest.mark.parametrize("saturating_kl, recovering_kl", [(1e4, 0.1), (0.0, 1e3)])
def test_pid_integral_does_not_wind_up(saturating_kl, recovering_kl):
    ctl = PIDKLController(0.2, 6.0, kl_coef_min=1e-3, kl_coef_max=1.0)
    for _ in range(5000):  # a long saturation at one bound
        ctl.update(saturating_kl, 64)
    assert ctl.value == pytest.approx(1.0 if saturating_kl > 6.0 else 1e-3, rel=1e-12)
    assert math.log(1e-3) <= ctl.integral <= math.log(1.0)
    ctl.update(recovering_kl, 64)  # the error changes sign: β leaves the bound at once
    assert 1e-3 < ctl.value < 1.0


def test_pid_conditional_integration_freezes_integral_while_saturated():
    # kp alone saturates the output: the integral must not creep up towards the bound meanwhile
    ctl = PIDKLController(1.0, 6.0, kp=5.0, ki=0.1, kd=0.0, kl_coef_min=0.5, kl_coef_max=2.0)
    for _ in range(100):
        assert ctl.update(6.0 * math.e, 64) == 2.0
    assert ctl.integral == 0.0  # log 1.0, unchanged


# --- convergence on the simulated plant (benchmarks/kl_controllers.py) ------------------------------------------
def test_adaptive_and_pid_converge_on_the_benchmark_plant():
    bench = _load_benchmark()
    for ratio in bench.SCENARIOS.values():
        for seed in range(2):
            _, _, adaptive_settle, _ = bench.run("adaptive", ratio, seed, n_updates=1500)
            _, kls, pid_settle, pid_overshoot = bench.run("pid", ratio, seed, n_updates=1500)
            assert adaptive_settle is not None and pid_settle is not None
            assert abs(kls[-1] / bench.TARGET - 1) <= bench.BAND
            assert 2 * pid_settle <= adaptive_settle  # the goal: PID >= 2x faster
            assert pid_overshoot <= 10.0

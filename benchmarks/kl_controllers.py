"""Adaptive (Ziegler et al. 2019) vs PID KL control on a simulated KL "plant", over several seeds.

The plant stands in for the policy: under a penalty β its KL to the reference settles at sensitivity/β^elasticity,
which it approaches with a first-order lag (the policy needs a few updates to move), while the sensitivity drifts
slowly upwards (as training goes on the reward pulls the policy further away). Each rollout measures the batch-mean
KL with lognormal noise. Both controllers start from the same β, see the same target, the same n_steps per update
and the same noise sequence (TRL 0.11's defaults: β₀ = 0.2, target 6, horizon 10000, 64 episodes per update).

Metrics, on the plant's noise-free KL (the measured KL carries ~10% batch noise by design):
- settle: the first update after which the KL enters and stays within ±10% of the target;
- overshoot: how far (in % of the target) the KL goes past the target, on the side opposite to where it started.

Usage:
    .venv/bin/python benchmarks/kl_controllers.py [--seeds 5] [--updates 3000] [--plot out.png] [--robustness]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from dataclasses import dataclass

from trl_ppo_plus.kl_control import AdaptiveKLController, PIDKLController


# The shared setting: TRL 0.11's AdaptiveKLController defaults and a batch of 64 episodes per update.
INIT_KL_COEF, TARGET, HORIZON, BATCH = 0.2, 6.0, 10000, 64
BAND = 0.10  # ±10% of the target
# Where the KL starts, as a multiple of the target: the plant starts at its equilibrium for β₀.
SCENARIOS = {"KL starts at 2x target": 2.0, "KL starts at 0.5x target": 0.5}


@dataclass
class KLPlant:
    """KL(β) = sensitivity·exp(drift·t) / β^elasticity, reached with a lag of `lag` updates, measured with noise.

    It starts at its equilibrium for β₀ with KL = `start_kl`.
    """

    start_kl: float  # KL at t = 0, at equilibrium under β₀
    elasticity: float = 1.0  # d log KL / d log β at equilibrium: 1 means KL ∝ 1/β
    lag: float = 10.0  # updates for the policy to close 63% of the gap to its new equilibrium
    drift: float = 2e-4  # per update, in log: +49% sensitivity after 2000 updates
    noise: float = 0.1  # lognormal sigma of the measured batch-mean KL
    seed: int = 0

    def __post_init__(self):
        self.rng = random.Random(self.seed)
        self.t = 0
        self.kl = self.start_kl
        self.sensitivity = self.start_kl * INIT_KL_COEF**self.elasticity  # KL·β^elasticity at t = 0

    def equilibrium(self, beta: float) -> float:
        return self.sensitivity * math.exp(self.drift * self.t) / beta**self.elasticity

    def step(self, beta: float) -> float:
        """One rollout under β: the policy moves towards its equilibrium; returns the measured batch-mean KL."""
        self.kl += (self.equilibrium(beta) - self.kl) * (1 - math.exp(-1 / self.lag))
        self.t += 1
        return self.kl * math.exp(self.noise * self.rng.gauss(0.0, 1.0) - self.noise**2 / 2)


def make_controller(kind: str, **pid_kwargs):
    if kind == "adaptive":
        return AdaptiveKLController(INIT_KL_COEF, TARGET, HORIZON)
    return PIDKLController(INIT_KL_COEF, TARGET, **pid_kwargs)


def simulate(controller, plant: KLPlant, n_updates: int) -> tuple[list[float], list[float]]:
    """Drive `plant` with `controller`; returns the β used in each rollout and the plant's noise-free KL after it."""
    betas, kls = [], []
    for _ in range(n_updates):
        beta = controller.value
        measured = plant.step(beta)
        controller.update(measured, BATCH)
        betas.append(beta)
        kls.append(plant.kl)
    return betas, kls


def settle_updates(kls: list[float], target: float = TARGET, band: float = BAND) -> int | None:
    """Updates until the KL enters and stays within ±band of the target; None if it is outside at the end."""
    for i in range(len(kls) - 1, -1, -1):
        if abs(kls[i] / target - 1) > band:
            return i + 2 if i + 1 < len(kls) else None  # update i+1 (0-based) is the first inside; count from 1
    return 0


def overshoot_pct(kls: list[float], start_kl: float, target: float = TARGET) -> float:
    """Largest excursion past the target on the side opposite the start, in % of the target (0 if none)."""
    side = 1.0 if start_kl > target else -1.0
    return max(0.0, max(-side * (kl - target) / target for kl in kls) * 100)


def run(kind: str, start_ratio: float, seed: int, n_updates: int, plant_kwargs=None, pid_kwargs=None):
    plant = KLPlant(start_kl=start_ratio * TARGET, seed=seed, **(plant_kwargs or {}))
    betas, kls = simulate(make_controller(kind, **(pid_kwargs or {})), plant, n_updates)
    return betas, kls, settle_updates(kls), overshoot_pct(kls, plant.start_kl)


def benchmark(seeds: int = 5, n_updates: int = 3000, plant_kwargs=None, pid_kwargs=None) -> dict:
    """{scenario: {kind: (settle updates per seed, overshoot % per seed)}}."""
    results = {}
    for name, ratio in SCENARIOS.items():
        results[name] = {}
        for kind in ("adaptive", "pid"):
            runs = [run(kind, ratio, s, n_updates, plant_kwargs, pid_kwargs) for s in range(seeds)]
            results[name][kind] = ([r[2] for r in runs], [r[3] for r in runs])
    return results


def _fmt_settle(xs):
    return "never" if None in xs else f"{statistics.mean(xs):7.1f}"


def plot(path: str, n_updates: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(SCENARIOS), figsize=(6 * len(SCENARIOS), 6), sharex=True, squeeze=False)
    for col, (name, ratio) in enumerate(SCENARIOS.items()):
        for kind in ("adaptive", "pid"):
            betas, kls, _, _ = run(kind, ratio, 0, n_updates)
            axes[0][col].plot(betas, label=kind)
            axes[1][col].plot(kls, label=kind)
        axes[0][col].set(title=f"{name} (seed 0)", ylabel="β (kl_coef)", yscale="log")
        axes[1][col].axhspan(TARGET * (1 - BAND), TARGET * (1 + BAND), color="grey", alpha=0.2, label="±10%")
        axes[1][col].axhline(TARGET, color="k", lw=0.8)
        axes[1][col].set(xlabel="update", ylabel="KL (noise-free)")
        axes[1][col].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def robustness(seeds: int, n_updates: int) -> None:
    """The PID defaults on plants they were not tuned for: slower/faster policies, steeper/flatter KL(β)."""
    print("\nrobustness of the PID defaults (settle updates pid/adaptive, PID max overshoot %), per scenario:")
    for lag in (3.0, 10.0, 30.0):
        for elasticity in (0.5, 1.0, 2.0):
            cells = []
            for by_kind in benchmark(seeds, n_updates, dict(lag=lag, elasticity=elasticity)).values():
                (a, _), (p, p_over) = by_kind["adaptive"], by_kind["pid"]
                cells.append(f"{_fmt_settle(p).strip()}/{_fmt_settle(a).strip()} ov {max(p_over):4.1f}%")
            print(f"  lag {lag:4.0f} elasticity {elasticity:3.1f}: " + " | ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--plot", metavar="PNG", help="write β and KL vs update for both controllers")
    parser.add_argument("--robustness", action="store_true", help="also sweep the plant's lag and elasticity")
    args = parser.parse_args()

    print(
        f"β0={INIT_KL_COEF} target={TARGET} horizon={HORIZON} n_steps={BATCH}/update, band ±{BAND:.0%}, "
        f"{args.seeds} seeds x {args.updates} updates"
    )
    plant = KLPlant(0.0)
    print(f"plant: elasticity={plant.elasticity} lag={plant.lag} drift={plant.drift}/update noise={plant.noise}")
    pid = PIDKLController(INIT_KL_COEF, TARGET)
    print(f"PID defaults: kp={pid.kp} ki={pid.ki} kd={pid.kd} error_clip={pid.error_clip}")
    results = benchmark(args.seeds, args.updates)
    ok = True
    for name, by_kind in results.items():
        print(f"\n{name}")
        print(f"  {'controller':<10} {'settle (updates, mean)':>24} {'overshoot % (mean / max)':>26}")
        for kind, (settles, overs) in by_kind.items():
            print(f"  {kind:<10} {_fmt_settle(settles):>24} {statistics.mean(overs):>14.2f} / {max(overs):5.2f}")
        (a, _), (p, p_over) = by_kind["adaptive"], by_kind["pid"]
        if None in a or None in p:
            print("  ratio adaptive/pid: n/a (did not settle)")
            ok = False
            continue
        ratio = statistics.mean(a) / statistics.mean(p)
        print(f"  ratio adaptive/pid settle updates: {ratio:.1f}x  (goal >= 2x with PID overshoot <= 10%)")
        ok = ok and ratio >= 2 and max(p_over) <= 10
    print(f"\n{'PASS' if ok else 'FAIL'}: PID >= 2x faster than adaptive with <= 10% overshoot in every scenario")
    if args.robustness:
        robustness(args.seeds, args.updates)
    if args.plot:
        plot(args.plot, args.updates)


if __name__ == "__main__":
    main()

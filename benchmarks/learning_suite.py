"""How fast PPO, GRPO and RLOO learn on small tasks none of them was tuned for, at equal generated tokens and lr.

    .venv/bin/python benchmarks/learning_suite.py --quick            # 1 seed, lr 3e-3, every task and algorithm
    .venv/bin/python benchmarks/learning_suite.py                    # lr {1e-3, 3e-3, 1e-2} × seeds {0, 1}
    .venv/bin/python benchmarks/learning_suite.py --quick --ablation # PPO with each trick switched on, one row each
    .venv/bin/python benchmarks/learning_suite.py --quick --ppo kl_coef=0.0 --algos ppo   # any PPOConfig override
    .venv/bin/python benchmarks/learning_suite.py --algos ppo,grpo --ppo num_generations=16 --grpo num_generations=16 \
        --common_random_numbers --tasks sparse_terminal --lrs 1e-2 --seeds 0,1,2,3,4,5,6,7  # a paired comparison

Four tasks, four reward shapes, each on a tiny local model (`trl_ppo_plus.tiny`), no network:

1. `sparse_token`: a random-init 2-layer Llama; the score is the fraction of characters that are digits (start ≈ 0.01).
2. `sparse_terminal`: same model; 1.0 if the completion contains the exact target string `7`, else 0 (start ≈ 0.015).
3. `dense`: same model; the fraction of characters that are lower-case vowels (start ≈ 0.19, every sample differs).
4. `arithmetic`: the demo's verifiable task (`trl_ppo_plus.demo_task`) and reward (`make_math_reward`), from the
   demo's SFT checkpoint (its tiny Qwen2 and SFT recipe, cached under `--workdir`), 0/1 per completion.

Every run samples `--rollouts` rollouts of 16 completions of up to 8 tokens (arithmetic: 20) at temperature 1.0 and
the same lr; GRPO and RLOO keep their TRL defaults otherwise (GRPO: groups of 8, β = 0; RLOO: groups of 2, β = 0.05),
PPO keeps ours (one completion per prompt, four epochs). `max_steps` is set so that each trainer generates `--rollouts`
rollouts (`optimizer_steps_for`; PPO: `rollouts × num_ppo_epochs × num_mini_batches`), so all three see the same
number of completions, whatever the `--ppo`/`--grpo`/`--rloo` overrides.
The curve is the mean score of each rollout, recorded by the reward function itself.
Reported: AUC (mean score over all rollouts) and final (mean over the last 10 rollouts), and a PNG of the curves.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models: one thread each is fastest on a shared machine

TASKS = ("sparse_token", "sparse_terminal", "dense", "arithmetic")
ALGOS = ("ppo", "grpo", "rloo")
BATCH = 16  # completions per rollout
# PPO's tricks, one suite row each (`--ablation`): the PPOConfig overrides that switch each on.
ABLATION = {
    "defaults": {},
    "reward_normalization=none": {"reward_normalization": "none"},
    "reward_normalization=initial": {"reward_normalization": "initial"},
    "num_ppo_epochs=1 (previous default)": {"num_ppo_epochs": 1},
    "whiten_advantages=true": {"whiten_advantages": True},
    "critic_warmup_rollouts=5": {"critic_warmup_rollouts": 5},
    "value_learning_rate=3e-2 (10x the --quick lr)": {"value_learning_rate": 3e-2},
    "value_huber_delta=1": {"value_huber_delta": 1.0},
    "dual_clip=3": {"dual_clip": 3.0},
    "cliprange_high=0.28": {"cliprange_high": 0.28},
    "loss_aggregation=seq-mean-token-mean": {"loss_aggregation": "seq-mean-token-mean"},
    "loss_aggregation=seq-mean-token-sum": {"loss_aggregation": "seq-mean-token-sum"},
    "lam_critic=1.0": {"lam_critic": 1.0},
    "lam_actor_length_alpha=0.05": {"lam_actor_length_alpha": 0.05},
    "kl_coef=0.05": {"kl_coef": 0.05},
    "lam=0.95": {"lam": 0.95},
    "vf_coef=0.1": {"vf_coef": 0.1},
    "TRL 1.12 defaults": {
        "num_ppo_epochs": 4,
        "reward_normalization": "none",
        "whiten_advantages": True,
        "kl_coef": 0.05,
        "lam": 0.95,
        "vf_coef": 0.1,
    },
}


class RecordedReward:
    """Wraps a reward: returns its scores and appends their mean to `curve` (one point per rollout)."""

    def __init__(self, reward, curve: list[float]):
        self.reward, self.curve = reward, curve
        self.__name__ = getattr(reward, "__name__", type(reward).__name__)

    def __call__(self, completions, **kwargs):
        scores = self.reward(completions, **kwargs)
        valid = [s for s in scores if s is not None]
        self.curve.append(sum(valid) / max(len(valid), 1))
        return scores


class CharFraction:
    """Fraction of a completion's characters that are in `chars` (0 for an empty completion)."""

    def __init__(self, chars: str, name: str):
        self.chars, self.__name__ = chars, name

    def __call__(self, completions, **kwargs):
        return [sum(c in self.chars for c in text) / max(len(text), 1) for text in completions]


class ContainsTarget:
    """1.0 if a completion contains the exact string `target`, else 0.0."""

    __name__ = "contains_target"

    def __init__(self, target: str):
        self.target = target

    def __call__(self, completions, **kwargs):
        return [float(self.target in text) for text in completions]


def _random_llama() -> str:
    from trl_ppo_plus.tiny import tiny_model_dir

    return str(tiny_model_dir(family="llama", num_hidden_layers=2, hidden_size=64, intermediate_size=128))


def _text_prompts(n: int = 64):
    from datasets import Dataset

    words = ["Ann", "Bob", "has", "apples", "the", "book", "and", "gets", "more", "How", "many", "now"]
    return Dataset.from_list([{"prompt": " ".join(words[(i + k) % len(words)] for k in range(3))} for i in range(n)])


def _arithmetic(seed: int, workdir: Path):
    """The demo task from the demo's SFT checkpoint (its recipe: partly right, so RL has something to fix); cached."""
    from trl_ppo_plus.demo import DemoConfig, _build_model, _sft, splits
    from trl_ppo_plus.rewards import make_math_reward

    cfg = DemoConfig(seed=seed)  # the demo's model and SFT: held-out greedy accuracy ≈ 35% (seed 0)
    train, _ = splits(cfg)
    cache = workdir / f"arithmetic-demo-sft-seed{seed}"
    if not (cache / "sft" / "config.json").exists():
        _sft(cfg, _build_model(cfg), train, cache)
    return str(cache / "sft"), train.remove_columns("completion"), make_math_reward(strict=True), 20


def task(name: str, seed: int, workdir: Path):
    """(model path, prompt dataset, reward, completion length) of task `name`."""
    if name == "sparse_token":
        return _random_llama(), _text_prompts(), CharFraction("0123456789", "digit_fraction"), 8
    if name == "sparse_terminal":
        return _random_llama(), _text_prompts(), ContainsTarget("7"), 8
    if name == "dense":
        return _random_llama(), _text_prompts(), CharFraction("aeiou", "vowel_fraction"), 8
    if name == "arithmetic":
        return _arithmetic(seed, workdir)
    raise ValueError(f"unknown task {name!r}; expected one of {TASKS}")


def optimizer_steps_for(rollouts: int, args) -> int:
    """`max_steps` that makes a GRPO, RLOO or PPO config generate `rollouts` rollouts: TRL generates once every
    `steps_per_generation × num_iterations` micro-batches, and steps the optimizer every `gradient_accumulation_steps`
    (PPO: `num_ppo_epochs × num_mini_batches` steps per rollout, the same product)."""
    micro_batches = rollouts * args.num_iterations * args.steps_per_generation
    if (
        args.steps_per_generation < args.gradient_accumulation_steps
        or micro_batches % args.gradient_accumulation_steps
    ):
        raise ValueError(
            f"steps_per_generation={args.steps_per_generation} with gradient_accumulation_steps="
            f"{args.gradient_accumulation_steps}: an optimizer step would span rollouts, so no max_steps buys exactly "
            f"{rollouts} rollouts; make steps_per_generation a multiple of gradient_accumulation_steps."
        )
    return micro_batches // args.gradient_accumulation_steps


def run(
    algo: str,
    name: str,
    lr: float,
    seed: int,
    rollouts: int,
    workdir: Path,
    overrides: dict,
    common_random_numbers: bool = False,
) -> list[float]:
    """Train one (algorithm, task, lr, seed) with `overrides` on its config; returns the per-rollout mean score.

    `common_random_numbers`: reseed torch's generator with (seed, rollout index) before every rollout's sampling, so
    that two trainers (or two PPO variants) run at the same seed draw their k-th rollout from the same random numbers:
    a paired comparison, in which the seeds' luck of when a sparse reward is first sampled is shared, not averaged."""
    import itertools

    import torch
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from trl_ppo_plus import PPOConfig, PPOTrainer

    model, data, reward, length = task(name, seed, workdir)
    curve: list[float] = []
    common = dict(
        output_dir=str(workdir / f"{algo}-{name}"),
        learning_rate=lr,
        per_device_train_batch_size=BATCH,
        max_completion_length=length,
        temperature=1.0,
        seed=seed,
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        bf16=False,
    )
    if algo == "ppo":
        config_cls, trainer_cls = PPOConfig, PPOTrainer
    else:
        config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if algo == "grpo" else (RLOOConfig, RLOOTrainer)
    args = config_cls(**common, **overrides)  # max_steps unset here: PPOConfig would warn about a placeholder
    args.max_steps = optimizer_steps_for(rollouts, args)  # equal completions, whatever the overrides
    trainer = trainer_cls(model=model, reward_funcs=RecordedReward(reward, curve), args=args, train_dataset=data)
    if common_random_numbers:
        generate, rollout_index = trainer._generate, itertools.count()

        def reseeded_generate(prompts):
            torch.manual_seed(1_000_003 * seed + next(rollout_index))
            return generate(prompts)

        trainer._generate = reseeded_generate  # TRL's one sampling entry point, shared by all three trainers
    trainer.train()
    return curve[:rollouts]


def summarize(curve: list[float], tail: int = 10) -> tuple[float, float]:
    """(AUC, final): the mean score over all rollouts, and over the last `tail`."""
    return statistics.mean(curve), statistics.mean(curve[-tail:])


def plot(results: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(TASKS), 3.2))
    axes = fig.subplots(1, len(TASKS))
    for ax, name in zip(axes, TASKS):
        for r in (r for r in results if r["task"] == name):
            ax.plot(r["curve"], label=f"{r['algo']} lr={r['lr']:g} s{r['seed']}", lw=1)
        ax.set_title(name)
        ax.set_xlabel("rollout")
    axes[0].set_ylabel("mean score")
    for ax in axes:
        if ax.lines:  # a task with no runs in `results` has no legend to draw
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _stats(xs: list[float]) -> tuple[float, float]:
    """(mean, standard error of the mean); the error is 0 for a single seed, both are NaN if a seed's value is."""
    mean = statistics.fmean(xs)  # statistics.stdev raises on a NaN; this sum carries it to the report instead
    n = len(xs)
    return mean, ((sum((x - mean) ** 2 for x in xs) / (n - 1) / n) ** 0.5 if n > 1 else 0.0)


def _refuse_repeated_runs(results: list[dict]) -> None:
    """A run counted twice (one results.json merged twice, or two configurations under one label) would pass for
    another seed and shrink the standard error."""
    seen = set()
    for r in results:
        key = (r["task"], r["lr"], r["algo"], r["seed"])
        if key in seen:
            raise ValueError(f"{r['task']} lr {r['lr']:g} {r['algo']} seed {r['seed']} appears more than once")
        seen.add(key)


def table(results: list[dict]) -> str:
    """Markdown: per task and lr, each algorithm's AUC and final score (mean ± standard error over seeds)."""
    _refuse_repeated_runs(results)
    rows = ["| task | lr | algo | AUC ± SE | final ± SE | seeds |", "|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["task"], r["lr"], r["algo"]), []).append(r)
    for (name, lr, algo), rs in sorted(groups.items(), key=lambda kv: (TASKS.index(kv[0][0]), kv[0][1], kv[0][2])):
        auc, auc_se = _stats([r["auc"] for r in rs])
        final, final_se = _stats([r["final"] for r in rs])
        rows.append(
            f"| {name} | {lr:g} | {algo} | {auc:.3f} ± {auc_se:.3f} | {final:.3f} ± {final_se:.3f} | {len(rs)} |"
        )
    return "\n".join(rows)


def _auc_stats(results: list[dict], name: str, lr: float, algo: str) -> tuple[float, float] | None:
    xs = [r["auc"] for r in results if (r["task"], r["lr"], r["algo"]) == (name, lr, algo)]
    return _stats(xs) if xs else None


def verdict(results: list[dict]) -> str:
    """Per lr: on how many tasks PPO's mean AUC ≥ the better of GRPO's and RLOO's, and on which PPO trails by more
    than two standard errors of the difference (a gap the seeds resolve; a smaller one may be the seeds' luck)."""
    _refuse_repeated_runs(results)
    lines = []
    for lr in sorted({r["lr"] for r in results}):
        wins, total, behind, ties, nan = 0, 0, [], [], []
        for name in TASKS:
            ppo = _auc_stats(results, name, lr, "ppo")
            others = [s for s in (_auc_stats(results, name, lr, algo) for algo in ("grpo", "rloo")) if s is not None]
            if ppo is None or not others:
                continue
            if any(math.isnan(s[0]) for s in (ppo, *others)):  # no order to compare: named, not counted
                nan.append(name)
                continue
            best = max(others)  # the better mean, with its standard error
            total += 1
            wins += ppo[0] >= best[0]
            gap_se = (ppo[1] ** 2 + best[1] ** 2) ** 0.5
            if ppo[0] < best[0]:
                (behind if best[0] - ppo[0] > 2 * gap_se else ties).append(name)
        if total == 0 and not nan:  # e.g. `--ablation` (PPO variants only): nothing to compare, no "0/0" line
            continue
        line = f"lr {lr:g}: PPO AUC ≥ best of GRPO/RLOO on {wins}/{total} tasks"
        if behind or ties:
            line += (
                f"; behind by > 2 SE: {', '.join(behind) or 'none'}; behind within 2 SE: {', '.join(ties) or 'none'}"
            )
        if nan:
            line += f"; NaN AUC: {', '.join(nan)}"
        lines.append(line)
    return "\n".join(lines)


def _parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, lr 3e-3")
    parser.add_argument("--lrs", default="1e-3,3e-3,1e-2")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--algos", default=",".join(ALGOS))
    parser.add_argument("--rollouts", type=int, default=60)
    parser.add_argument("--ppo", nargs="*", default=[], help="PPOConfig overrides, key=value (JSON values)")
    parser.add_argument("--grpo", nargs="*", default=[], help="GRPOConfig overrides, key=value (JSON values)")
    parser.add_argument("--rloo", nargs="*", default=[], help="RLOOConfig overrides, key=value (JSON values)")
    parser.add_argument(
        "--common_random_numbers",
        action="store_true",
        help="reseed the sampler per (seed, rollout) so every trainer's k-th rollout uses the same random numbers",
    )
    parser.add_argument("--ablation", action="store_true", help="PPO only: one row per trick (ABLATION)")
    parser.add_argument("--out", default="runs/learning_suite")
    parser.add_argument("--workdir", default=None, help="cache for the SFT checkpoint (default: a temp dir)")
    parser.add_argument("--report", nargs="*", default=None, help="only merge these results.json into one report")
    cli = parser.parse_args(argv)
    out = Path(cli.out)
    out.mkdir(parents=True, exist_ok=True)
    if cli.report is not None:
        results = [r for path in cli.report for r in json.loads(Path(path).read_text())]
        print(f"{table(results)}\n\n{verdict(results)}")
        plot(results, out / "curves.png")
        return
    lrs = [3e-3] if cli.quick else [float(x) for x in cli.lrs.split(",")]
    seeds = [0] if cli.quick else [int(x) for x in cli.seeds.split(",")]
    overrides = _parse_overrides(cli.ppo)
    baseline = {"grpo": _parse_overrides(cli.grpo), "rloo": _parse_overrides(cli.rloo)}
    variants = {f"ppo[{k}]": {**overrides, **v} for k, v in ABLATION.items()} if cli.ablation else {"ppo": overrides}
    algos = [a for a in cli.algos.split(",") if not (cli.ablation and a != "ppo")]
    planned = [{"task": n, "lr": lr, "algo": a, "seed": s} for n in cli.tasks.split(",") for lr in lrs for s in seeds for a in algos]  # fmt: skip
    _refuse_repeated_runs(planned)  # `--seeds 0,0` is refused before the runs, not by the report after them
    workdir = Path(cli.workdir or tempfile.mkdtemp(prefix="learning-suite-"))
    results = []
    start = time.perf_counter()
    for name in cli.tasks.split(","):
        for lr in lrs:
            for seed in seeds:
                for algo in algos:
                    for label, config in variants.items() if algo == "ppo" else [(algo, baseline[algo])]:
                        t0 = time.perf_counter()
                        curve = run(algo, name, lr, seed, cli.rollouts, workdir, config, cli.common_random_numbers)
                        auc, final = summarize(curve)
                        results.append(
                            {"task": name, "lr": lr, "seed": seed, "algo": label, "auc": auc, "final": final,
                             "first": statistics.mean(curve[:10]), "curve": curve}
                        )  # fmt: skip
                        print(
                            f"{name:<16} lr={lr:g} seed={seed} {label:<12} AUC {auc:.3f}  first10 "
                            f"{results[-1]['first']:.3f} → last10 {final:.3f}  ({time.perf_counter() - t0:.0f} s)",
                            flush=True,
                        )
                        (out / "results.json").write_text(json.dumps(results))
    print(f"\n{table(results)}\n\n{verdict(results)}\ntotal {time.perf_counter() - start:.0f} s; argv: {sys.argv[1:]}")
    plot(results, out / "curves.png")
    print(f"curves: {out / 'curves.png'}")


if __name__ == "__main__":
    main()

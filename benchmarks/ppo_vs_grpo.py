"""PPO vs TRL's GRPO and RLOO from the same SFT checkpoint, on the demo task, for several seeds.

    python benchmarks/ppo_vs_grpo.py               # 3 seeds, the demo's settings
    python benchmarks/ppo_vs_grpo.py --seeds 1     # quick

Per seed: build the demo's tiny model, SFT it once (TRL's SFTTrainer), then train PPO (ours), GRPO and RLOO (TRL's)
from that same checkpoint with the same budget of generated tokens (completions per step × steps ×
`max_completion_length`, same sampling temperature and learning rate), and report the final held-out greedy accuracy
(`VerifiableEvalCallback.evaluate`) as mean ± std over seeds. GRPO and RLOO need groups: they sample `--group`
completions per prompt; PPO samples one per prompt (its baseline is the critic), so all three see the same number of
completions per step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def held_out_accuracy(trainer, held_out, reward, cfg) -> float:
    from trl_ppo_plus.callbacks import VerifiableEvalCallback

    evaluator = VerifiableEvalCallback(
        held_out, reward_funcs=[reward], max_new_tokens=cfg.max_completion_length, batch_size=64, trainer=trainer
    )
    return evaluator.evaluate().metrics["eval/accuracy"]


def train_one(algo: str, sft_dir: Path, train, held_out, cfg, group: int, out: Path) -> float:
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from trl_ppo_plus import PPOTrainer
    from trl_ppo_plus.demo import ppo_args
    from trl_ppo_plus.rewards import make_math_reward

    reward = make_math_reward(strict=True)  # the demo's reward
    data = train.remove_columns("completion")
    ppo = ppo_args(cfg, out / algo, disable_tqdm=True, logging_steps=10)  # the demo's PPO run, as is
    if algo == "ppo":
        trainer = PPOTrainer(model=str(sft_dir), reward_funcs=reward, args=ppo, train_dataset=data)
    else:  # the same budget and sampling: steps, completions per step, length, temperature, lr, updates per rollout
        common = {k: getattr(ppo, k) for k in ("output_dir", "max_steps", "per_device_train_batch_size",
                  "learning_rate", "max_completion_length", "temperature", "logging_steps", "save_strategy",
                  "report_to", "seed", "bf16", "disable_tqdm")}  # fmt: skip
        config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if algo == "grpo" else (RLOOConfig, RLOOTrainer)
        args = config_cls(**common, num_generations=group, num_iterations=cfg.num_ppo_epochs)
        trainer = trainer_cls(model=str(sft_dir), reward_funcs=reward, args=args, train_dataset=data)
    trainer.train()
    return held_out_accuracy(trainer, held_out, reward, cfg)


def main() -> None:
    from trl_ppo_plus.demo import DemoConfig, _build_model, _sft, ppo_args, splits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first_seed", type=int, default=0, help="run seeds first_seed .. first_seed + seeds - 1")
    parser.add_argument("--group", type=int, default=4, help="completions per prompt for GRPO and RLOO")
    parser.add_argument("--algos", default="ppo,grpo,rloo")
    cli = parser.parse_args()

    results: dict[str, list[float]] = {a: [] for a in cli.algos.split(",")}
    sft_scores = []
    start = time.perf_counter()
    for seed in range(cli.first_seed, cli.first_seed + cli.seeds):
        cfg = replace(DemoConfig(), seed=seed)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            train, held_out = splits(cfg)
            sft_dir = _sft(cfg, _build_model(cfg), train, out)
            from trl_ppo_plus import PPOTrainer  # SFT accuracy through the same evaluator
            from trl_ppo_plus.rewards import make_math_reward

            probe = PPOTrainer(
                model=str(sft_dir),
                reward_funcs=make_math_reward(strict=True),
                args=ppo_args(cfg, out / "probe"),
                train_dataset=train.remove_columns("completion"),
            )
            sft_scores.append(held_out_accuracy(probe, held_out, make_math_reward(strict=True), cfg))
            for algo in results:
                results[algo].append(train_one(algo, sft_dir, train, held_out, cfg, cli.group, out))
                print(f"seed {seed} {algo}: held-out accuracy {results[algo][-1]:.3f} (SFT {sft_scores[-1]:.3f})")

    def fmt(xs):
        std = statistics.stdev(xs) if len(xs) > 1 else 0.0
        return f"{100 * statistics.mean(xs):5.1f} ± {100 * std:4.1f}"

    cfg = DemoConfig()
    tokens = cfg.ppo_steps * cfg.ppo_batch_size * cfg.max_completion_length
    print(
        f"\nheld-out accuracy (%), mean ± std over {cli.seeds} seed(s); budget per run: {cfg.ppo_steps} steps × "
        f"{cfg.ppo_batch_size} completions × ≤{cfg.max_completion_length} tokens = ≤{tokens} generated tokens"
    )
    print(f"{'SFT checkpoint':<16}{fmt(sft_scores)}")
    for algo, xs in results.items():
        print(f"{algo.upper():<16}{fmt(xs)}")
    best_anchor = max((statistics.mean(v) for a, v in results.items() if a != "ppo"), default=None)
    if "ppo" in results and best_anchor is not None:
        print(f"PPO − best of GRPO/RLOO: {100 * (statistics.mean(results['ppo']) - best_anchor):+.1f} points")
    print(f"total time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

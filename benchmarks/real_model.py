"""PPO on a real pretrained model and real data: SmolLM2-135M-Instruct (49,152-token vocabulary) on GSM8K.

Three measurements, each a `--parts` entry, in one run:

1. `step_time`: PPO / GRPO step-time ratio at the real vocabulary, with `--length` (128) token completions.
   `benchmarks/step_time.py`'s interleaved trainers, pointed at the real checkpoint.
2. `memory`: peak RSS of one PPO step with one shared 4-bit base (policy, critic and reference on it) against the
   separate fp32 layout (policy, reference, value and reward models). `benchmarks/memory.py --model`, which puts the
   real weights in every role, with a random reward LoRA for the shared layout.
3. `learning`: PPO, GRPO and RLOO from the instruct model at equal generated tokens: `--steps` steps of `--batch`
   completions of at most `--max_completion_length` tokens. PPO samples 1 completion per prompt, GRPO and RLOO sample
   `--group`. Prompts are GSM8K train questions under a system prompt that asks for `#### <n>`. The reward is
   `math_accuracy_reward` + 0.5 × a format reward (`demo_smollm2`). Held-out greedy accuracy and format rate on
   `--n_eval` GSM8K test questions are measured before and after, for each of `--seeds` seeds. All arms train the
   same LoRA (r=16, all linear layers) on the same base. `--quantization nf4` puts that base in 4 bits.

Usage:
    python benchmarks/real_model.py                          # the full settings: hours on 2 CPU cores
    python benchmarks/real_model.py --parts learning --steps 4 --batch 4 --n_eval 20 --seeds 1   # small

GSM8K: `--data_dir`, a folder with GSM8K's `train*.jsonl[.gz]` and `test*.jsonl[.gz]`. The default is the full set
in `../shared/data/gsm8k` when it exists, else the bundled sample `tests/data/gsm8k` (64 train, 200 test).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
HERE = Path(__file__).resolve().parent
SHARED_GSM8K = HERE.parent.parent / "shared" / "data" / "gsm8k"
BUNDLED_GSM8K = HERE.parent / "tests" / "data" / "gsm8k"
PARTS = ("step_time", "memory", "learning")


def part_step_time(model_dir: str, a) -> dict:
    sys.path.insert(0, str(HERE))
    import step_time

    cfg = SimpleNamespace(batch=a.batch, group=a.group, length=a.length, warmup=1, steps=a.timed_steps, lr=1e-5,
                          seed=a.seeds_from, threads=a.threads)  # fmt: skip
    times = step_time.run_interleaved(step_time.VARIANTS, cfg, model_dir, profile=False)
    medians = {v: statistics.median(t) for v, (t, _) in times.items()}
    ratios = {}
    for num, anchor in step_time.RATIOS:
        pairs = [p / g for p, g in zip(times[num][0], times[anchor][0])]
        ratios[f"{num} / {anchor}"] = statistics.median(pairs)
    return {"median_step_s": medians, "ratios": ratios}


def part_memory(model_dir: str, a) -> dict:
    cmd = [sys.executable, str(HERE / "memory.py"), "--model", model_dir, "--batch", str(a.mem_batch),
           "--prompt-tokens", "128", "--completion-tokens", "64"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)} if a.threads else None  # the children's torch threads
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    print(proc.stdout[-3000:], proc.stderr[-2000:] if proc.returncode else "")
    rows = [line.split(": ", 1) for line in proc.stdout.splitlines() if line.startswith(("shared: ", "separate: "))]
    results = {name: json.loads(payload) for name, payload in rows}
    if {"shared", "separate"} <= results.keys():
        results["ratio"] = results["shared"]["peak_rss_gib"] / results["separate"]["peak_rss_gib"]
    return results


def evaluate(trainer, held_out, funcs, a) -> dict:
    from trl_ppo_plus.demo_smollm2 import evaluator

    metrics = evaluator(trainer, held_out, funcs, a.eval_max_new_tokens, eval_steps=10**9, batch_size=a.eval_batch)
    metrics = metrics.evaluate().metrics
    return {
        "accuracy": metrics["eval/accuracy"],
        "format_rate": metrics["eval/rewards/answer_format_reward/mean"] / a.format_weight,
        "mean_length": metrics["eval/mean_length"],
    }


def train_arm(algo: str, model_dir: str, train, held_out, a, seed: int, out: Path) -> tuple[dict, float]:
    import torch
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from trl_ppo_plus import PPOConfig, PPOTrainer
    from trl_ppo_plus.demo_smollm2 import rewards
    from trl_ppo_plus.modeling import load_policy_and_value

    funcs = rewards(a.format_weight)
    common = dict(output_dir=str(out / algo), max_steps=a.steps, per_device_train_batch_size=a.batch,
                  learning_rate=a.lr, max_completion_length=a.max_completion_length, temperature=a.temperature,
                  logging_steps=1, save_strategy="no", report_to="none", seed=seed, disable_tqdm=True,
                  bf16=torch.cuda.is_available())  # fmt: skip
    quantization = None if a.quantization == "none" else a.quantization
    if algo == "ppo":
        model = load_policy_and_value(model_dir, quantization=quantization, gradient_checkpointing=False)
        args = PPOConfig(**common, num_ppo_epochs=1, kl_coef=a.beta, missing_eos_penalty=1.0)
        trainer = PPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=train)
    else:  # the same LoRA on the same base, TRL's trainers as they are
        from trl_ppo_plus.modeling import load_base

        base = load_base(model_dir, quantization=quantization, gradient_checkpointing=False)
        lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
        config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if algo == "grpo" else (RLOOConfig, RLOOTrainer)
        args = config_cls(**common, num_generations=a.group, num_iterations=1, beta=a.beta)
        trainer = trainer_cls(model=base, reward_funcs=funcs, args=args, train_dataset=train, peft_config=lora)
    if a.max_train_seconds:
        trainer.add_callback(stop_after(a.max_train_seconds))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    tokens = next((h["num_tokens"] for h in reversed(trainer.state.log_history) if "num_tokens" in h), None)
    result = evaluate(trainer, held_out, funcs, a)
    result.update(train_seconds=seconds, num_tokens=tokens, steps=trainer.state.global_step,
                  reward_first=_mean_reward(trainer, first=True), reward_last=_mean_reward(trainer, first=False))  # fmt: skip
    return result, seconds


def _mean_reward(trainer, first: bool, n: int = 5) -> float | None:
    """Mean training reward of the first (or last) `n` logged steps."""
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    picked = rewards[:n] if first else rewards[-n:]
    return statistics.mean(picked) if picked else None


def stop_after(seconds: float):
    """A `TrainerCallback` that stops training once `seconds` have passed: a wall-clock cap for runs with a fixed
    time budget. The steps run are reported beside the result, so an arm stopped early shows it."""
    from transformers import TrainerCallback

    class StopAfter(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.deadline = time.perf_counter() + seconds

        def on_step_end(self, args, state, control, **kwargs):
            if time.perf_counter() > self.deadline:
                control.should_training_stop = True

    return StopAfter()


def part_learning(model_dir: str, a) -> dict:
    from trl_ppo_plus.demo_smollm2 import gsm8k_prompts, read_gsm8k

    train = gsm8k_prompts(read_gsm8k(a.data_dir, "train", a.n_train))
    held_out = gsm8k_prompts(read_gsm8k(a.data_dir, "test", a.n_eval))
    results: dict = {algo: [] for algo in a.algos.split(",")}
    with tempfile.TemporaryDirectory() as tmp:
        if "base" in results:  # the instruct model, once, through the same evaluator (greedy: seed-independent)
            results["base"].append(evaluate_base(model_dir, train, held_out, a, tmp))
            print(f"base: {results['base'][-1]}", flush=True)
        for seed in range(a.seeds_from, a.seeds_from + a.seeds):
            for algo in results:
                if algo == "base":
                    continue
                result, seconds = train_arm(algo, model_dir, train, held_out, a, seed, Path(tmp))
                results[algo].append(result)
                print(f"seed {seed} {algo}: {result} ({seconds:.0f} s)", flush=True)
    return results


def evaluate_base(model_dir: str, train, held_out, a, tmp: str) -> dict:
    from trl_ppo_plus import PPOConfig, PPOTrainer
    from trl_ppo_plus.demo_smollm2 import rewards
    from trl_ppo_plus.modeling import load_policy_and_value

    funcs = rewards(a.format_weight)
    probe = PPOTrainer(  # fresh LoRA adapters (B = 0): exactly the instruct model
        model=load_policy_and_value(model_dir, quantization=None if a.quantization == "none" else a.quantization),
        reward_funcs=funcs,
        args=PPOConfig(output_dir=f"{tmp}/probe", report_to="none", max_steps=1),
        train_dataset=train,
    )
    return evaluate(probe, held_out, funcs, a)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    p.add_argument("--data_dir", default=str(SHARED_GSM8K if SHARED_GSM8K.is_dir() else BUNDLED_GSM8K))
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--seeds_from", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (0: torch's default); on shared cores 2 threads decode ~10x slower")  # fmt: skip
    # 1. step time
    p.add_argument("--length", type=int, default=128, help="step_time: completion tokens (min = max)")
    p.add_argument("--timed_steps", type=int, default=3, help="step_time: measured steps per trainer")
    # 2. memory
    p.add_argument("--mem_batch", type=int, default=4)
    # 3. learning
    p.add_argument("--algos", default="base,ppo,grpo,rloo", help="base: the instruct model, evaluated only")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps per arm (one rollout each)")
    p.add_argument("--batch", type=int, default=16, help="completions per step, every arm")
    p.add_argument("--group", type=int, default=4, help="GRPO/RLOO completions per prompt (PPO: 1)")
    p.add_argument("--max_completion_length", type=int, default=256)
    p.add_argument("--eval_max_new_tokens", type=int, default=256)
    p.add_argument("--eval_batch", type=int, default=25, help="held-out prompts per generate call")
    p.add_argument("--max_train_seconds", type=float, default=None, help="stop an arm's training after this long")
    p.add_argument("--n_train", type=int, default=None, help="train questions (default: all)")
    p.add_argument("--n_eval", type=int, default=200)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--beta", type=float, default=0.04, help="KL coefficient for every arm (PPO kl_coef)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--format_weight", type=float, default=0.5)
    p.add_argument("--quantization", default="none", choices=["none", "nf4"], help="the base of the LoRA arms")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--model_dir", default=None, help="a local checkpoint instead of SmolLM2 (tests of the plumbing)")
    p.add_argument("--report", nargs="+", default=None, help="only merge these --json files into one learning table")
    a = p.parse_args()
    if a.report:
        return report(a.report)
    if a.batch % a.group:
        p.error(f"--group {a.group} must divide --batch {a.batch}")
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    from transformers.utils import logging as hf_logging

    from trl_ppo_plus.tiny import smollm2_135m_instruct

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model_dir = a.model_dir or str(smollm2_135m_instruct())
    print(
        f"model: {'SmolLM2-135M-Instruct' if a.model_dir is None else 'local'} ({model_dir}); data: {a.data_dir}; settings: {vars(a)}",
        flush=True,
    )
    results = {"settings": vars(a)}
    start = time.perf_counter()
    for part in a.parts.split(","):
        t0 = time.perf_counter()
        results[part] = {"step_time": part_step_time, "memory": part_memory, "learning": part_learning}[part](
            model_dir, a
        )
        print(f"{part} ({time.perf_counter() - t0:.0f} s): {json.dumps(results[part], indent=1)}", flush=True)
    results["seconds"] = time.perf_counter() - start
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    if "learning" in results:
        print_learning_table(results["learning"])


def _cell(rows: list[dict], key: str, scale: float = 100.0) -> str:
    """The mean over seeds in bold, then each seed's value."""
    values = [r[key] * scale for r in rows if r.get(key) is not None]
    if not values:
        return "–"
    each = " / ".join(f"{v:.1f}" for v in values)
    return f"**{statistics.mean(values):.1f}**" + (f" ({each})" if len(values) > 1 else "")


def print_learning_table(learning: dict) -> None:
    """A markdown table of the learning part: per arm, the mean over seeds and each seed's value."""
    print(
        "\n| arm | runs | held-out accuracy % | format rate % | mean length | steps | training reward, first 5 → last 5 |"
    )
    print("|---|---|---|---|---|---|---|")
    for arm, rows in learning.items():
        steps = " / ".join(str(r["steps"]) for r in rows if "steps" in r) or "–"
        curve = " / ".join(
            f"{r['reward_first']:.3f} → {r['reward_last']:.3f}" for r in rows if r.get("reward_first") is not None
        )
        print(f"| {arm} | {len(rows)} | {_cell(rows, 'accuracy')} | {_cell(rows, 'format_rate')} | "
              f"{_cell(rows, 'mean_length', 1.0)} | {steps} | {curve or '–'} |")  # fmt: skip


def report(paths: list[str]) -> None:
    """Merge the `--json` files of several runs (e.g. one process per arm and seed) into one learning table."""
    learning: dict = {}
    for path in paths:
        for arm, rows in json.loads(Path(path).read_text()).get("learning", {}).items():
            learning.setdefault(arm, []).extend(rows)
    order = ["base", "ppo", "grpo", "rloo"]
    print_learning_table({arm: learning[arm] for arm in sorted(learning, key=lambda a: (order + [a]).index(a))})


if __name__ == "__main__":
    main()

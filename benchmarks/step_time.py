"""Step time of our PPOTrainer vs TRL's GRPOTrainer (the anchor), in one process, on the same tiny model and batch.

Issue #19's targets: median PPO step time ≤ 1.15 × GRPO's without a reference (`beta=0`) and ≤ 1.05 × GRPO's with
one (`beta=0.04`); issue #3's was ≤ 1.3 × GRPO `beta=0`.

Both trainers run on the same locally built random model (`trl_ppo_plus.tiny`, nothing downloaded), the same
prompts, the same reward function, the same number of completions per optimizer step (`--batch`), the same
completion length (`min_new_tokens = max_completion_length = --length`, so no run stops early on EOS), one optimizer
step per rollout (PPO `num_ppo_epochs=1, num_mini_batches=1`; GRPO `num_iterations=1`) and the same learning rate:

- `PPO`: `num_generations=1`, `--batch` prompts; critic = value head on the policy trunk (the default), a frozen
  reference copy (`kl_coef=0.05`, TRL ≤ 1.12's default). One optimizer step per rollout, so PPOTrainer takes its
  fast path (`trl_ppo_plus/fast_path.py`): a rollout = generate, rewards; then the reference forward, one policy forward
  (log-probs + values, which also serve as the rollout's), KL, GAE, backward, optimizer step.
- `PPO kl_coef=0`: the same without a KL penalty, so PPOTrainer builds no reference model: like-for-like with
  GRPO's default below (a rollout = generate, rewards; then one forward/backward/step).
- `GRPO beta=0`: GRPO's default, `num_generations=--group` (`--batch / --group` prompts): no reference model, and
  with `num_iterations=1` no rollout forward at all (generate, rewards; then one forward/backward/step).
- `GRPO beta=0.04`: GRPO with a reference model and KL: the closer like-for-like (one reference forward per rollout).

A `TrainerCallback` times each optimizer step (`on_step_begin` → `on_step_end`, `time.perf_counter`: generation and
rollout happen inside the step in GRPO's design, logging after it). The first `--warmup` steps of each run are
dropped. The four trainers of a repeat are interleaved step by step: each `train()` runs in its own thread, but only
one holds the turn at a time and hands it on after every optimizer step (PPO, PPO, GRPO, GRPO, PPO, ...), so a slow phase
of a shared machine hits all of them alike. `--repeats` fresh sets of trainers (rotated order) follow each other. We
print each variant's median over all kept steps and per repeat; the ratio is the median over all rounds of
(PPO step i / GRPO step i), two steps that ran back to back.

Threads: `--threads 1` by default. On a 2-core machine shared with other work, 2 torch threads made generation ~5x
slower and spiky (one thread waits at every OpenMP barrier for a core another process holds); the comparison is
between trainers, so both get the same single thread.

`--profile` also times, per kept step, the trainer methods a step spends its time in (wrapped by monkeypatching in
this script only): generation (`_generate`), rollout forwards without gradient (PPO's slow path:
`_policy_logps_and_values`, `_reference_logps`; GRPO: `_get_per_token_logps_and_entropies`), rewards
(`_calculate_rewards`), the rest of the rollout, the reference forward inside the loss (PPO's fast path), the rest of
the loss forward (`_compute_loss`), backward (`accelerator.backward`) and the rest (optimizer, clipping).

Usage:
    .venv/bin/python benchmarks/step_time.py                          # ~3 min on 2 CPU cores
    .venv/bin/python benchmarks/step_time.py --profile
    .venv/bin/python benchmarks/step_time.py --hidden 512 --layers 8 --batch 32 --length 64 --repeats 5

Measured with the fast path (2026-11-30, 2 shared CPU cores, load average 4-8 from other jobs, defaults; two
    runs, the first with `--profile`):
    PPO / GRPO beta=0           1.182x, 1.127x  (at the 1.15x line: PPO's reference forward, which GRPO beta=0 skips)
    PPO / GRPO beta=0.04        1.000x, 0.982x  (meets: the same forwards as GRPO)
    PPO kl_coef=0 / GRPO beta=0 1.039x, 0.990x  (meets: the same forwards as GRPO)
    profile, s/step (PPO | GRPO beta=0): generate .618 | .567; reference fwd in the loss .197 | 0; loss fwd .199 |
    .203; backward .553 | .560; optimizer etc. .019 | .018.
    Before the fast path (same day, load 3-8, `--profile`): 1.304x, 1.179x, 1.165x; the rollout's policy+values
    and reference forwards took .266 s and .255 s of a 2.4 s PPO step. Earlier runs: 1.30-1.34x, 1.12-1.19x,
    1.14-1.16x; larger (`--hidden 512 --layers 8 --heads 8 --length 64 --steps 4 --repeats 2`, noisier):
    per-repeat ratios 1.36/1.31 (beta=0), 1.16/1.19 (beta=0.04), 1.28/1.22 (kl_coef=0).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import tempfile
import threading
import time
from collections import defaultdict


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from safetensors import safe_open  # noqa: E402
from transformers import PrinterCallback, TrainerCallback  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from trl_ppo_plus import PPOConfig, PPOTrainer  # noqa: E402
from trl_ppo_plus.tiny import TinySpec, tiny_model_dir  # noqa: E402


PPO, PPO_KL0, GRPO_B0, GRPO_KL = "PPO", "PPO kl_coef=0", "GRPO beta=0", "GRPO beta=0.04"
VARIANTS = (PPO, PPO_KL0, GRPO_B0, GRPO_KL)
TARGETS = {GRPO_B0: 1.15, GRPO_KL: 1.05}  # issue #19: PPO step time ≤ target × the anchor's
# (numerator, anchor): the headline pair first; then the like-for-like pairs with and without a reference model.
RATIOS = ((PPO, GRPO_B0), (PPO, GRPO_KL), (PPO_KL0, GRPO_B0))
# Profile phases, in the order a step runs them. Inclusive times of wrapped methods; "other" rows are remainders, and
# the loss forward's row leaves out the reference forward that PPO's fast path runs inside `_compute_loss`.
PHASES = ("generate", "rollout fwd: policy+values", "rollout fwd: reference", "rollout fwd (GRPO)", "rewards",
          "rollout other", "reference fwd in the loss", "loss fwd (_compute_loss)", "backward",
          "step other (optimizer...)")  # fmt: skip


def length_reward(completions, **kwargs) -> list[float]:
    """A cheap reward (characters / 100), identical for both trainers: the benchmark is about the trainers."""
    return [len(c) / 100 for c in completions]


def prompts(n: int) -> Dataset:
    return Dataset.from_dict({"prompt": [f"Ann has {i} apples and gets {i % 7} more. How many?" for i in range(n)]})


class Baton:
    """Round-robin turns between trainer threads: exactly one trainer runs at any time, one optimizer step a turn."""

    def __init__(self, n: int):
        self.cond, self.turn, self.active = threading.Condition(), 0, list(range(n))

    def wait(self, i: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.turn == i)

    def pass_on(self, i: int, finished: bool = False) -> None:
        with self.cond:
            nxt = self.active[(self.active.index(i) + 1) % len(self.active)]
            if finished:
                self.active.remove(i)
            self.turn = nxt if self.active else -1
            self.cond.notify_all()


class StepTimer(TrainerCallback):
    """Wall-clock time of every optimizer step (`measuring`: a step after the warm-up); hands the turn on after it."""

    def __init__(self, warmup: int, baton: Baton, index: int):
        self.warmup, self.baton, self.index = warmup, baton, index
        self.times, self.measuring, self._t0 = [], False, 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.measuring = state.global_step >= self.warmup
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.measuring:
            self.times.append(time.perf_counter() - self._t0)
        self.measuring = False
        self.baton.pass_on(self.index)
        self.baton.wait(self.index)


class Profiler:
    """Inclusive wall time of wrapped methods, summed over the measured steps."""

    def __init__(self, timer: StepTimer):
        self.timer, self.seconds, self.in_loss = timer, defaultdict(float), False

    def wrap(self, obj, name: str, phase):
        """Replace `obj.name` by a timed version; `phase` is a label or a function of the call's arguments."""
        inner = getattr(obj, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                if self.timer.measuring:
                    label = phase if isinstance(phase, str) else phase()
                    self.seconds[label] += time.perf_counter() - t0

        setattr(obj, name, timed)

    def attach(self, trainer) -> None:
        self.wrap(trainer, "_generate", "generate")
        self.wrap(trainer, "_calculate_rewards", "rewards")
        self.wrap(trainer, "_generate_and_score_completions", "rollout total")
        self.wrap(trainer, "_compute_loss", "loss total")
        compute_loss = trainer._compute_loss

        def in_loss(*args, **kwargs):
            self.in_loss = True
            try:
                return compute_loss(*args, **kwargs)
            finally:
                self.in_loss = False

        trainer._compute_loss = in_loss
        self.wrap(trainer.accelerator, "backward", "backward")
        if isinstance(trainer, PPOTrainer):  # the rollout forwards run without gradient; the loss forward with it
            rollout = lambda: "rollout fwd: policy+values" if not torch.is_grad_enabled() else "(in loss)"  # noqa: E731
            self.wrap(trainer, "_policy_logps_and_values", rollout)
            reference = lambda: "reference fwd in the loss" if self.in_loss else "rollout fwd: reference"  # noqa: E731
            self.wrap(trainer, "_reference_logps", reference)
        else:
            rollout = lambda: "rollout fwd (GRPO)" if not torch.is_grad_enabled() else "(in loss)"  # noqa: E731
            self.wrap(trainer, "_get_per_token_logps_and_entropies", rollout)

    def per_step(self, n_steps: int, step_total: float) -> dict[str, float]:
        """Mean seconds per measured step of each phase; remainders fill the 'other' rows."""
        s = {k: v / max(n_steps, 1) for k, v in self.seconds.items()}
        rollout_known = sum(s.get(k, 0.0) for k in PHASES[:5])
        s["rollout other"] = s.get("rollout total", 0.0) - rollout_known
        s["loss fwd (_compute_loss)"] = s.get("loss total", 0.0) - s.get("reference fwd in the loss", 0.0)
        known = s.get("rollout total", 0.0) + s.get("loss total", 0.0) + s.get("backward", 0.0)
        s["step other (optimizer...)"] = step_total / max(n_steps, 1) - known
        return s


def build_args(variant: str, a, output_dir: str):
    common = dict(
        output_dir=output_dir,
        per_device_train_batch_size=a.batch,  # completions per optimizer step
        gradient_accumulation_steps=1,
        max_completion_length=a.length,
        generation_kwargs={"min_new_tokens": a.length},  # equal lengths: no completion stops on EOS
        temperature=1.0,
        max_steps=a.warmup + a.steps,
        learning_rate=a.lr,
        bf16=torch.cuda.is_available(),
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=a.seed,
    )
    if variant in (PPO, PPO_KL0):  # kl_coef=0 (fixed): PPOTrainer builds no reference model
        kl_coef = 0.0 if variant == PPO_KL0 else 0.05
        return PPOConfig(num_generations=1, num_ppo_epochs=1, num_mini_batches=1, kl_coef=kl_coef, **common)
    beta = 0.0 if variant == GRPO_B0 else 0.04
    return GRPOConfig(num_generations=a.group, num_iterations=1, beta=beta, **common)


def run_interleaved(order: tuple[str, ...], a, model_path: str, profile: bool) -> dict[str, tuple]:
    """Train every variant in `order` for `warmup + steps` optimizer steps, one step each in turn.

    Each trainer runs `train()` in its own thread, but a `Baton` lets only one run at a time, so a slow phase of a
    shared machine hits all variants alike. Returns {variant: (kept step times, profile per step or None)}.
    """
    baton, results, errors = Baton(len(order)), {}, []
    with tempfile.TemporaryDirectory() as out:
        trainers, timers, profilers = [], [], []
        for i, variant in enumerate(order):
            args = build_args(variant, a, f"{out}/{i}")
            cls = PPOTrainer if variant in (PPO, PPO_KL0) else GRPOTrainer
            dataset = prompts(a.batch * (a.warmup + a.steps))
            trainer = cls(model=model_path, reward_funcs=length_reward, args=args, train_dataset=dataset)
            trainer.remove_callback(PrinterCallback)  # no per-step log dicts on stdout
            timer = StepTimer(a.warmup, baton, i)
            trainer.add_callback(timer)
            profiler = Profiler(timer)
            if profile:
                profiler.attach(trainer)
            trainers.append(trainer), timers.append(timer), profilers.append(profiler)

        def train(i: int) -> None:
            if a.threads:
                torch.set_num_threads(a.threads)  # intra-op threads are set per calling thread
            baton.wait(i)
            try:
                trainers[i].train()
            except BaseException as err:  # re-raised in the main thread
                errors.append(err)
            finally:
                baton.pass_on(i, finished=True)

        threads = [threading.Thread(target=train, args=(i,)) for i in range(len(order))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    for variant, timer, profiler in zip(order, timers, profilers):
        prof = profiler.per_step(len(timer.times), sum(timer.times)) if profile else None
        results[variant] = (timer.times, prof)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=10, help="measured optimizer steps per run (after the warm-up)")
    p.add_argument("--warmup", type=int, default=1, help="steps dropped at the start of each run")
    p.add_argument("--repeats", type=int, default=3, help="fresh sets of trainers, one after the other")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=512, help="tokenizer vocabulary (BPE on the tiny corpus)")
    p.add_argument("--batch", type=int, default=16, help="completions per optimizer step, for every variant")
    p.add_argument("--group", type=int, default=4, help="GRPO num_generations (divides --batch)")
    p.add_argument("--length", type=int, default=32, help="completion tokens (min = max)")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    p.add_argument("--profile", action="store_true", help="print where each variant's step time goes")
    a = p.parse_args()
    if a.batch % a.group:
        p.error(f"--group {a.group} must divide --batch {a.batch}")
    if a.threads:  # on a shared machine, 2+ threads stall whenever another process takes a core (5x on 2 cores)
        torch.set_num_threads(a.threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    spec = TinySpec(
        hidden_size=a.hidden,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        num_key_value_heads=max(1, a.heads // 2),
        intermediate_size=4 * a.hidden,
        vocab_size=a.vocab,
        seed=a.seed,
    )
    model_path = str(tiny_model_dir(spec))
    with safe_open(f"{model_path}/model.safetensors", "pt") as f:
        n_params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    with tempfile.TemporaryDirectory() as out:  # the settings both trainers inherit from TRL's defaults
        ppo_args, grpo_args = build_args(PPO, a, out), build_args(GRPO_B0, a, out)
    inherited = " ".join(
        f"{k}={getattr(ppo_args, k)}/{getattr(grpo_args, k)}" for k in ("gradient_checkpointing", "bf16", "loss_type")
    )
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} torch threads)"
    print(
        f"config: qwen2 {n_params / 1e6:.1f}M params, hidden={a.hidden} layers={a.layers} heads={a.heads} vocab={a.vocab}; batch={a.batch} "
        f"completions/step (GRPO: {a.batch // a.group} prompts x {a.group}; PPO: {a.batch} x 1); length={a.length} "
        f"tokens; steps={a.steps} (+{a.warmup} warm-up) x repeats={a.repeats}; lr={a.lr}; seed={a.seed}; {device}; "
        f"PPO/GRPO {inherited}",
        flush=True,
    )

    runs: dict[str, list[list[float]]] = {v: [] for v in VARIANTS}  # kept step times, one list per repeat
    profiles: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    t_start = time.perf_counter()
    for r in range(a.repeats):
        order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]  # rotate, so no variant always leads
        for variant, (kept, prof) in run_interleaved(order, a, model_path, a.profile).items():
            runs[variant].append(kept)
            if prof is not None:
                profiles[variant].append(prof)
            steps = ", ".join(f"{t:.2f}" for t in kept)
            print(
                f"  repeat {r + 1} {variant:<14} median {statistics.median(kept):.3f} s  (steps: {steps})", flush=True
            )

    times = {v: [t for kept in runs[v] for t in kept] for v in VARIANTS}
    med = {v: statistics.median(times[v]) for v in VARIANTS}
    print(f"\nmedian step time over {a.repeats} x {a.steps} steps (wall {time.perf_counter() - t_start:.0f}s):")
    for v in VARIANTS:
        spread = ", ".join(f"{statistics.median(kept):.3f}" for kept in runs[v])
        print(f"  {v:<14} {med[v]:.3f} s   (repeat medians: {spread})")
    # Headline: the median of paired per-step ratios. Step i of every variant ran back to back in the same round, so
    # a slow phase of the machine (another process on a core) cancels in the pair. Per-repeat medians do not cancel
    # it when a repeat is half fast, half slow (measured: per-repeat ratios 1.29-1.53 where the paired median gave
    # 1.34). The fastest-step ratio is the least-contended estimate.
    print("PPO / GRPO: median of paired per-step ratios, issue #19's target [per repeat; fastest steps]")
    for num, anchor in RATIOS:
        pairs = [p / g for kp, kg in zip(runs[num], runs[anchor]) for p, g in zip(kp, kg)]
        ratio = statistics.median(pairs)
        per_repeat = ", ".join(
            f"{statistics.median(kp) / statistics.median(kg):.3f}" for kp, kg in zip(runs[num], runs[anchor])
        )
        fastest = min(times[num]) / min(times[anchor])
        verdict = "meets" if ratio <= TARGETS[anchor] else "misses"
        target = f"<= {TARGETS[anchor]}x"
        print(f"  {num + ' / ' + anchor:<31} {ratio:.3f}x  {verdict:<6} {target}  [{per_repeat}; {fastest:.3f}]")

    if a.profile:
        print("\nprofile: seconds per measured step (mean over runs; inclusive times of the wrapped methods)")
        print(f"  {'phase':<28}" + "".join(f"{v:>15}" for v in VARIANTS))
        for phase in PHASES:
            row = [statistics.mean(pr.get(phase, 0.0) for pr in profiles[v]) for v in VARIANTS]
            print(f"  {phase:<28}" + "".join(f"{x:>15.3f}" for x in row))
        totals = [statistics.mean(times[v]) for v in VARIANTS]
        print(f"  {'step (mean)':<28}" + "".join(f"{x:>15.3f}" for x in totals))
    print("\nNote: a shared machine is noisy: on 2 shared cores, runs of the defaults gave ratios within about ±0.04.")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()

"""Benchmark: our math reward against `trl.rewards.accuracy_reward` on the same completions, in one run.

Usage:
    .venv/bin/python benchmarks/math_reward.py [--n 2000] [--batch_size 256] [--seed 0] [--gsm8k PATH]

Two parts, each scored in the same batches by both rewards (TRL's gets chat-formatted completions, the only kind it
takes):
1. Synthetic completions, generated deterministically (a mix of plain numbers and LaTeX: fractions, radicals,
   multiples of pi, intervals, sets, polynomials; about 60% correct, the rest near misses). It prints the throughput
   of each, their ratio, and the agreement on the cases that both parse (gold and answer).
   Targets: ratio >= 2, agreement >= 99%.
2. Real GSM8K worked answers (`../shared/data/gsm8k/test.jsonl.gz` beside the repository, else the bundled
   `tests/data/gsm8k/test_sample.jsonl`): each solution as written (`#### 18`), ending in `A: 18` (OpenAI's GSM8K
   model solutions) and in `Answer: 18`, half against their own gold and half against the next problem's. It prints
   the throughput of each reward, their ratio, the accuracy of each against those labels, and how many pairs went
   to math-verify (none should: a numeric answer never reaches sympy).
   Targets: >= 20,000 completions/s, ratio >= 10, our accuracy 100%.
"""

import argparse
import gzip
import json
import math
import random
import re
import time
from fractions import Fraction
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
GSM8K_FULL = ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl.gz"
GSM8K_SAMPLE = ROOT / "tests" / "data" / "gsm8k" / "test_sample.jsonl"


def _number(rng):
    value = rng.randint(-50, 20_000)
    correct = f"{value:,}" if value >= 1_000 and rng.random() < 0.3 else str(value)
    wrong = str(rng.choice([value + 1, value - 1, value * 10, value + 100]))
    return str(value), correct, wrong


def _decimal(rng):
    value = Fraction(rng.randint(1, 99_999), 100)
    text = f"{float(value):.2f}".rstrip("0").rstrip(".")
    return text, text, f"{float(value) * 10:.2f}".rstrip("0").rstrip(".")


def _fraction(rng):
    p, q = rng.randint(1, 30), rng.randint(2, 30)
    if math.gcd(p, q) != 1 or p == q:
        p, q = 1, q + 1
    k = rng.randint(2, 4)
    correct = rf"\frac{{{p}}}{{{q}}}" if rng.random() < 0.5 else rf"\dfrac{{{k * p}}}{{{k * q}}}"
    return rf"\frac{{{p}}}{{{q}}}", correct, rng.choice([rf"\frac{{{q}}}{{{p}}}", rf"\frac{{{p + 1}}}{{{q}}}"])


def _radical(rng):
    k, m = rng.randint(2, 9), rng.choice([2, 3, 5, 6, 7, 10, 11, 13])
    return rf"{k}\sqrt{{{m}}}", rf"\sqrt{{{k * k * m}}}", rf"{k}\sqrt{{{m + 1}}}"


def _pi(rng):
    a, b = rng.randint(1, 9), rng.randint(2, 9)
    return rf"\frac{{{a}\pi}}{{{b}}}", rf"\frac{{{a}}}{{{b}}}\pi", rf"\frac{{{a + b}}}{{{b}}}\pi"


def _interval(rng):
    a = rng.randint(-20, 10)
    b = a + rng.randint(1, 20)
    return f"[{a}, {b})", f"[{a},{b})", f"({a}, {b})"


def _set(rng):
    items = rng.sample(range(-9, 20), 3)
    shuffled = rng.sample(items, 3)
    wrong = [*items[:2], items[2] + 1]
    return (
        rf"\{{{', '.join(map(str, items))}\}}",
        rf"\{{{','.join(map(str, shuffled))}\}}",
        rf"\{{{', '.join(map(str, wrong))}\}}",
    )


def _polynomial(rng):
    a = rng.randint(1, 9)
    return f"(x+{a})^2", f"x^2+{2 * a}x+{a * a}", f"x^2+{a}x+{a * a}"


KINDS = [(_number, 0.35), (_decimal, 0.2), (_fraction, 0.15), (_radical, 0.08), (_pi, 0.07)]
KINDS += [(_interval, 0.05), (_set, 0.05), (_polynomial, 0.05)]
TEMPLATES = [
    "Let me work through this step by step.\nAfter simplifying, the final answer is $\\boxed{{{}}}$.",
    "We compute carefully and get \\boxed{{{}}}.",
    "Final Answer: The final answer is ${}$. I hope it is correct.",
    "Putting it together: $\\boxed{{{}}}$",
    "First, 12 + 30 = 42 and 42 / 6 = 7, so we try $x = 7$; that fails, so we go on.\n"
    "Checking each case gives \\[ \\boxed{{{}}} \\]",
    "Step 1: compute the total.\nStep 2: simplify.\n#### {}",  # GSM8K style: TRL's parser does not read it
]


PLAIN = {_number, _decimal}


def make_cases(n: int, seed: int, bare_gold: bool = False) -> tuple[list[str], list[str], list[str]]:
    """n (completion, solution, kind) triples, the same for a given seed. LaTeX golds are written `$...$`, as TRL's
    `accuracy_reward` expects; `bare_gold` leaves them bare (`9\\sqrt{11}`), which TRL misreads (as 9)."""
    rng = random.Random(seed)
    makers, weights = zip(*KINDS)
    completions, solutions, kinds = [], [], []
    for _ in range(n):
        maker = rng.choices(makers, weights)[0]
        gold, correct, wrong = maker(rng)
        answer = correct if rng.random() < 0.6 else wrong
        completions.append(rng.choice(TEMPLATES).format(answer))
        solutions.append(gold if bare_gold or maker in PLAIN else f"${gold}$")
        kinds.append(maker.__name__.lstrip("_"))
    return completions, solutions, kinds


def gsm8k_cases(path: Path) -> tuple[list[str], list[str], list[float]]:
    """GSM8K worked answers as completions in three answer formats, against their own gold (label 1.0) or the next
    problem's (label 0.0 unless the two answers happen to be equal)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        solutions = [json.loads(line)["answer"] for line in f if line.strip()]
    answers = [s.rsplit("####", 1)[1].strip().replace(",", "") for s in solutions]
    completions, golds, labels = [], [], []
    for marker in ("#### ", "A: ", "Answer: "):
        for i, solution in enumerate(solutions):
            j = i if i % 2 == 0 else (i + 1) % len(solutions)
            completions.append(re.sub(r"####\s*(.*)$", lambda m, marker=marker: marker + m.group(1), solution))
            golds.append(solutions[j])
            labels.append(float(Fraction(answers[i]) == Fraction(answers[j])))
    return completions, golds, labels


def score(reward_fn, completions, solutions, batch_size):
    """Rewards and per-sample logged columns, batch by batch as a trainer would call it; and the seconds taken."""
    rewards, logged = [], {}

    def log_extra(column, values):
        logged.setdefault(column, []).extend(values)

    start = time.perf_counter()
    for i in range(0, len(completions), batch_size):
        rewards += reward_fn(completions[i : i + batch_size], solutions[i : i + batch_size], log_extra=log_extra)
    return rewards, logged, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="number of completions")
    parser.add_argument("--batch_size", type=int, default=256, help="completions per reward call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bare_gold", action="store_true", help="LaTeX golds without $...$ (TRL misreads them)")
    parser.add_argument("--gsm8k", type=Path, default=None, help="a GSM8K jsonl(.gz) file; default: see above")
    args = parser.parse_args()

    import logging

    from trl.rewards import accuracy_reward

    from trl_ppo_plus.rewards import math as math_reward
    from trl_ppo_plus.rewards.math import make_math_reward
    from trl_ppo_plus.rewards.math_verify_pool import get_shared_pool

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    completions, solutions, kinds = make_cases(args.n, args.seed, args.bare_gold)
    chats = [[{"role": "assistant", "content": c}] for c in completions]

    start = time.perf_counter()
    get_shared_pool().warm()  # once per process; reported, not part of the throughput
    warm_s = time.perf_counter() - start
    ours, ours_log, ours_s = score(make_math_reward(), completions, solutions, args.batch_size)
    trl, trl_log, trl_s = score(accuracy_reward, chats, solutions, args.batch_size)

    both = [
        i
        for i in range(args.n)
        if ours[i] is not None
        and ours_log["extracted_answer"][i] != "[none]"
        and trl[i] is not None
        and trl_log["answer_parsed"][i] != "[unparseable]"
    ]
    agree = sum(ours[i] == trl[i] for i in both)
    both_set = set(both)
    print(f"completions: {args.n} (seed {args.seed}, batch size {args.batch_size}); pool start {warm_s:.2f}s")
    print(f"trl_ppo_plus math_accuracy_reward: {args.n / ours_s:10.1f} completions/s ({ours_s:.2f}s)")
    print(f"trl.rewards.accuracy_reward:       {args.n / trl_s:10.1f} completions/s ({trl_s:.2f}s)")
    print(f"throughput ratio (ours / trl):     {trl_s / ours_s:10.2f}x  (target >= 2x)")
    print(f"both parse: {len(both)}/{args.n}; agreement: {agree}/{len(both)} = {agree / max(1, len(both)):.2%}")
    print(f"mean reward: ours {sum(r or 0 for r in ours) / args.n:.3f}, trl {sum(r or 0 for r in trl) / args.n:.3f}")
    for kind in sorted(set(kinds)):
        rows = [i for i in range(args.n) if kinds[i] == kind]
        parsed = [i for i in rows if i in both_set]
        agreed = sum(ours[i] == trl[i] for i in parsed)
        print(f"  {kind:<11} n={len(rows):4d}  both parse {len(parsed):4d}  agree {agreed:4d}")
    for i in [i for i in both if ours[i] != trl[i]][:10]:
        print(f"  disagree: ours={ours[i]} trl={trl[i]} gold={solutions[i]!r} completion={completions[i]!r}")

    path = args.gsm8k or (GSM8K_FULL if GSM8K_FULL.exists() else GSM8K_SAMPLE)
    completions, solutions, labels = gsm8k_cases(path)
    n = len(completions)
    chats = [[{"role": "assistant", "content": c}] for c in completions]
    symbolic_before = len(math_reward._cache)  # every pair math-verify checks is remembered there
    ours, _, ours_s = score(make_math_reward(), completions, solutions, args.batch_size)
    to_sympy = len(math_reward._cache) - symbolic_before
    trl, _, trl_s = score(accuracy_reward, chats, solutions, args.batch_size)
    print(f"\nGSM8K worked answers: {n} completions ('#### n', 'A: n', 'Answer: n') from {path}")
    print(f"trl_ppo_plus math_accuracy_reward: {n / ours_s:10.1f} completions/s ({ours_s:.2f}s)  (target >= 20,000)")
    print(f"trl.rewards.accuracy_reward:       {n / trl_s:10.1f} completions/s ({trl_s:.2f}s)")
    print(f"throughput ratio (ours / trl):     {trl_s / ours_s:10.2f}x  (target >= 10x)")
    print(f"pairs sent to math-verify: {to_sympy}")
    third = n // 3
    for k, marker in enumerate(("#### n", "A: n", "Answer: n")):
        rows = range(k * third, (k + 1) * third)
        ours_ok = sum(ours[i] == labels[i] for i in rows)
        trl_ok = sum(trl[i] == labels[i] for i in rows)
        print(f"  {marker:<10} agrees with the labels: ours {ours_ok / third:7.2%}, trl {trl_ok / third:7.2%}")


if __name__ == "__main__":
    main()

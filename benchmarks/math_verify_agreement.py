"""Benchmark: agreement of our math reward with Math-Verify's own test suite (its (gold, prediction, expected) cases).

Usage:
    .venv/bin/python benchmarks/math_verify_agreement.py PATH [--verbose]

PATH is a checkout of huggingface/Math-Verify, or a bare git mirror of it (`git show HEAD:tests/...` is used then).
The cases are read at run time from its `tests/test_all.py` and `tests/test_boxed.py`: every
`@pytest.mark.parametrize("gold, pred, expected", [...])` table (commented-out cases are skipped, as in their suite).
Their code never enters this repository. Each case is scored twice, on the same inputs:
    - `verify_answer(pred, gold)`: the answer in the prediction against the gold (strict extraction);
    - the default reward, `math_accuracy_reward([pred], [gold])`.
It prints both agreements (target >= 90%), and the one of `make_math_reward(strict=False)`, and every
disagreement with the extracted answers. `--extra` scores their tables of real model outputs instead
(`test_numina_cases.py`, `test_open_thoughts.py`), for information. Some tables of theirs
pass a rounding `precision`: those cases are scored with `rel_tol=10**-precision` (the default reward otherwise), and
the agreement with exact numbers on every case (the default reward as it ships) is printed too. Cases that pass
`allow_set_relation_comp` are scored with our defaults; the disagreements they cause are listed like the others.
"""

import argparse
import ast
import math
import subprocess
import sys
from pathlib import Path


FILES = ("tests/test_all.py", "tests/test_boxed.py")
EXTRA_FILES = ("tests/test_numina_cases.py", "tests/test_open_thoughts.py")  # real model outputs; `--extra`


def read_source(root: Path, relative: str) -> str:
    """A file of the Math-Verify checkout, or of its bare mirror at HEAD."""
    if (root / relative).is_file():
        return (root / relative).read_text()
    out = subprocess.run(["git", "--git-dir", str(root), "show", f"HEAD:{relative}"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{relative} is neither under {root} nor in a git mirror there: {out.stderr.strip()}")
    return out.stdout


def parametrized_cases(source: str, filename: str) -> list[dict]:
    """Rows of every parametrize table whose argument names include gold, pred and expected."""
    cases = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            if not (isinstance(decorator, ast.Call) and getattr(decorator.func, "attr", "") == "parametrize"):
                continue
            names = [n.strip() for n in ast.literal_eval(decorator.args[0]).split(",")]
            if not {"gold", "pred", "expected"} <= set(names):
                continue
            # Literals, plus one f-string over `math.sqrt` in test_float_precision: evaluated without builtins.
            table_precision = [  # a precision the test function passes for its whole table (test_float_precision)
                kw.value.value
                for call in ast.walk(node)
                if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "compare_strings"
                for kw in call.keywords
                if kw.arg == "precision" and isinstance(kw.value, ast.Constant)
            ]
            rows = eval(
                compile(ast.Expression(decorator.args[1]), filename, "eval"), {"__builtins__": {}, "math": math}
            )  # noqa: S307
            for row in rows:
                case = dict(zip(names, row, strict=True))
                if table_precision and "precision" not in case:
                    case["precision"] = table_precision[0]
                case["test"] = f"{Path(filename).stem}::{node.name}"
                cases.append(case)
    return cases


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help="a Math-Verify checkout or bare git mirror")
    parser.add_argument("--verbose", action="store_true", help="print the extracted answers of every case")
    parser.add_argument("--extra", action="store_true", help=f"score {' and '.join(EXTRA_FILES)} instead")
    args = parser.parse_args()
    files = EXTRA_FILES if args.extra else FILES

    from trl_ppo_plus.rewards.math import (
        completion_text,
        gold_answer,
        make_math_reward,
        math_accuracy_reward,
        verify_answer,
    )
    from trl_ppo_plus.rewards.math_extract import extract_answer

    cases = [case for f in files for case in parametrized_cases(read_source(args.path, f), f)]
    # Their `precision` rounds floats to that many decimals; our equivalent is a relative tolerance.
    tolerances = [10.0 ** -c["precision"] if "precision" in c else 0.0 for c in cases]
    by_verify = [
        verify_answer(c["pred"], c["gold"], rel_tol=tol) == bool(c["expected"]) for c, tol in zip(cases, tolerances)
    ]
    rewards = [
        (math_accuracy_reward if tol == 0 else make_math_reward(rel_tol=tol))([c["pred"]], [c["gold"]])[0]
        for c, tol in zip(cases, tolerances)
    ]
    by_reward = [r == float(c["expected"]) for r, c in zip(rewards, cases, strict=True)]
    exact = [math_accuracy_reward([c["pred"]], [c["gold"]])[0] == float(c["expected"]) for c in cases]
    lenient = make_math_reward(strict=False)([c["pred"] for c in cases], [c["gold"] for c in cases])
    by_lenient = [r == float(c["expected"]) for r, c in zip(lenient, cases, strict=True)]
    n = len(cases)
    print(f"Math-Verify cases: {n} from {', '.join(files)} at {args.path}")
    print(f"agreement through verify_answer:        {sum(by_verify)}/{n} = {sum(by_verify) / n:.1%}  (target >= 90%)")
    print(f"agreement through math_accuracy_reward: {sum(by_reward)}/{n} = {sum(by_reward) / n:.1%}  (target >= 90%)")
    print(
        f"  the same, exact numbers on every case:  {sum(exact)}/{n} = {sum(exact) / n:.1%}  (their precision ignored)"
    )
    print(f"agreement through strict=False:         {sum(by_lenient)}/{n} = {sum(by_lenient) / n:.1%}")
    for i, case in enumerate(cases):
        if args.verbose or not (by_verify[i] and by_reward[i]):
            pred = extract_answer(completion_text(case["pred"]))
            extras = {k: v for k, v in case.items() if k not in ("gold", "pred", "expected", "test")}
            print(
                f"- #{i} {case['test']} expected={case['expected']} verify_ok={by_verify[i]} reward={rewards[i]} "
                f"lenient={lenient[i]}"
                f"{' ' + str(extras) if extras else ''}\n    gold {gold_answer(case['gold'])!r} <- {case['gold'][:100]!r}"
                f"\n    pred {pred!r} <- {case['pred'][-100:]!r}"
            )


if __name__ == "__main__":
    main()

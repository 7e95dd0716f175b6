"""The demo's synthetic verifiable task: one-step arithmetic word problems whose answers end in `#### N`.

    "Cara has 7 shells and finds 5 more. How many shells does Cara have now?"  →  "7 + 5 = 12. #### 12"

Problems are drawn deterministically from a seed. The held-out split is worded with names and objects that never
appear in training.
"""

from __future__ import annotations

import random

from datasets import Dataset


NAMES = ["Ann", "Bob", "Cara", "Dan", "Eve", "Finn", "Gus", "Hana"]
ITEMS = ["apples", "books", "coins", "eggs", "pens", "stamps", "cards", "shells"]
TEMPLATES = {
    "+": "{who} has {a} {what} and gets {b} more. How many {what} does {who} have now?",
    "-": "{who} has {a} {what} and gives away {b}. How many {what} does {who} have now?",
}


def problem(a: int, b: int, op: str, who: str, what: str) -> dict:
    answer = a + b if op == "+" else a - b
    return {
        "prompt": TEMPLATES[op].format(who=who, a=a, b=b, what=what) + "\n",
        "completion": f"{a} {op} {b} = {answer}. #### {answer}",
        "solution": str(answer),
    }


def make_splits(seed: int = 0, max_operand: int = 9, n_eval: int = 64) -> tuple[Dataset, Dataset]:
    """(train, held_out) datasets with `prompt`, `completion` (the SFT target) and `solution` columns.

    Training problems cover every (a, b, op) with a, b ≤ `max_operand` (a ≥ b for subtraction, so answers stay
    non-negative), worded with the first six names and objects. The held-out problems are worded with the last two
    names and objects, which never appear in training: the policy must carry its arithmetic over to new wording.
    """
    rng = random.Random(seed)
    triples = [
        (a, b, op)
        for op in "+-"
        for a in range(max_operand + 1)
        for b in range(max_operand + 1)
        if op == "+" or a >= b
    ]
    train = [problem(a, b, op, rng.choice(NAMES[:6]), rng.choice(ITEMS[:6])) for a, b, op in triples]
    rng.shuffle(train)
    held_out = [problem(*rng.choice(triples), rng.choice(NAMES[6:]), rng.choice(ITEMS[6:])) for _ in range(n_eval)]
    return Dataset.from_list(train), Dataset.from_list(held_out)


def corpus(seed: int = 0, max_operand: int = 9) -> list[str]:
    """Texts to train the demo tokenizer on (the task's own vocabulary)."""
    train, held_out = make_splits(seed, max_operand)
    rows = list(train) + list(held_out)
    return [row["prompt"] + row["completion"] for row in rows]

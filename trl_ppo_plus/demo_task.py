"""The demo's synthetic verifiable task: one-step arithmetic word problems whose answers end in `#### N`.

    "Cara has 7 shells and finds 5 more. How many shells does Cara have now?"  →  "7 + 5 = 12. #### 12"

Problems are drawn deterministically from a seed. The held-out split is worded with names and objects that never
appear in training.
"""

from __future__ import annotations

import random

from datasets import Dataset


# Training problems use the first `N_TRAIN_WORDS` names and objects; the held-out problems only the rest. Many training
# names make the policy read the numbers rather than memorise whole sentences, so what it learns carries over.
NAMES = [
    "Ann",
    "Bob",
    "Cara",
    "Dan",
    "Eve",
    "Finn",
    "Ivy",
    "Jon",
    "Kim",
    "Leo",
    "Mia",
    "Ned",
    "Olga",
    "Pia",
    "Ray",
    "Sam",
]
NAMES += ["Gus", "Hana", "Tess", "Uma"]
ITEMS = ["apples", "books", "coins", "eggs", "pens", "stamps", "beads", "cups", "dolls", "flags", "keys", "maps"]
ITEMS += ["nuts", "rings", "socks", "toys", "cards", "shells", "kites", "plums"]
N_TRAIN_WORDS = 16
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


def triples(max_operand: int = 9) -> list[tuple[int, int, str]]:
    """Every (a, b, op) with a, b ≤ `max_operand` (a ≥ b for subtraction, so answers stay non-negative)."""
    return [
        (a, b, op)
        for op in "+-"
        for a in range(max_operand + 1)
        for b in range(max_operand + 1)
        if op == "+" or a >= b
    ]


def make_splits(seed: int = 0, max_operand: int = 9, n_eval: int = 128, wordings: int = 1) -> tuple[Dataset, Dataset]:
    """(train, held_out) datasets with `prompt`, `completion` (the SFT target) and `solution` columns.

    Training problems cover every (a, b, op) `wordings` times, each worded with a random choice of the first `N_TRAIN_WORDS`
    names and objects. The held-out problems are `n_eval` distinct (a, b, op) (with replacement once they run out)
    worded with the remaining names and objects, which never appear in training: the policy must carry its arithmetic
    over to new wording.
    """
    rng = random.Random(seed)
    facts = triples(max_operand)
    train_names, train_items = NAMES[:N_TRAIN_WORDS], ITEMS[:N_TRAIN_WORDS]
    train = [
        problem(a, b, op, rng.choice(train_names), rng.choice(train_items))
        for _ in range(wordings)
        for a, b, op in facts
    ]
    rng.shuffle(train)
    picked = []
    while len(picked) < n_eval:
        picked += rng.sample(facts, min(len(facts), n_eval - len(picked)))
    held_out = [
        problem(a, b, op, rng.choice(NAMES[N_TRAIN_WORDS:]), rng.choice(ITEMS[N_TRAIN_WORDS:])) for a, b, op in picked
    ]
    return Dataset.from_list(train), Dataset.from_list(held_out)


def corpus(seed: int = 0, max_operand: int = 9) -> list[str]:
    """Texts to train the demo tokenizer on (the task's own vocabulary)."""
    train, held_out = make_splits(seed, max_operand)
    rows = list(train) + list(held_out)
    return [row["prompt"] + row["completion"] for row in rows]

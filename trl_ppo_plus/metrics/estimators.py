"""Sampling-based accuracy estimators: pass@k and maj@k. Pure functions, no trainer state.

>>> pass_at_k(n=5, c=2, k=2)   # 1 - C(3, 2) / C(5, 2) = 1 - 3/10
0.7
>>> maj_at_k(["4", "5", "4", None], [True, False, True, False])
True
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of `k` samples drawn without replacement from `n` is correct, given `c` correct.

    The unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on Code", eq. 1):
    pass@k = 1 - C(n - c, k) / C(n, k). Computed as a running product, which stays exact-ish for large `n` where the
    binomials overflow floats.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:  # every draw of k contains a correct sample
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)   (Chen et al. 2021, Fig. 3)
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def mean_pass_at_k(num_samples: Sequence[int], num_correct: Sequence[int], k: int) -> float:
    """pass@k averaged over problems; problem `i` has `num_samples[i]` samples of which `num_correct[i]` are correct."""
    assert len(num_samples) == len(num_correct) > 0, "one (n, c) pair per problem"
    return sum(pass_at_k(n, c, k) for n, c in zip(num_samples, num_correct)) / len(num_samples)


def majority_answer(answers: Sequence[Hashable | None]) -> Hashable | None:
    """The most frequent answer; ties go to the answer seen first. `None` and empty strings do not vote."""
    votes = Counter(a for a in answers if a is not None and a != "")
    if not votes:
        return None
    return votes.most_common(1)[0][0]  # Counter keeps first-seen order among equal counts


def maj_at_k(answers: Sequence[Hashable | None], correct: Sequence[bool]) -> bool:
    """Majority vote (self-consistency, Wang et al. 2022) over `k = len(answers)` samples of one problem.

    The problem counts as solved when the most frequent extracted answer is correct. The correctness of an answer is
    read from the first sample that produced it. No extractable answer at all counts as wrong.
    """
    assert len(answers) == len(correct), "one correctness flag per answer"
    winner = majority_answer(answers)
    if winner is None:
        return False
    return bool(correct[list(answers).index(winner)])


def mean_maj_at_k(answers: Sequence[Sequence[Hashable | None]], correct: Sequence[Sequence[bool]]) -> float:
    """maj@k averaged over problems (one list of answers and one list of correctness flags per problem)."""
    assert len(answers) == len(correct) > 0, "one list of answers per problem"
    return sum(maj_at_k(a, c) for a, c in zip(answers, correct)) / len(answers)

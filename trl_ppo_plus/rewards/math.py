"""Verifiable math rewards with TRL's reward-function signature: right, fast, and never stalling training.

    reward = math_accuracy_reward(completions, solution)  # list[float | None], one per completion

Per completion:
    1. Read the text (a plain string, or the last message of a chat-formatted completion).
    2. Extract the final answer, and the gold answer from `solution` (`extract_answer`: `<answer>` tags, boxed,
       `####`, "the answer is" / `Answer:` / `A:` and their French, Chinese, Spanish and German forms, a bare
       answer, or a closing math span; see `math_extract.py`).
    3. If both are plain numbers, or radicals, multiples of pi, sets, intervals or tuples of those, compare them
       exactly in-process (`fractions.Fraction`, `math_exact.py`): the common case, no sympy, no pool. A numeric
       GSM8K answer never leaves this step (tens of thousands of completions per second).
    4. Otherwise check them with math-verify in a worker process with a hard deadline (`math_verify_pool.py`),
       the whole batch in parallel, with its normalization (units, malformed LaTeX such as `\\frac34` or
       `10\\sqrt3`) on both sides; identical (answer, gold) pairs are checked once and remembered.
Scores: 1.0 correct, 0.0 wrong / answerless / timed out, None when the gold has no readable answer or math-verify
cannot parse it (TRL then skips this reward for the sample; the first such gold is logged).
"""

import functools
import logging
import threading
from collections import OrderedDict

from .math_exact import canonical, exact_equal, numbers_equal, parse_number
from .math_extract import extract_answer, last_boxed
from .math_verify_pool import TIMED_OUT, get_shared_pool


__all__ = [
    "FormatReward",
    "MathAccuracyReward",
    "extract_answer",
    "format_reward",
    "make_math_reward",
    "math_accuracy_reward",
    "verify_answer",
]

logger = logging.getLogger(__name__)
_warned_unreadable_gold = False
_CACHE_SIZE = 50_000  # symbolic verdicts kept per process; GRPO repeats the same gold for every generation
_cache: OrderedDict = OrderedDict()
_cache_lock = threading.Lock()


def completion_text(completion) -> str:
    """The text of a completion: a string, or a list of chat messages (the last assistant message's content)."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    messages = [m for m in completion if isinstance(m, dict)]
    assistant = [m for m in messages if m.get("role", "assistant") == "assistant"] or messages
    if not assistant:
        return ""
    content = assistant[-1].get("content") or ""
    if isinstance(content, list):  # multimodal-style parts: [{"type": "text", "text": ...}]
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def gold_answer(solution) -> str | None:
    """The gold answer of a `solution`: a number, a GSM8K answer (`... #### 42`) or LaTeX (`\\boxed{}`, `$...$`)."""
    if solution is None or isinstance(solution, bool):
        return None
    if isinstance(solution, int | float):
        return repr(solution) if isinstance(solution, float) else str(solution)
    return _gold_text_answer(str(solution).strip())


@functools.lru_cache(maxsize=1 << 12)  # GRPO scores every generation of a prompt against the same gold
def _gold_text_answer(text: str) -> str | None:
    answer = extract_answer(text, strict=True)
    if answer is None and text:
        _warn_unreadable_gold(text)
    return answer


def _warn_unreadable_gold(text: str) -> None:
    """Log once per process that a gold solution has no answer we can read (those samples score None)."""
    global _warned_unreadable_gold
    if not _warned_unreadable_gold:
        _warned_unreadable_gold = True
        logger.warning(
            "A gold solution has no readable answer (no \\boxed{}, `#### N`, answer marker, or bare answer), so "
            "its samples score None and TRL skips this reward for them; e.g. %r. Logged once.",
            text[:200],
        )


def _symbolic(items: list[tuple[str | None, str]], timeout: float) -> list:
    """(gold_ok, correct) or TIMED_OUT per item, through the cache and then the shared pool."""
    results, missing = {}, []
    with _cache_lock:
        for item in dict.fromkeys(items):
            verdict, waited = _cache.get(item, (None, 0.0))
            if verdict is not None and (verdict != TIMED_OUT or waited >= timeout):
                _cache.move_to_end(item)
                results[item] = verdict
            else:
                missing.append(item)
    if missing:
        checked = get_shared_pool().check_many(missing, timeout=timeout)
        with _cache_lock:
            for item, verdict in zip(missing, checked):
                results[item] = verdict
                _cache[item] = (verdict, timeout)  # timeouts too: the same input would hang again as long
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    return [results[item] for item in items]


def score_answers(
    preds: list[str | None], golds: list[str | None], timeout: float = 5.0, rel_tol: float = 0.0
) -> list[float | None]:
    """Score extracted answers against extracted gold answers (steps 3 and 4 of the module docstring)."""
    scores: list[float | None] = [None] * len(preds)
    pending: dict[int, tuple[str | None, str]] = {}
    for i, (pred, gold) in enumerate(zip(preds, golds, strict=True)):
        if gold is None:
            continue
        gold_number = parse_number(gold)
        pred_number = parse_number(pred)
        if gold_number is not None and pred_number is not None:
            scores[i] = float(numbers_equal(pred_number, gold_number, rel_tol))
            continue
        exact = exact_equal(pred, gold, rel_tol)
        if exact is not None:
            scores[i] = float(exact)
        elif pred is None and (gold_number is not None or canonical(gold) is not None):
            scores[i] = 0.0  # no answer, and a gold we can read without sympy
        else:  # expressions, matrices, unions, mixed kinds, or a gold only sympy can read
            pending[i] = (pred, gold)
    if pending:
        for i, verdict in zip(pending, _symbolic(list(pending.values()), timeout)):
            if verdict == TIMED_OUT:
                scores[i] = 0.0
            else:
                gold_ok, correct = verdict
                scores[i] = float(correct) if gold_ok else None
    return scores


def verify_answer(
    prediction_text: str, gold_text: str, strict: bool = True, timeout: float = 5.0, rel_tol: float = 0.0
) -> bool:
    """Whether the final answer in `prediction_text` equals the gold answer in `gold_text`.

    Example: `verify_answer("so the answer is $\\frac{1}{2}$.", "#### 0.5")` is True. A prediction that is only an
    answer is read whole, as Math-Verify's `verify(parse(gold), parse(pred))` does: `verify_answer("-5", "-5")`,
    `verify_answer("1,000.99", "1000.99")` and `verify_answer("$\\frac{1}{2}$", "0.5")` are True.
    """
    pred = extract_answer(completion_text(prediction_text), strict=strict)
    return score_answers([pred], [gold_answer(gold_text)], timeout=timeout, rel_tol=rel_tol)[0] == 1.0


class MathAccuracyReward:
    """Math accuracy reward: 1.0 if the completion's final answer equals the gold `solution`, else 0.0.

    A picklable callable class (not a closure) so it can travel to a spawned rollout worker. Usage:

        reward = make_math_reward(strict=False, timeout=2.0)
        trainer = GRPOTrainer(..., reward_funcs=[reward])  # logs `rewards/math_accuracy_reward/mean`

    Args:
        strict (`bool`, defaults to `True`): only explicit answers count: `<answer>` tags, `\\boxed{}`, `####`,
            "the answer is" / `Answer:` / `A:`, a completion that is only an answer, or a math span closing the
            completion (`extract_answer`). False also accepts the last number in the completion (models that state
            the answer in prose); that also rewards a number that merely comes last.
        timeout (`float`, defaults to `5.0`): seconds one symbolic check may take before its worker is killed and
            the answer scored 0.0. 1-10 is sensible; exact numeric answers never reach the pool.
        rel_tol (`float`, defaults to `0.0`): relative tolerance for numeric answers; 0 means exact (`0.333`
            is not `1/3`). Use e.g. 1e-6 for answers computed in floating point.
        name (`str`, defaults to `"math_accuracy_reward"`): the `__name__` TRL uses in metric names.
    """

    def __init__(
        self, strict: bool = True, timeout: float = 5.0, rel_tol: float = 0.0, name: str = "math_accuracy_reward"
    ):
        assert timeout > 0, "timeout must be positive: it bounds how long a batch can stall training"
        assert rel_tol >= 0, "rel_tol is a relative tolerance, it cannot be negative"
        self.strict = strict
        self.timeout = timeout
        self.rel_tol = rel_tol
        self.__name__ = name

    def __call__(self, completions: list, solution: list, log_extra=None, **kwargs) -> list[float | None]:
        preds = [extract_answer(completion_text(c), strict=self.strict) for c in completions]
        golds = [gold_answer(s) for s in solution]
        scores = score_answers(preds, golds, timeout=self.timeout, rel_tol=self.rel_tol)
        if log_extra is not None:  # TRL's completions table: what we read from each side
            log_extra("gold_answer", [g if g is not None else "[unparseable]" for g in golds])
            log_extra("extracted_answer", [p if p is not None else "[none]" for p in preds])
        return scores

    def __repr__(self) -> str:
        return f"MathAccuracyReward(strict={self.strict}, timeout={self.timeout}, rel_tol={self.rel_tol})"


def make_math_reward(
    strict: bool = True, timeout: float = 5.0, rel_tol: float = 0.0, name: str = "math_accuracy_reward"
) -> MathAccuracyReward:
    """A configured math accuracy reward; see `MathAccuracyReward` for the arguments."""
    return MathAccuracyReward(strict=strict, timeout=timeout, rel_tol=rel_tol, name=name)


_DEFAULT_REWARD = MathAccuracyReward()


def math_accuracy_reward(completions: list, solution: list, **kwargs) -> list[float | None]:
    """1.0 if a completion's final answer equals its `solution`, 0.0 if not or if it has none, None if the
    solution has no readable answer. Completions may be strings or chat message lists; defaults of
    `MathAccuracyReward`.

    Example:
        >>> math_accuracy_reward(["... so \\boxed{\\frac{1}{2}}", "The answer is 0.05"], ["#### 0.5", "0.5"])
        [1.0, 0.0]
    """
    return _DEFAULT_REWARD(completions, solution, **kwargs)


class FormatReward:
    """1.0 if a completion is well formatted, else 0.0: it has a non-empty, closed `\\boxed{}` answer and/or the
    given tags in order (e.g. `tags=("think", "answer")` wants `<think>...</think>` then `<answer>...</answer>`).

    Args:
        require_boxed (`bool`, defaults to `True`): the completion must contain a closed, non-empty `\\boxed{}`.
        tags (`tuple[str, ...]`, defaults to `()`): tag names that must each open and close, in this order.
        name (`str`, defaults to `"format_reward"`): the `__name__` TRL uses in metric names.
    """

    def __init__(self, require_boxed: bool = True, tags: tuple[str, ...] = (), name: str = "format_reward"):
        assert require_boxed or tags, "a format reward needs something to check: require_boxed or tags"
        self.require_boxed = require_boxed
        self.tags = tuple(tags)
        self.__name__ = name

    def _ok(self, text: str) -> bool:
        position = 0
        for tag in self.tags:  # linear scans, no regex backtracking on long completions
            start = text.find(f"<{tag}>", position)
            end = text.find(f"</{tag}>", start + 1) if start >= 0 else -1
            if end < 0:
                return False
            position = end + len(tag) + 3
        return not self.require_boxed or bool(last_boxed(text))

    def __call__(self, completions: list, **kwargs) -> list[float]:
        return [float(self._ok(completion_text(c))) for c in completions]


_DEFAULT_FORMAT = FormatReward()


def format_reward(completions: list, **kwargs) -> list[float]:
    """1.0 if a completion contains a closed, non-empty `\\boxed{}` answer, else 0.0 (`FormatReward` for tags)."""
    return _DEFAULT_FORMAT(completions, **kwargs)

"""Math rewards read every explicit answer: the common markers, bare answers, `<answer>` blocks, a closing math span,
non-English markers and malformed LaTeX; a gold without an answer scores None. Extraction stays linear in the input.

The deadline tests for these new paths (a bare tower, a tower in `<answer>` tags) are in `test_rewards_math.py`'s
ADVERSARIAL table, from the main thread and from worker threads.
"""

import json
import logging
import re
import time
from fractions import Fraction
from pathlib import Path

import pytest

from tests.scripts import load_script
from trl_ppo_plus.rewards import extract_answer, make_math_reward, math_accuracy_reward, verify_answer
from trl_ppo_plus.rewards import math as math_module


DEADLINE = 2.0
reward = make_math_reward(timeout=DEADLINE)
GSM8K_SAMPLE = Path(__file__).parent / "data" / "gsm8k" / "test_sample.jsonl"

# (text, expected answer) with the default strict=True: every explicit form of an answer is read.
MARKERS = [
    (r"so \boxed{42}.", "42"),
    (r"so \fbox{42}.", "42"),
    ("48 + 24 = 72\n#### 72", "72"),
    ("So the answer is 72.", "72"),
    ("The final answer is $\\frac{1}{2}$.", r"\frac{1}{2}"),
    ("She sold 48 clips in April.\nAnswer: 72", "72"),  # DAPO's format
    ("She sold 48 clips in April.\nA: 72", "72"),  # GSM8K model solutions
    ("Natalia sold 48/2 = 24 clips in May.\n**A:** 72", "72"),
    ("Step 1: 3 apples.\nA: $1,234", "$1,234"),
    ("Q: how many?\nA: 5 apples", "5 apples"),
    ("Answer $ 9 $", "9"),
    ("Answer \\[ 9 \\]", "9"),
    ("Answer $ \\frac{1}{2} \\$ = \\frac{10}{9} $", r"\frac{1}{2} \$ = \frac{10}{9}"),  # `\$` is a dollar
    ("<think>2 + 2 is 4, no, 5</think>\n<answer>5</answer>", "5"),  # R1 style
    ("<answer>3</answer> wait <answer>4</answer>", "4"),  # the last block
    ("<think>\\boxed{3} is wrong</think><answer>The answer is $4$</answer>", "4"),
    ("<answer>\\boxed{7}</answer>", "7"),
    ("<answer>I think it is five</answer> The answer is 5", None),  # the block decides, and holds no answer
    ("<answer>\n\n5\n</answer>", "5"),
    ("Final Answer: The largest $n$ is 34.", "34"),  # a sentence after the marker: what follows its "is"
    ("Final Answer: Tom reached the lake 3 hours later. I hope it is right.", "3"),
    (r"so $\boxed{255}$ in May. Final Answer: The final answer is $10,455$. I hope", "10,455"),
    (r"\boxed{-2} \quad \text{and} \quad \boxed{1}", "-2, 1"),  # boxes side by side are one answer
    (r"$\boxed{1}\boxed{2}$", "1, 2"),
    (r"\boxed{5} Wait, actually \boxed{7}", "7"),
    ("La réponse est 18. Vérification : 18 + 2 = 20.", "18"),
    ("所以答案是18。验证：18+2=20", "18"),
    ("答案：$\\frac{1}{2}$", r"\frac{1}{2}"),
    ("Por lo tanto, la respuesta es 12. Comprobación: 12 + 1 = 13.", "12"),
    ("Die Antwort ist 7, denn 3 + 4 = 7 und 7 + 1 = 8.", "7"),
]


@pytest.mark.parametrize("text, expected", MARKERS)
def test_markers(text, expected):
    assert extract_answer(text) == expected


# (text, expected): a text that is only an answer is that answer, also in strict mode.
BARE = [
    ("-5", "-5"),
    ("1,000.99", "1,000.99"),
    ("$\\frac{1}{2}$", r"\frac{1}{2}"),
    ("\\frac{10}{9}", r"\frac{10}{9}"),
    ("$28$ %", "28 %"),
    ("28 percent", "28 percent"),
    ("2,000.49m²", "2,000.49m²"),
    ("${1,3}$", "{1,3}"),
    ("$y = 2+2+3 = 5 =9$", "y = 2+2+3 = 5 =9"),
    ("$004$", "004"),
    ("  72  ", "72"),
    ("$(7, 6)$. <|im_end|>", "(7, 6)"),
    # not answers
    ("She sold 72 clips.", None),
    ("Evelyn", "Evelyn"),  # one word: compared symbolically, so it only matches itself
    ("I don't know.", None),
    ("no idea", None),
    ("I got 3 then 7", None),
    ("Prix : 3,15 $ env..", None),  # a word before the number: prose
    (r"\boxed{12", None),  # a box that never closed (truncated output)
    ("", None),
]


@pytest.mark.parametrize("text, expected", BARE)
def test_bare_answers(text, expected):
    assert extract_answer(text) == expected


# (text, expected): the last math span counts when it sits in the text's final sentence.
CLOSING_SPANS = [
    ("Therefore $x \\geq 5$ is the solution.", r"x \geq 5"),
    ("The identity matrix is $ \\begin{pmatrix}1 & 0 \\\\ 0 & 1\\end{pmatrix} $.", None),  # replaced below
    ("So the ordered pair is $(7, 6)$. <|im_start|>user", "(7, 6)"),
    ("First $2+3=5$. Then we check the other case, which fails.", None),  # a step, then more sentences
    ("So $x = 3$, and the total is 12 apples", None),  # a number follows the span
    ("She pays $5 and gets $3 back.", None),  # currency, not math
    ("We get $5 \\times 4 =$", None),  # an unfinished expression
]
CLOSING_SPANS[1] = (CLOSING_SPANS[1][0], r"\begin{pmatrix}1 & 0 \\ 0 & 1\end{pmatrix}")


@pytest.mark.parametrize("text, expected", CLOSING_SPANS)
def test_closing_math_span(text, expected):
    assert extract_answer(text) == expected


def test_verify_answer_reads_bare_predictions():
    assert verify_answer("-5", "-5")
    assert verify_answer("1,000.99", "1000.99")
    assert verify_answer("$\\frac{1}{2}$", "0.5")
    assert verify_answer("1000,99", "1000.99")  # decimal comma
    assert verify_answer("1 000", "1000")
    assert verify_answer("$28$ percent", "$28\\%$")
    assert not verify_answer("-5", "5")
    assert not verify_answer("32, 349", "32349")  # a pair; `32,\! 349` would be 32349
    assert verify_answer("$\\boxed{32,\\! 349}$", "32349")


# (completion, gold, expected): malformed LaTeX is repaired on both sides before comparing.
MALFORMED = [
    (r"\boxed{\frac34}", r"\frac{3}{4}", 1.0),
    (r"\boxed{\frac{3}{4}}", r"\frac34", 1.0),
    (r"\boxed{\cfrac{1}{3}}", "1/3", 1.0),
    (r"\boxed{\frac3{3}}", "1", 1.0),
    (r"\boxed{10\sqrt3}", r"10\sqrt{3}", 1.0),
    (r"\boxed{\sqrt{300}}", r"10\sqrt3", 1.0),
    (r"\boxed{1\frac12}", r"\frac{3}{2}", 1.0),  # a mixed number, as Math-Verify reads it
    (r"\boxed{1\frac{1}{2}}", r"1\frac12", 1.0),
    (r"\boxed{\frac1{\cos x}}", r"\frac{1}{\cos x}", 1.0),
    (r"\boxed{\sqrt 2+\sqrt 5}", r"\sqrt{2}+\sqrt{5}", 1.0),  # without the repair sympy read this as 5
    (r"\boxed{\sqrt 2+\sqrt 5}", "5", 0.0),
    (r"\boxed{\frac34}", r"\frac{4}{3}", 0.0),
    (r"\boxed{10\sqrt3}", r"10\sqrt{2}", 0.0),
]


@pytest.mark.parametrize("completion, gold, expected", MALFORMED)
def test_malformed_latex_is_repaired(completion, gold, expected):
    assert reward([completion], [gold]) == [expected]


def test_unreadable_gold_scores_none_and_is_logged_once(caplog, monkeypatch):
    monkeypatch.setattr(math_module, "_warned_unreadable_gold", False)
    with caplog.at_level(logging.WARNING, logger="trl_ppo_plus.rewards.math"):
        assert math_accuracy_reward(["The answer is 3"], ["no answer here at all"]) == [None]
        assert math_accuracy_reward(["The answer is 3", "#### 3"], ["still no answer", "3"]) == [None, 1.0]
    warnings = [r for r in caplog.records if "no readable answer" in r.getMessage()]
    assert len(warnings) == 1 and "no answer here at all" in warnings[0].getMessage()


def _gsm8k_sample():
    rows = [json.loads(line) for line in GSM8K_SAMPLE.read_text().splitlines() if line.strip()]
    return [row["answer"] for row in rows]


@pytest.mark.parametrize("marker", ["A: ", "Answer: ", "**Answer:** ", "The answer is "])
def test_gsm8k_solutions_with_other_answer_markers_score_one(marker):
    solutions = _gsm8k_sample()
    completions = [re.sub(r"####\s*(.*)$", lambda m: marker + m.group(1), s) for s in solutions]
    assert all(marker in c and "####" not in c for c in completions)
    assert math_accuracy_reward(completions, solutions) == [1.0] * len(solutions)
    answers = [Fraction(s.rsplit("####", 1)[1].strip().replace(",", "")) for s in solutions]
    shifted = solutions[1:] + solutions[:1]  # each against the next problem's gold
    expected = [float(a == b) for a, b in zip(answers, answers[1:] + answers[:1])]
    assert math_accuracy_reward(completions, shifted) == expected
    assert 0 < sum(expected) < len(expected) / 10


def test_gsm8k_answers_never_reach_sympy():
    solutions = _gsm8k_sample()
    completions = [re.sub(r"####\s*(.*)$", r"A: \1", s) for s in solutions]
    before = len(math_module._cache)  # every symbolic verdict is remembered there
    assert math_accuracy_reward(completions + solutions, solutions + solutions) == [1.0] * (2 * len(solutions))
    assert len(math_module._cache) == before


# (text, expected with strict=False): the last-number fallback reads numbers as written outside English
LENIENT = [
    ("Le total fait 2,74 € au final", "2,74"),
    ("Prix : 3,15 $ env..", "3,15"),
    ("Elle a 1 234 pommes", "1 234"),
    ("the sum is not 20 but 2,000.49€", "2,000.49"),
    ("La réponse est 18. Vérification : 18 + 2 = 20.", "18"),  # a marker outranks the last number
    ("她一共有18个苹果。答案是18。检查：18+2=20", "18"),
    ("I got 3 then 7", "7"),
]


@pytest.mark.parametrize("text, expected", LENIENT)
def test_lenient_mode_outside_english(text, expected):
    assert extract_answer(text, strict=False) == expected


def test_lenient_reward_reads_decimal_commas_and_spaced_thousands():
    lenient = make_math_reward(strict=False)
    assert lenient(["Le total fait 2,74 € au final", "Elle a 1 234 pommes"], ["2.74", "1234"]) == [1.0, 1.0]


PATHOLOGICAL = {
    "spaces": " " * 1_000_000,
    "dollars": "$" * 1_000_000,
    "open_displays": "\\[" * 500_000,
    "answer_tags": "<answer>" * 100_000,
    "a_colons": "A:" * 500_000,
    "boxes": "\\boxed{1}" * 100_000,
    "answer_is": "the answer is " * 70_000,
    "chat_tokens": "<|im_end|>" * 100_000,
    "french_markers": "réponse est " * 80_000,
}


@pytest.mark.parametrize("name", list(PATHOLOGICAL))
def test_extraction_is_linear_on_a_megabyte(name):
    for strict in (True, False):
        start = time.monotonic()
        answer = extract_answer(PATHOLOGICAL[name], strict=strict)
        assert time.monotonic() - start < 2.0, f"{name} (strict={strict}) took too long"
        assert answer is None or len(answer) <= 2_000


def test_agreement_benchmark_reads_parametrize_tables():
    """`benchmarks/math_verify_agreement.py` reads (gold, pred, expected) tables from a test file's source, skipping
    commented-out rows and picking up a precision the test function passes (a synthetic file, not theirs)."""
    module = load_script("benchmarks/math_verify_agreement.py")
    source = """
import math, pytest

@pytest.mark.parametrize("gold,pred,expected", [
    ("1", "$1$", 1),
    # ("2", "3", 1),
    (f"{math.sqrt(4):.1f}", "2", 1),
])
def test_a(gold, pred, expected):
    assert compare_strings(gold, pred, precision=5) == expected

@pytest.mark.parametrize("x", [1, 2])
def test_unrelated(x):
    pass

@pytest.mark.parametrize("gold, pred, expected, precision", [("1/3", "0.33", 1, 2)])
def test_b(gold, pred, expected, precision):
    pass
"""
    cases = module.parametrized_cases(source, "tests/test_x.py")
    assert [(c["gold"], c["pred"], c["expected"], c["precision"]) for c in cases] == [
        ("1", "$1$", 1, 5),
        ("2.0", "2", 1, 5),
        ("1/3", "0.33", 1, 2),
    ]
    assert {c["test"] for c in cases} == {"test_x::test_a", "test_x::test_b"}


# (completion, gold, expected): inside LaTeX (`\boxed{}`, `$...$`) a comma between digits separates items, as
# Math-Verify reads it (`\boxed{1,2}` is the pair 1, 2); only plain text has decimal commas (`1,22` is 1.22).
LATEX_COMMAS = [
    (r"\boxed{2,1}", r"\boxed{1,2}", 1.0),  # the same set, listed in another order
    (r"\boxed{-2,1}", r"The roots are $\boxed{1,-2}$.", 1.0),
    ("1.2", r"\boxed{1,2}", 0.0),  # 1.2 is not the pair 1, 2
    (r"\boxed{1.2}", r"\boxed{1,2}", 0.0),
    (r"\boxed{\frac{6}{5}}", "$1,2$", 0.0),
    ("The answer is 3.5", r"$x = \boxed{3,5}$", 0.0),
    (r"\boxed{1,2}", "1.2", 0.0),
    ("$1,2$", "1.2", 0.0),
    ("The answer is $12,34$.", "12.34", 0.0),
    ("Answer: 1,2", "1.2", 1.0),  # plain text: a decimal comma
    ("1000,99", "1000.99", 1.0),
    (r"\boxed{1,234}", "1234", 1.0),  # a thousands separator groups by 3, in LaTeX too
]


@pytest.mark.parametrize("completion, gold, expected", LATEX_COMMAS)
def test_commas_in_latex_separate_items(completion, gold, expected):
    assert reward([completion], [gold]) == [expected]


# (text, expected): a marker in markdown bold with the colon after the bold, `**Answer**: 18`, as chat models write it.
BOLD_MARKERS = [
    ("9 + 9 = 18\n\n**Answer**: 18", "18"),
    ("9 + 9 = 18\n\n**Final Answer**: $18$", "18"),
    ("**Answer** $\\frac{1}{2}$", r"\frac{1}{2}"),
    ("__Answer__: 18", "18"),
]


@pytest.mark.parametrize("text, expected", BOLD_MARKERS)
def test_markers_in_markdown_bold(text, expected):
    assert extract_answer(text) == expected
    assert math_accuracy_reward([text], [f"#### {expected}" if expected.isdigit() else f"${expected}$"]) == [1.0]


# (completion, gold): a currency sign after the number, as written in much of Europe.
CURRENCY_SUFFIXES = [
    ("La réponse est 2,74 €.", "2.74"),
    ("Réponse : 1 234,50 €", "1234.5"),
    ("Answer: 2,000.49€", "2000.49"),
    ("Answer: 12 £", "12"),
    ("$5$", "5"),
]


@pytest.mark.parametrize("completion, gold", CURRENCY_SUFFIXES)
def test_currency_after_the_number(completion, gold):
    assert reward([completion, completion], [gold, f"{gold}1"]) == [1.0, 0.0]


# (completion, gold, expected): two letters after a number are a unit only when they name one (`5 cm`, `3 kg`);
# `2xy` is an algebraic answer, not 2 (math-verify decides it).
TWO_LETTER_TAILS = [
    (r"\boxed{2xy}", "2", 0.0),
    (r"\boxed{4mn}", "4", 0.0),
    (r"\boxed{2 xy}", "2", 0.0),
    (r"\boxed{5 cm}", "5", 1.0),
    (r"\boxed{5cm}", "5", 1.0),
    ("Answer: 3 kg", "3", 1.0),
    ("Answer: 12 ft", "12", 1.0),
    ("Answer: 18 km/h", "18", 1.0),
    ("Answer: 7 apples", "7", 1.0),
]


@pytest.mark.parametrize("completion, gold, expected", TWO_LETTER_TAILS)
def test_two_letters_after_a_number_are_a_unit_only_when_named(completion, gold, expected):
    assert reward([completion], [gold]) == [expected]


# (completion, gold, expected): math spans listed side by side at the close are one answer, as boxes are, so a
# completion that hedges over several values is not rewarded for the last one.
LISTED_SPANS = [
    ("The answer could be $1$, $2$, $3$, or $72$.", "#### 72", 0.0),
    ("It is one of $70$, $71$ and $72$.", "#### 72", 0.0),
    ("So the roots are $1$ and $-2$.", r"\boxed{1,-2}", 1.0),
    ("So the root is $72$.", "#### 72", 1.0),
    ("We have $x = 3$. So the answer must be $72$.", "#### 72", 1.0),  # another sentence: not listed
]


@pytest.mark.parametrize("completion, gold, expected", LISTED_SPANS)
def test_closing_spans_listed_together_are_one_answer(completion, gold, expected):
    assert reward([completion], [gold]) == [expected]


def test_unclosed_math_spans_cost_linear_time():
    """Each unclosed `\\[` / `\\(` / `$$` once scanned the rest of the 4,000-char tail (90 ms per completion)."""
    batch = ["\\[ " * 1_400, "\\( " * 1_400, "$$ \\[ " * 700] * 86
    start = time.monotonic()
    assert [extract_answer(text) for text in batch] == [None] * len(batch)
    assert time.monotonic() - start < 5.0  # 258 completions; quadratic scanning took about 20 s


# (completion, gold, expected): a named unit may be squared or cubed (`18 cm^2`, `18 cm²`); letters that name no
# unit stay algebra (`3ab^2` is not 3).
SQUARED_UNITS = [
    ("Answer: 18 cm^2", "18", 1.0),
    ("Answer: 18 cm^{3}", "18", 1.0),
    ("The area is 18 cm². Answer: 18 cm²", "18", 1.0),
    (r"\boxed{3 ab^2}", "3", 0.0),
    (r"\boxed{2xy^2}", "2", 0.0),
]


@pytest.mark.parametrize("completion, gold, expected", SQUARED_UNITS)
def test_squared_and_cubed_units(completion, gold, expected):
    assert reward([completion], [gold]) == [expected]

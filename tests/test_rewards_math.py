"""Math rewards: table-driven verdicts, answer extraction, the numeric fast path, and deadlines that hold.

The reward cases run with a 2 s deadline; the adversarial inputs must come back within deadline + 1 s from the main
thread and from a ThreadPoolExecutor worker, and the pool must still answer normal questions afterwards.
"""

import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import pytest

from trl_ppo_plus.rewards import (
    MathAccuracyReward,
    extract_answer,
    format_reward,
    make_math_reward,
    math_accuracy_reward,
    verify_answer,
)
from trl_ppo_plus.rewards.math import FormatReward
from trl_ppo_plus.rewards.math_exact import canonical, exact_equal, parse_number
from trl_ppo_plus.rewards.math_verify_pool import TIMED_OUT, SymbolicPool, get_shared_pool


DEADLINE = 2.0
reward = make_math_reward(timeout=DEADLINE)


def chat(content):
    return [{"role": "assistant", "content": content}]


GSM8K_SOLUTION = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)

# (completion, solution, expected reward). 1.0 right, 0.0 wrong or answerless, None: the gold does not parse.
NUMBER_FORMATS = [
    (r"\boxed{42}", "42", 1.0),
    (r"\boxed{42}", "43", 0.0),
    (r"\boxed{-7}", "-7", 1.0),
    (r"\boxed{−7}", "-7", 1.0),  # unicode minus
    (r"\boxed{7}", "-7", 0.0),
    (r"\boxed{1,234}", "1234", 1.0),
    (r"\boxed{1{,}234}", "1234", 1.0),
    (r"\boxed{1,234,567}", "1234567", 1.0),
    (r"\boxed{3.50}", "3.5", 1.0),
    (r"\boxed{.5}", "0.5", 1.0),
    (r"\boxed{5.}", "5", 1.0),
    (r"\boxed{\$18}", "18", 1.0),
    ("The answer is $18.", "18", 1.0),
    (r"\boxed{18 dollars}", "18", 1.0),
    (r"\boxed{USD 1,000}", "1000", 1.0),
    (r"\boxed{€5}", "5", 1.0),
    (r"\boxed{5\text{ cm}}", "5", 1.0),
    (r"\boxed{3 apples}", "3", 1.0),
    (r"\boxed{30^\circ}", "30", 1.0),
    (r"\boxed{50\%}", "50", 1.0),
    (r"\boxed{50\%}", "0.5", 1.0),
    (r"\boxed{0.5}", r"50\%", 1.0),
    (r"\boxed{5\%}", "50", 0.0),
    (r"\boxed{1.5e3}", "1500", 1.0),
    (r"\boxed{1.5 \times 10^{3}}", "1500", 1.0),
    (r"\boxed{2.5 \times 10^{-3}}", "0.0025", 1.0),
    (r"\boxed{1e-3}", "0.001", 1.0),
    (r"\boxed{1e3}", "100", 0.0),
    (r"\boxed{x = 5}", "5", 1.0),
    (r"\boxed{0}", "0", 1.0),
    (r"\boxed{-0}", "0", 1.0),
    (r"\boxed{007}", "7", 1.0),
    (r"\boxed{10000000000000000000001}", "10000000000000000000000", 0.0),  # exact, no float rounding
    (r"\boxed{0.1}", "0.10000000001", 0.0),
]

FRACTIONS = [
    (r"\boxed{\frac{1}{2}}", "0.5", 1.0),
    (r"\boxed{\dfrac{3}{4}}", "0.75", 1.0),
    (r"\boxed{\tfrac{3}{4}}", "3/4", 1.0),
    (r"\boxed{\frac34}", r"\frac{3}{4}", 1.0),
    (r"\boxed{3/4}", r"\frac{3}{4}", 1.0),
    (r"\boxed{6/8}", "3/4", 1.0),
    (r"\boxed{-\frac{1}{2}}", "-0.5", 1.0),
    (r"\boxed{\frac{-1}{2}}", "-1/2", 1.0),
    (r"\boxed{\frac{1}{-2}}", "-0.5", 1.0),
    (r"\boxed{\frac{2}{1}}", "2", 1.0),
    (r"\boxed{0.75}", r"\dfrac{3}{4}", 1.0),
    (r"\boxed{\frac{1}{3}}", "0.3333", 0.0),  # exact by default; see the rel_tol test
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{3}", 0.0),
    (r"\boxed{1/0}", "1", 0.0),
    (r"\boxed{\frac{22}{7}}", r"\pi", 0.0),
    (r"\boxed{\frac{1}{\sqrt{2}}}", r"\frac{\sqrt{2}}{2}", 1.0),
    (r"\boxed{\frac{\pi}{2}}", r"\pi/2", 1.0),
]

LATEX = [
    (r"\boxed{\sqrt{4}}", "2", 1.0),
    (r"\boxed{2\sqrt{2}}", r"\sqrt{8}", 1.0),
    (r"\boxed{\sqrt{8}}", r"2\sqrt{3}", 0.0),
    (r"\boxed{\pi}", r"\pi", 1.0),
    (r"\boxed{2\pi}", r"\pi", 0.0),
    (r"\boxed{(x+1)^2}", "x^2+2x+1", 1.0),
    (r"\boxed{x^2+2x+1}", "x^2+2x-1", 0.0),
    (r"\boxed{2^{10}}", "1024", 1.0),
    (r"\boxed{10^{3}}", "1000", 1.0),
    (r"\boxed{\sin^2 x + \cos^2 x}", "1", 1.0),
    (r"\boxed{3+4i}", "3+4i", 1.0),
    (r"\boxed{\log_2 8}", "3", 1.0),
    (r"\boxed{\binom{5}{2}}", "10", 1.0),
    (r"\boxed{5!}", "120", 1.0),
    (r"\boxed{\infty}", r"\infty", 1.0),
    (r"\boxed{y = 2x + 3}", "2x+3", 1.0),
    (r"\boxed{x^2}", "x^3", 0.0),
    (r"\boxed{\text{(B)}}", "B", 1.0),
    (r"$\boxed{12}$.", "12", 1.0),
    (r"\boxed{\frac{1}{2}}", r"$\frac{1}{2}$", 1.0),
    (r"\boxed{\frac{1}{2}}", r"The answer is $\boxed{\frac{1}{2}}$.", 1.0),  # a MATH-style solution
]

NESTED_BOXES = [
    (r"\boxed{\boxed{5}}", "5", 1.0),
    (r"\boxed{\boxed{\boxed{\frac{1}{2}}}}", "0.5", 1.0),
    (r"\boxed{ \boxed{12} }", "12", 1.0),
    (r"\boxed{{12}}", "12", 1.0),
    (r"\boxed{5} Wait, actually \boxed{7}", "7", 1.0),
    (r"\boxed{5} Wait, actually \boxed{7}", "5", 0.0),  # the right answer inside the wrong (earlier) box
    (r"The answer is 5. \boxed{6}", "5", 0.0),  # a box wins over "the answer is"
    (r"\boxed{x^{2}} and finally \boxed{y^{2}}", "y^2", 1.0),
    (r"\fbox{12}", "12", 1.0),
    (r"\boxed 5", "5", 1.0),
    (r"\boxed{}", "5", 0.0),
    (r"\boxed{12", "12", 0.0),  # truncated: the box never closes
    (r"\boxed{\{1, 2\}}", r"\{1,2\}", 1.0),  # escaped braces do not close the box
    (r"\boxed{\frac{1}{\boxed{2}}}", "0.5", 0.0),
]

SETS_AND_INTERVALS = [
    (r"\boxed{\{1,2,3\}}", r"\{3,2,1\}", 1.0),
    (r"\boxed{\{1,2\}}", r"\{1,2,3\}", 0.0),
    (r"\boxed{1, 2}", "2, 1", 1.0),
    (r"\boxed{[1,2)}", "[1,2)", 1.0),
    (r"\boxed{[1,2]}", "[1,2)", 0.0),
    (r"\boxed{(1,2)}", "(1, 2)", 1.0),
    (r"\boxed{(-\infty, 3]}", r"(-\infty,3]", 1.0),
    (r"\boxed{(-\infty, 3)}", r"(-\infty,3]", 0.0),
    (r"\boxed{[0, 1] \cup [2, 3]}", r"[0,1]\cup[2,3]", 1.0),
    (r"\boxed{(3, 4)}", "(4, 3)", 0.0),
    (r"\boxed{x \in [1, 2)}", "[1,2)", 1.0),
    (r"\boxed{(3, \infty)}", "x > 3", 1.0),
    (r"\boxed{\emptyset}", r"\emptyset", 1.0),
    (r"\boxed{(1, 2, 3)}", "(1,2,3)", 1.0),
    (r"\boxed{(1, 3, 2)}", "(1,2,3)", 0.0),
    (r"\boxed{\begin{pmatrix} 1 \\ 2 \end{pmatrix}}", r"\begin{pmatrix}1\\2\end{pmatrix}", 1.0),
    (r"\boxed{\begin{pmatrix} 1 \\ 3 \end{pmatrix}}", r"\begin{pmatrix}1\\2\end{pmatrix}", 0.0),
]

NEAR_MISSES = [
    (r"\boxed{0.05}", "0.5", 0.0),
    (r"\boxed{0.5}", "0.05", 0.0),
    (r"\boxed{12}", "1/2", 0.0),
    (r"\boxed{1/2}", "12", 0.0),
    (r"\boxed{\frac{1}{2}}", "12", 0.0),
    (r"\boxed{1,2}", "12", 0.0),  # not a thousands separator: a pair
    (r"\boxed{21}", "12", 0.0),
    (r"\boxed{120}", "12", 0.0),
    (r"\boxed{1.2}", "12", 0.0),
    (r"\boxed{-12}", "12", 0.0),
    (r"\boxed{12\%}", "0.012", 0.0),
    (r"The answer is 12 but \boxed{13}", "12", 0.0),
    (r"\boxed{3.14}", r"\pi", 0.0),
    (r"\boxed{1000}", "1,000,000", 0.0),
    (r"\boxed{1,000}", "1.000", 0.0),
    (r"\boxed{2}", r"\sqrt{2}", 0.0),
    ("The answer is 0.05", "0.5", 0.0),
]

GSM8K = [
    (GSM8K_SOLUTION, GSM8K_SOLUTION, 1.0),
    ("48 + 24 = 72\n#### 72", GSM8K_SOLUTION, 1.0),
    ("She sold 72 clips, so the answer is 72.", GSM8K_SOLUTION, 1.0),
    ("The answer is 71.", GSM8K_SOLUTION, 0.0),
    ("#### 71", GSM8K_SOLUTION, 0.0),
    ("#### $1,234", "#### 1234", 1.0),
    ("#### 72 clips", GSM8K_SOLUTION, 1.0),
    ("She sold 72 clips.", GSM8K_SOLUTION, 0.0),  # strict by default: no marker, no answer
    ("I think 70... no wait. The final answer is 72", GSM8K_SOLUTION, 1.0),
    ("#### 72\n\nThe answer is 70", GSM8K_SOLUTION, 1.0),  # `####` outranks "the answer is"
    ("#### 72.0", "72", 1.0),
    ("Answer: 18", "#### 18", 1.0),
    ("Final answer: 18 dollars", "#### 18", 1.0),
    (r"\boxed{72}", 72, 1.0),  # a numeric solution column
    (r"\boxed{1/2}", 0.5, 1.0),
    (r"\boxed{3}", 72, 0.0),
    ("Janet pays $5 * 4 = $<<5*4=20>>20.\n#### 20", "#### 20", 1.0),
    ("Janet pays $5 * 4 = $<<5*4=20>>20.\n#### 20", "#### 25", 0.0),
]

ANSWER_IS = [
    (r"The final answer is $\boxed{3}$. I hope it is correct.", "3", 1.0),
    ("Final Answer: The final answer is $3$. I hope it is correct.", "3", 1.0),
    ("The answer is: 2.5", "5/2", 1.0),
    (r"The answer is \(\frac{5}{2}\).", "2.5", 1.0),
    ("The answer is **42**.", "42", 1.0),
    ("the answer is 42, which is even", "42", 1.0),
    ("So the answer is 3.5.", "3.5", 1.0),
    ("So the answer is 3.5.", "35", 0.0),
    ("answer = 12", "12", 1.0),
    ("The answer is x = 4", "4", 1.0),
    (r"The answer is $\sqrt{2}$", r"\sqrt{2}", 1.0),
    (r"THE ANSWER IS $\{1, 2\}$.", r"\{1,2\}", 1.0),
]

CHAT = [
    (chat(r"\boxed{5}"), "5", 1.0),
    (chat(r"\boxed{6}"), "5", 0.0),
    ([{"role": "user", "content": r"\boxed{0.5}"}, *chat(r"The answer is $\frac{1}{2}$")], "0.5", 1.0),
    ([{"role": "assistant", "content": [{"type": "text", "text": r"\boxed{7}"}]}], "7", 1.0),
    (chat(""), "7", 0.0),
    (chat("#### 9"), "#### 9", 1.0),
    (chat(r"\boxed{\{1,2\}}"), r"\{1, 2\}", 1.0),
    (chat(r"\boxed{\sqrt{4}}"), "2", 1.0),
    (chat(r"\boxed{0.05}"), "0.5", 0.0),
    ([], "5", 0.0),
]

ANSWERLESS_AND_UNPARSEABLE = [
    ("", "5", 0.0),
    ("I don't know.", "5", 0.0),
    ("Let me think about 5 apples.", "5", 0.0),
    ("nothing", r"\sqrt{2}", 0.0),  # symbolic gold that parses, no answer
    (r"\boxed{5}", "", None),
    (r"\boxed{5}", None, None),
    (r"\boxed{5}", "}{", None),
    ("", "}{", None),  # the gold is checked first: an unparseable gold skips the sample
]

REWARD_CASES = (
    NUMBER_FORMATS + FRACTIONS + LATEX + NESTED_BOXES + SETS_AND_INTERVALS + NEAR_MISSES + GSM8K + ANSWER_IS + CHAT
) + ANSWERLESS_AND_UNPARSEABLE


@pytest.mark.parametrize("completion, solution, expected", REWARD_CASES)
def test_reward_table(completion, solution, expected):
    assert reward([completion], [solution]) == [expected]


def test_reward_table_is_large_and_batches_agree():
    assert len(REWARD_CASES) >= 150
    completions, solutions, expected = zip(*REWARD_CASES)
    assert reward(list(completions), list(solutions)) == list(expected)  # one batched call, same verdicts


# (text, strict, expected extracted answer)
EXTRACTION_CASES = [
    (r"so \boxed{\frac{1}{2}}.", True, r"\frac{1}{2}"),
    (r"\boxed{\boxed{5}}", True, "5"),
    (r"\boxed{5} then \boxed{7}", True, "7"),
    (r"\boxed{x + \boxed{5}}", True, r"x + \boxed{5}"),  # a box that does not fill its parent is not unwrapped
    (r"\boxed{\{1,2\}}", True, r"\{1,2\}"),
    (r"\fbox{x^2}", True, "x^2"),
    (r"\boxed 5$", True, "5"),
    (r"\boxed{", True, None),
    ("blah #### 1,234", True, "1,234"),
    ("#### 72\nThe answer is 70", True, "72"),
    (r"The final answer is $\frac{1}{2}$. I hope", True, r"\frac{1}{2}"),
    ("The answer is 42 apples.", True, "42 apples"),
    ("The answer is 3.5.", True, "3.5"),
    ("The answer is: **42**", True, "42"),
    ("answer = 12, which is", True, "12"),
    ("I got 3 then 7", True, None),
    ("I got 3 then 7", False, "7"),
    ("I got 3 then -7.5", False, "-7.5"),
    ("I got 1,234 in total", False, "1,234"),
    ("no numbers at all", False, None),
    ("", False, None),
    (r"\boxed{12} and later 13", False, "12"),  # strict=False only adds a last resort
]


@pytest.mark.parametrize("text, strict, expected", EXTRACTION_CASES)
def test_extract_answer(text, strict, expected):
    assert extract_answer(text, strict=strict) == expected


# (answer, expected (value, is_percent) or None)
NUMBER_CASES = [
    ("1,234", (Fraction(1234), False)),
    ("1,2", (Fraction(6, 5), False)),  # a decimal comma: a thousands separator groups by 3
    ("1000,99", (Fraction(100099, 100), False)),
    ("0,111", (Fraction(111, 1000), False)),
    ("1 000", (Fraction(1000), False)),
    ("1,23,4", None),
    (r"\$5", (Fraction(5), False)),
    (r"50\%", (Fraction(50), True)),
    ("50 percent", (Fraction(50), True)),
    ("5 apples", (Fraction(5), False)),
    (r"-\frac{1}{2}", (Fraction(-1, 2), False)),
    (r"\dfrac34", (Fraction(3, 4), False)),
    (r"1.5 \times 10^{3}", (Fraction(1500), False)),
    ("3x10^5", (Fraction(300000), False)),
    ("−3", (Fraction(-3), False)),
    (r"\sqrt{2}", None),
    ("2 pi", None),
    ("5x", None),
    ("1e99999", None),  # bounded exponent: never builds a huge integer in-process
    ("2003^{2002^{2001}}", None),
    ("9**9**9**9", None),
    ("1" * 300, None),
    ("{5}", (Fraction(5), False)),
]


@pytest.mark.parametrize("answer, expected", NUMBER_CASES)
def test_parse_number(answer, expected):
    assert parse_number(answer) == expected


# (pred, gold, expected): True / False decided in-process, None left to math-verify
EXACT_CASES = [
    (r"\sqrt{8}", r"2\sqrt{2}", True),
    (r"\sqrt{8}", r"2\sqrt{3}", False),
    (r"-2\sqrt{2}", r"-\sqrt{8}", True),
    (r"-2\sqrt{2}", r"\sqrt{8}", False),
    (r"\sqrt{4}", "2", True),
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{2}\sqrt{2}", True),
    (r"\frac{3\sqrt{2}}{4}", r"\frac{\sqrt{18}}{4}", True),
    (r"\sqrt{2}/2", r"\frac{\sqrt{2}}{2}", True),
    (r"\frac{\pi}{2}", r"\frac{1}{2}\pi", True),
    (r"\frac{3\pi}{4}", r"0.75\pi", True),
    (r"2\pi", r"\pi", False),
    (r"0\pi", "0", True),
    ("3.14", r"\pi", False),
    (r"-\infty", r"-\infty", True),
    (r"\{1, 2, 3\}", r"\{3,2,1\}", True),
    (r"\{1, 2\}", r"\{1,2,3\}", False),
    (r"\{\sqrt{4}, 1\}", r"\{1,2\}", True),
    ("1, 2", r"\{2, 1\}", True),
    (r"\emptyset", r"\varnothing", True),
    ("[1, 2)", r"\left[1,2\right)", True),
    ("[1, 2)", "(1, 2)", False),
    (r"(-\infty, 3]", r"(-\infty,3]", True),
    (r"x \in [1, 2)", "[1,2)", True),
    ("(1, 2, 3)", "(1,2,3)", True),
    ("(1, 3, 2)", "(1,2,3)", False),
    ("[1, 2, 3]", "[1,2,3]", None),  # a list or a matrix row: math-verify decides
    (r"[0,1] \cup [2,3]", r"[0,1]\cup[2,3]", None),
    (r"\{1, 2\}", "(1, 2)", None),  # different kinds
    ("x^2", "x^2", None),
    (r"\sqrt{-1}", "i", None),
    (r"\sqrt{x}", r"\sqrt{x}", None),
]


@pytest.mark.parametrize("pred, gold, expected", EXACT_CASES)
def test_exact_equal_agrees_with_math_verify(pred, gold, expected):
    assert exact_equal(pred, gold) is expected
    if expected is not None and (pred, gold) != (r"\emptyset", r"\varnothing"):  # math-verify misreads \varnothing
        assert get_shared_pool().check_many([(pred, gold)], timeout=30) == [(True, expected)]


def test_canonical_is_bounded():
    assert canonical("1" * 300) is None
    assert canonical(r"\sqrt{1e99999}") is None


def test_rel_tol():
    assert reward([r"\boxed{0.3333333}"], ["1/3"]) == [0.0]
    assert make_math_reward(rel_tol=1e-6)([r"\boxed{0.3333333}"], ["1/3"]) == [1.0]
    assert make_math_reward(rel_tol=1e-6)([r"\boxed{0.3334}"], ["1/3"]) == [0.0]
    assert make_math_reward(rel_tol=1e-6)([r"\boxed{1.4142136}"], [r"\sqrt{2}"]) == [1.0]
    assert reward([r"\boxed{1.4142136}"], [r"\sqrt{2}"]) == [0.0]


def test_lenient_mode_takes_the_last_number():
    assert make_math_reward(strict=False)(["She sold 72 clips."], [GSM8K_SOLUTION]) == [1.0]
    assert make_math_reward(strict=False)(["She sold 72 clips, then 3 more."], [GSM8K_SOLUTION]) == [0.0]


def test_verify_answer():
    assert verify_answer(r"so the answer is $\frac{1}{2}$.", "#### 0.5")
    assert not verify_answer(r"\boxed{0.05}", "0.5")
    assert verify_answer(r"\boxed{[1,2)}", "[1, 2)", timeout=DEADLINE)
    assert verify_answer("72", "72", strict=False)


def test_trl_signature_and_logging():
    logged = {}
    out = math_accuracy_reward(
        prompts=["q1", "q2"],
        completions=[chat(r"\boxed{5}"), chat("no idea")],
        completion_ids=[[1], [2]],
        solution=["5", "5"],
        trainer_state=None,
        log_extra=lambda column, values: logged.__setitem__(column, values),
        log_metric=lambda *args: None,
        difficulty=["easy", "hard"],  # any other dataset column
    )
    assert out == [1.0, 0.0]
    assert logged == {"gold_answer": ["5", "5"], "extracted_answer": ["5", "[none]"]}


def test_factories_are_picklable_and_named():
    custom = make_math_reward(strict=False, timeout=1.5, rel_tol=1e-9, name="gsm8k_accuracy")
    clone = pickle.loads(pickle.dumps(custom))
    assert isinstance(clone, MathAccuracyReward)
    assert (clone.strict, clone.timeout, clone.rel_tol, clone.__name__) == (False, 1.5, 1e-9, "gsm8k_accuracy")
    assert clone(["#### 3"], ["3"]) == [1.0]
    assert math_accuracy_reward.__name__ == "math_accuracy_reward"
    assert pickle.loads(pickle.dumps(FormatReward(tags=("think",)))).__name__ == "format_reward"


FORMAT_CASES = [
    (FormatReward(), r"so \boxed{5}", 1.0),
    (FormatReward(), r"so \boxed{}", 0.0),
    (FormatReward(), r"so \boxed{5", 0.0),
    (FormatReward(), "#### 5", 0.0),
    (FormatReward(require_boxed=False, tags=("think", "answer")), "<think>hm</think><answer>5</answer>", 1.0),
    (FormatReward(require_boxed=False, tags=("think", "answer")), "<answer>5</answer><think>hm</think>", 0.0),
    (FormatReward(require_boxed=False, tags=("think", "answer")), "<think>hm</think><answer>5", 0.0),
    (FormatReward(tags=("think",)), r"<think>hm</think> \boxed{5}", 1.0),
    (FormatReward(tags=("think",)), "<think>hm</think> 5", 0.0),
]


@pytest.mark.parametrize("fmt, completion, expected", FORMAT_CASES)
def test_format_reward(fmt, completion, expected):
    assert fmt([completion]) == [expected]
    assert fmt([chat(completion)]) == [expected]


def test_default_format_reward():
    assert format_reward([r"\boxed{1}", "1", chat(r"\boxed{1}")]) == [1.0, 0.0, 1.0]


# Each input once as a completion and once as the gold, so the symbolic path (not the cache) answers every call.
ADVERSARIAL = {
    "tower_2003": r"\boxed{2003^{2002^{2001}}}",
    "tower_9": r"\boxed{9**9**9**9}",
    "tower_9_plain": "The answer is 9**9**9**9",
    "tower_bare": "2003^{2002^{2001}}",  # a bare answer, read whole
    "tower_r1": "<think>big</think>\n<answer>$2003^{2002^{2001}}$</answer>",
    "one_megabyte": "x" * 1_000_000 + r" so \boxed{x^{2003^{2002}}}",
    "nested_braces": r"\boxed{" + "{" * 5_000 + "1" + "}" * 5_000 + "}",
    "nested_frac": r"\boxed{" + r"\frac{1}{" * 500 + "2" + "}" * 500 + "}",
}


@pytest.fixture
def warm_pool():
    """The shared pool with every worker started: a deadline bounds an item's work, not a worker's start (importing
    math-verify, once per worker and after each kill, in the background; seconds on a loaded machine)."""
    pool = get_shared_pool()
    pool.warm()
    return pool


def _timed(fn, *args):
    start = time.monotonic()
    out = fn(*args)
    return out, time.monotonic() - start


@pytest.mark.parametrize("caller", ["main_thread", "thread_pool"])
@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_inputs_return_within_deadline(warm_pool, name, caller):
    text = ADVERSARIAL[name]
    gold = "7" if caller == "main_thread" else "8"  # a different pair per caller: no cached verdict
    if caller == "main_thread":
        assert threading.current_thread() is threading.main_thread()
        out, elapsed = _timed(reward, [text], [gold])
    else:
        with ThreadPoolExecutor(max_workers=1) as executor:
            out, elapsed = executor.submit(_timed, reward, [text], [gold]).result()
    assert out == [0.0]
    assert elapsed < DEADLINE + 1.0, f"{name} from {caller} took {elapsed:.2f}s"


def test_adversarial_gold_is_bounded_too(warm_pool):
    out, elapsed = _timed(reward, [r"\boxed{1}"], [ADVERSARIAL["tower_2003"]])
    assert out in ([0.0], [None]) and elapsed < DEADLINE + 1.0


def test_pool_is_healthy_after_adversarial_inputs(warm_pool):
    assert reward([ADVERSARIAL["nested_frac"]], ["h^{7} + 1"]) == [0.0]  # kills a worker, whatever ran before
    assert warm_pool.restarts > 0
    assert reward([r"\boxed{\sqrt{16}}", r"\boxed{[2,3)}"], ["4", "[2, 3)"]) == [1.0, 1.0]
    warm_pool.warm()
    out, elapsed = _timed(reward, [r"\boxed{\sqrt{25}}", r"\boxed{[2,4)}"], ["5", "[2, 4)"])
    assert out == [1.0, 1.0] and elapsed < 1.0
    assert warm_pool._alive <= warm_pool.num_workers


def test_batch_is_verified_in_parallel():
    pool = SymbolicPool(num_workers=2)
    try:
        pool.warm()
        hanging = [("1", "2003^{2002^{2001}}"), ("1", "2004^{2002^{2001}}")]
        out, elapsed = _timed(pool.check_many, hanging, DEADLINE)
        assert out == [TIMED_OUT, TIMED_OUT]
        assert elapsed < 2 * DEADLINE - 0.5, "two hanging items on two workers should take one deadline"
        assert pool.restarts == 2
        assert pool.check_many([("4", r"\sqrt{16}")], timeout=30) == [(True, True)]
    finally:
        pool.close()


def test_worker_killed_from_outside_is_replaced():
    pool = SymbolicPool(num_workers=1)
    try:
        assert pool.check_many([("2", r"\sqrt{4}")], timeout=30) == [(True, True)]
        pool._idle[0].process.kill()
        pool._idle[0].process.wait()
        assert pool.check_many([("3", r"\sqrt{9}")], timeout=30) == [(True, True)]
        assert pool.restarts == 1
    finally:
        pool.close()


def test_concurrent_callers_share_the_pool(warm_pool):
    completions = [rf"\boxed{{\sqrt{{{k * k}}}}}" for k in range(2, 10)]
    solutions = [str(k) for k in range(2, 10)]
    with ThreadPoolExecutor(max_workers=4) as executor:
        results = list(executor.map(lambda i: reward(completions[i::4], solutions[i::4]), range(4)))
    assert all(all(score == 1.0 for score in batch) for batch in results)


def test_a_timeout_is_remembered_only_for_deadlines_as_short(warm_pool):
    hanging = [r"\boxed{2005^{2002^{2001}}}"]
    assert _timed(make_math_reward(timeout=0.3), hanging, ["1"])[1] >= 0.3
    assert _timed(make_math_reward(timeout=0.3), hanging, ["1"])[1] < 0.1  # cached: it would hang again
    warm_pool.warm()
    assert _timed(make_math_reward(timeout=0.6), hanging, ["1"])[1] >= 0.6  # a longer deadline tries again

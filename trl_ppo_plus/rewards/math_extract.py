"""Answer extraction and the exact numeric fast path for math rewards.

Everything here is pure string work plus `fractions.Fraction`: no sympy, no processes, linear time in the input
length. `math.py` calls it in-process for every completion and sends only what it cannot decide here to the
symbolic worker pool (`math_verify_pool.py`).

Extraction order (`extract_answer`):
    1. the last top-level `\\boxed{...}` / `\\fbox{...}` (nested braces; `\\boxed{\\boxed{5}}` unwraps to `5`);
    2. the last `#### N` (GSM8K);
    3. the last "the (final) answer is ..." / "answer: ...";
    4. only when `strict=False`: the last number in the text.
An earlier rule wins even if a later one matches further down the text, as in open-instruct (boxed first) and
veRL's GSM8K parser (`####` anchor, last match).
"""

import re
from fractions import Fraction


_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])\s*")
_BRACE_RE = re.compile(r"\\.|[{}]")  # an escaped char (\{ \} \\) is skipped, so literal braces never count
_GSM8K_RE = re.compile(r"####\s*([^\n]*)")
_ANSWER_IS_RE = re.compile(r"answer\s*(?:is\s*:?|:|=)", re.IGNORECASE)
_LAST_NUMBER_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_SENTENCE_END_RE = re.compile(r"\.(?=\s|$)|,\s+(?=[A-Za-z]{2})|\n")
_LAST_NUMBER_TAIL = 2_000  # chars searched first for the last number; the whole text only if the tail has none

# Numbers: thousands separators must group by 3 (so "1,2" is a pair, not 12); the exponent is bounded so the fast
# path never builds a huge integer (`Fraction("1e999999999")` would): bigger exponents go to the symbolic pool.
_DEC = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+"
_SIGNED = rf"[+-]?\s*(?:{_DEC})"
_DECIMAL_RE = re.compile(
    rf"(?P<sign>[+-]?)\s*(?P<mant>{_DEC})(?:[eE](?P<e>[+-]?\d+))?"
    r"(?:\s*(?:\\times|\\cdot|×|\*|x)\s*10\s*\^\s*(?:\{\s*(?P<p>[+-]?\d+)\s*\}|(?P<q>[+-]?\d+)))?"
)
_FRAC_RE = re.compile(rf"(?P<sign>[+-]?)\s*\\[dt]?frac\s*(?:\{{\s*(?P<a>{_SIGNED})\s*\}}|(?P<a1>\d))\s*"
                      rf"(?:\{{\s*(?P<b>{_SIGNED})\s*\}}|(?P<b1>\d))")  # fmt: skip
_SLASH_RE = re.compile(rf"(?P<a>{_SIGNED})\s*/\s*(?P<b>{_SIGNED})")
_MAX_EXPONENT = 1_000
_MAX_NUMBER_CHARS = 256

_TEXT_CMD_RE = re.compile(r"\\(?:text|mbox|mathrm|textbf|operatorname)\s*\{[^{}]*\}")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree")
_PERCENT_RE = re.compile(r"(?:\\?%|\s+percent)$", re.IGNORECASE)
_CURRENCY_RE = re.compile(r"^(?:\\\$|\$|US\$|USD|€|£|¥|₹|Rs\.?)\s*")
_ASSIGN_RE = re.compile(r"^(?:[A-Za-z](?:_\{?\w+\}?)?\s*)?(?:=|\\approx|≈)\s*")
_UNIT_TAIL_RE = re.compile(r"^(?P<num>.*?[\d}.])\s*(?P<unit>[A-Za-z][A-Za-z.\s/]*)$")
_NOT_UNITS = {"pi", "e", "i", "sqrt", "x", "times", "cdot", "frac", "e-", "e+"}


def _match_braces(text: str, start: int, limit: int) -> dict[int, int]:
    """Map each `{` at index >= start to its matching `}` in one left-to-right pass (O(n), no recursion)."""
    pairs, stack = {}, []
    for m in _BRACE_RE.finditer(text, start, limit):
        char = m.group()
        if char == "{":
            stack.append(m.start())
        elif char == "}" and stack:
            pairs[stack.pop()] = m.start()
    return pairs


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """Top-level boxes as (start, end, content); a box that never closes (truncated output) is dropped."""
    first = _BOX_RE.search(text)
    if first is None:
        return []
    pairs = _match_braces(text, first.start(), len(text))
    boxes, covered = [], -1
    for m in _BOX_RE.finditer(text, first.start()):
        if m.start() < covered:
            continue  # inside an earlier box: `\boxed{\boxed{5}}` is handled by unwrapping below
        if m.end() < len(text) and text[m.end()] == "{":
            close = pairs.get(m.end())
            if close is None:
                continue
            boxes.append((m.start(), close + 1, text[m.end() + 1 : close]))
            covered = close + 1
        else:  # `\boxed 5`: one token, as in some MATH solutions
            token = re.match(r"[^\s${}]+", text[m.end() : m.end() + 256])
            if token:
                boxes.append((m.start(), m.end() + token.end(), token.group()))
    return boxes


def last_boxed(text: str) -> str | None:
    """Content of the last top-level `\\boxed{}` / `\\fbox{}`, unwrapping boxes that fill a box; None if none."""
    for _ in range(64):  # unwrap `\boxed{\boxed{...}}`; the bound only guards absurd nesting
        boxes = _boxes(text)
        if not boxes:
            return None
        start, end, content = boxes[-1]
        inner = content.strip()
        wrapped = _boxes(inner)
        if len(wrapped) == 1 and wrapped[0][0] == 0 and wrapped[0][1] == len(inner):
            text = inner
            continue
        return inner
    return None


def strip_math_delimiters(answer: str) -> str:
    """`$x$`, `$$x$$`, `\\(x\\)`, `\\[x\\]`, `**x**` -> `x`, and a trailing sentence period."""
    answer = answer.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("**", "**")):
        if len(answer) > len(left) + len(right) and answer.startswith(left) and answer.endswith(right):
            answer = answer[len(left) : -len(right)].strip()
    return answer.rstrip(".").strip()


def _after_anchor(tail: str) -> str:
    """The answer that follows "the answer is": the first math span, else up to the end of the sentence."""
    tail = tail.strip().lstrip(":").strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if tail.startswith(left):
            close = tail.find(right, len(left))
            if close > 0:
                return tail[len(left) : close].strip()
    end = _SENTENCE_END_RE.search(tail)
    return strip_math_delimiters(tail[: end.start()] if end else tail)


def extract_answer(text: str, strict: bool = True) -> str | None:
    """The final answer written in `text`, as a string, or None when there is none.

    Args:
        text: a completion, or a gold solution (a MATH solution with `\\boxed{}`, a GSM8K one with `#### N`).
        strict: when False, fall back to the last number in the text (rewards answers that carry no marker, which
            also rewards a number that merely happens to come last). When True, only the three anchored forms count.
    """
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed:
        return boxed
    idx = text.rfind("####")
    if idx >= 0:
        answer = strip_math_delimiters(_GSM8K_RE.match(text, idx).group(1))
        if answer:
            return answer
    last = None
    for last in _ANSWER_IS_RE.finditer(text):  # noqa: B007 (we want the last match)
        pass
    if last is not None:
        answer = _after_anchor(text[last.end() : last.end() + 1_000])
        if answer:
            return answer
    if not strict:
        for window in (text[-_LAST_NUMBER_TAIL:], text):
            numbers = _LAST_NUMBER_RE.findall(window)
            if numbers:
                return numbers[-1]
    return None


def _to_fraction(sign: str, mantissa: str, exponent: int = 0) -> Fraction | None:
    if abs(exponent) > _MAX_EXPONENT:
        return None
    value = Fraction(mantissa.replace(",", "").replace(" ", "")) * Fraction(10) ** exponent
    return -value if sign == "-" else value


def _signed(text: str) -> Fraction | None:
    m = _DECIMAL_RE.fullmatch(text.strip())
    if m is None or m.group("p") or m.group("q"):
        return None
    return _to_fraction(m.group("sign"), m.group("mant"), int(m.group("e") or 0))


def _parse_plain(t: str) -> Fraction | None:
    """A bare number: decimal, scientific, `a/b` or `\\frac{a}{b}`; None for anything else."""
    m = _DECIMAL_RE.fullmatch(t)
    if m:
        exponent = int(m.group("e") or 0) + int(m.group("p") or m.group("q") or 0)
        return _to_fraction(m.group("sign"), m.group("mant"), exponent)
    m = _FRAC_RE.fullmatch(t) or _SLASH_RE.fullmatch(t)
    if m is None:
        return None
    groups = m.groupdict()
    num, den = _signed(groups.get("a1") or groups["a"]), _signed(groups.get("b1") or groups["b"])
    if num is None or den is None or den == 0:
        return None
    value = num / den
    return -value if groups.get("sign") == "-" else value


def parse_number(answer: str | None) -> tuple[Fraction, bool] | None:
    """Parse an extracted answer as an exact number: (value, is_percent), or None if it is not a plain number.

    Accepts thousands separators (`1,234`, `1{,}234`), currency (`$`, `\\$`, `USD`, `€`), trailing units (`5 cm`,
    `5\\text{ apples}`, `30^\\circ`), percentages, `x = 5`, negatives (also `−`), decimals, scientific notation
    (`1.5e3`, `1.5 \\times 10^{3}`) and fractions (`3/4`, `\\frac{3}{4}`, `\\dfrac34`). Anything else (radicals,
    powers, sets, expressions) returns None and goes to the symbolic path.
    """
    if answer is None or len(answer) > _MAX_NUMBER_CHARS:
        return None
    t = strip_math_delimiters(answer)
    if len(t) > 2 and t[0] == "{" and t[-1] == "}" and "{" not in t[1:-1]:
        t = t[1:-1]
    t = t.replace("−", "-").replace("{,}", ",").replace("\\!", "").replace("\\,", "").replace("\\ ", " ")
    t = t.replace("\\left", "").replace("\\right", "").replace("~", " ")
    t = _DEGREE_RE.sub("", _TEXT_CMD_RE.sub(" ", t)).strip()
    is_percent = bool(_PERCENT_RE.search(t))
    t = _PERCENT_RE.sub("", t).strip()
    t = _CURRENCY_RE.sub("", _ASSIGN_RE.sub("", t)).strip()
    t = _CURRENCY_RE.sub("", t).strip()  # "-$5" is rare, "$-5" and "x = $5" are not
    value = _parse_plain(t)
    if value is None:
        m = _UNIT_TAIL_RE.match(t)
        words = m.group("unit").lower().replace(".", " ").split() if m else []
        if m and words and all(len(w) >= 2 and w not in _NOT_UNITS for w in words):
            num = m.group("num").strip()
            is_percent = is_percent or bool(_PERCENT_RE.search(num))
            value = _parse_plain(_CURRENCY_RE.sub("", _PERCENT_RE.sub("", num).strip()))
    return None if value is None else (value, is_percent)


def numbers_equal(pred: tuple[Fraction, bool], gold: tuple[Fraction, bool], rel_tol: float = 0.0) -> bool:
    """Exact equality of two parsed numbers (or within `rel_tol`); `p%` also matches `p` and `p/100`."""
    pred_values = {pred[0], pred[0] / 100} if pred[1] else {pred[0]}
    gold_values = {gold[0], gold[0] / 100} if gold[1] else {gold[0]}
    for p in pred_values:
        for g in gold_values:
            if p == g or (rel_tol > 0 and abs(p - g) <= Fraction(rel_tol) * max(abs(p), abs(g))):
                return True
    return False

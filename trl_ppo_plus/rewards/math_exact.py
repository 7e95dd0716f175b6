"""Exact answer comparison in-process, without sympy: the fast path in front of the symbolic worker pool.

Two answers are compared here, with `fractions.Fraction`, when both are:
    - plain numbers (`parse_number`): decimals, `1,234`, `1.5e3`, `1.5 \\times 10^{3}`, `a/b`, `\\frac{a}{b}`,
      currency, units and percentages (`numbers_equal`, with an optional relative tolerance);
    - or, by `canonical`: q·√m, q·π (q rational), ±∞, and sets `\\{...\\}`, intervals `[a, b)` and tuples of those.
Everything else (expressions, matrices, unions, mixed kinds) returns None and goes to math-verify in a worker.
Exponents are bounded, so nothing here can build a huge integer (`1e999999999` goes to the pool).
"""

import functools
import math
import re
from fractions import Fraction

from .math_extract import DECIMAL_COMMA_RE, strip_math_delimiters


# Numbers: thousands separators must group by 3 (so "1,2" is a pair, not 12); the exponent is bounded so the fast
# path never builds a huge integer (`Fraction("1e999999999")` would): bigger exponents go to the symbolic pool.
_DEC = r"(?:\d{1,3}(?:,\d{3})+|\d{1,3}(?:[ \u00a0\u202f]\d{3})+|\d+)(?:\.\d*)?|\.\d+"
_SIGNED = rf"[+-]?\s*(?:{_DEC})"
_DECIMAL_RE = re.compile(
    rf"(?P<sign>[+-]?)\s*(?P<mant>{_DEC})(?:[eE](?P<e>[+-]?\d+))?"
    r"(?:\s*(?:\\times|\\cdot|×|\*|x)\s*10\s*\^\s*(?:\{\s*(?P<p>[+-]?\d+)\s*\}|(?P<q>[+-]?\d+)))?"
)
_FRAC_RE = re.compile(rf"(?P<sign>[+-]?)\s*\\[dtc]?frac\s*(?:\{{\s*(?P<a>{_SIGNED})\s*\}}|(?P<a1>\d))\s*"
                      rf"(?:\{{\s*(?P<b>{_SIGNED})\s*\}}|(?P<b1>\d))")  # fmt: skip
_SLASH_RE = re.compile(rf"(?P<a>{_SIGNED})\s*/\s*(?P<b>{_SIGNED})")
_THOUSANDS_RE = re.compile(r"\s*(?:\{,\}|,\\!)\s*")  # `1{,}234`, `11,\! 111`: a thousands separator
_INT_RE = re.compile(r"-?\d{1,30}")
_MAX_EXPONENT = 1_000
_MAX_NUMBER_CHARS = 256

_TEXT_CMD_RE = re.compile(r"\\(?:text|mbox|mathrm|textbf|operatorname)\s*\{[^{}]*\}")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree")
_PERCENT_RE = re.compile(r"(?:\\?%|\s+percent)$", re.IGNORECASE)
_CURRENCY_RE = re.compile(r"^(?:\\\$|\$|US\$|USD|€|£|¥|₹|Rs\.?)\s*")
_CURRENCY_SUFFIX_RE = re.compile(r"\s*(?:\\\$|\$|€|£|¥|₹)$")  # `2,74 €`, `1,000.99€`, as written in Europe
_ASSIGN_RE = re.compile(r"^(?:[A-Za-z](?:_\{?\w+\}?)?\s*)?(?:=|\\approx|≈)\s*")
_UNIT_TAIL_RE = re.compile(  # `5 apples`, `18 km/h`, and a unit squared or cubed: `18 cm^2`, `18 cm²`
    r"^(?P<num>.*?[\d}.])\s*(?P<unit>[A-Za-z][A-Za-z.\s/]*)(?:\^\s*\{?\s*[23]\s*\}?|[²³])?$"
)
_NOT_UNITS = {"pi", "e", "i", "sqrt", "x", "times", "cdot", "frac", "e-", "e+"}
# Two letters after a number are a unit only when they name one: `5 cm` is 5, `2xy` is an algebraic answer.
_TWO_LETTER_UNITS = {"cm", "mm", "km", "dm", "nm", "kg", "mg", "ml", "cl", "dl", "ha", "ft", "in", "yd", "mi", "oz"}
_TWO_LETTER_UNITS |= {"lb", "hr", "ms", "kw", "kb", "mb", "gb", "tb", "hz", "pa"}


def _to_fraction(sign: str, mantissa: str, exponent: int = 0) -> Fraction | None:
    if abs(exponent) > _MAX_EXPONENT:
        return None
    value = Fraction(re.sub(r"[,\s]", "", mantissa)) * Fraction(10) ** exponent
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

    Accepts thousands separators (`1,234`, `1{,}234`), decimal commas (`2,74`, `1 234,50`), currency before or after
    the number (`$5`, `\\$5`, `USD 5`, `2,74 €`), trailing units (`5 cm`, `5\\text{ apples}`, `30^\\circ`),
    percentages, `x = 5`, negatives (also `−`), decimals, scientific notation (`1.5e3`, `1.5 \\times 10^{3}`) and
    fractions (`3/4`, `\\frac{3}{4}`, `\\dfrac34`). Anything else (radicals, powers, sets, expressions) returns None
    and goes to the symbolic path.
    """
    if answer is None or len(answer) > _MAX_NUMBER_CHARS:
        return None
    if _INT_RE.fullmatch(answer):  # the common case (GSM8K), without the regex pipeline below
        return Fraction(int(answer)), False
    return _parse_number(answer)


@functools.lru_cache(maxsize=1 << 16)  # pure; GRPO scores the same gold (and often the same answer) many times
def _parse_number(answer: str) -> tuple[Fraction, bool] | None:
    t = strip_math_delimiters(answer)
    if len(t) > 2 and t[0] == "{" and t[-1] == "}" and "{" not in t[1:-1]:
        t = t[1:-1]
    t = _THOUSANDS_RE.sub(",", t).replace("−", "-").replace("\\!", "").replace("\\,", "").replace("\\ ", " ")
    t = t.replace("\\left", "").replace("\\right", "").replace("~", " ")
    t = _DEGREE_RE.sub("", _TEXT_CMD_RE.sub(" ", t)).strip()
    is_percent = bool(_PERCENT_RE.search(t))
    t = _PERCENT_RE.sub("", t).strip()
    t = _CURRENCY_RE.sub("", _ASSIGN_RE.sub("", t)).strip()
    t = _CURRENCY_RE.sub("", t).strip()  # "-$5" is rare, "$-5" and "x = $5" are not
    t = _CURRENCY_SUFFIX_RE.sub("", t)
    if DECIMAL_COMMA_RE.fullmatch(t):  # a decimal comma, as written in much of Europe
        t = t.replace(",", ".")
    value = _parse_plain(t)
    if value is None:
        m = _UNIT_TAIL_RE.match(t)
        words = m.group("unit").lower().replace(".", " ").split() if m else []
        if m and words and all(len(w) > 2 and w not in _NOT_UNITS or w in _TWO_LETTER_UNITS for w in words):
            num = m.group("num").strip()
            is_percent = is_percent or bool(_PERCENT_RE.search(num))
            value = _parse_plain(_CURRENCY_RE.sub("", _PERCENT_RE.sub("", num).strip()))
    return None if value is None else (value, is_percent)


def numbers_equal(pred: tuple[Fraction, bool], gold: tuple[Fraction, bool], rel_tol: float = 0.0) -> bool:
    """Exact equality of two parsed numbers (or within `rel_tol`); `p%` also matches `p` and `p/100`."""
    if pred[0] == gold[0]:
        return True
    if not (pred[1] or gold[1] or rel_tol):  # the common case, without building sets of fractions
        return False
    pred_values = {pred[0], pred[0] / 100} if pred[1] else {pred[0]}
    gold_values = {gold[0], gold[0] / 100} if gold[1] else {gold[0]}
    for p in pred_values:
        for g in gold_values:
            if p == g or (rel_tol > 0 and abs(p - g) <= Fraction(rel_tol) * max(abs(p), abs(g))):
                return True
    return False


# Structured answers: radicals, multiples of pi, infinity, and sets / intervals / tuples of those.
_WS_RE = re.compile(r"\s+(?!\d)|(?<![\d,])\s+")  # whitespace goes, except before a digit after a digit or a comma
# ("1 2" is not 12, and "32, 349" is a pair, not 32349; `32,\! 349` is 32349)
_LATEX_NOISE_RE = re.compile(r"\\left|\\right|\\[,;:! ]|\\displaystyle|\$")
_INFINITY = {"\\infty": 1, "+\\infty": 1, "-\\infty": -1, "∞": 1, "-∞": -1}
_EMPTY_SETS = {"\\emptyset", "\\varnothing", "\\{\\}", "∅"}


def _sign(q: Fraction) -> int:
    return (q > 0) - (q < 0)


def _coefficient(text: str) -> Fraction | None:
    """The rational factor in front of `\\sqrt` / `\\pi`: empty is 1, `-` is -1."""
    text = text.removesuffix("\\cdot").removesuffix("\\times").removesuffix("*")
    if text in ("", "+", "-"):
        return Fraction(-1 if text == "-" else 1)
    return _parse_plain(text)


def _split_top_level(text: str) -> list[str] | None:
    """Split on commas outside any brackets; None if the brackets do not balance (e.g. `[0,1] \\cup [2,3]`)."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth < 0:
                return None
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return None if depth else [*parts, text[start:]]


def _scalar(t: str) -> tuple | None:
    """Canonical key of a real number we can compare exactly, unique per value; None for anything else.

    q·√m (q rational, m >= 0; rationals are the case m = 1) -> ("alg", sign, q²·m); q·π -> ("pi", q); ±∞ -> ("inf", ±1).
    """
    if t in _INFINITY:
        return ("inf", _INFINITY[t])
    value = _parse_plain(t)
    if value is not None:
        return ("alg", _sign(value), value * value)
    frac = _GENERIC_FRAC_RE.fullmatch(t) or _GENERIC_SLASH_RE.fullmatch(t)
    if frac:  # (√ or π form) / rational
        inner, den = _scalar(frac.group("a")), _parse_plain(frac.group("b"))
        if inner is None or not den or inner[0] == "inf":
            return None
        sign = -1 if frac.groupdict().get("sign") == "-" else 1
        if inner[0] == "pi":
            return _pi_key(sign * inner[1] / den)
        return ("alg", sign * inner[1] * _sign(den), inner[2] / (den * den))
    if t.endswith("\\pi"):
        q = _coefficient(t[:-3])
        return None if q is None else _pi_key(q)
    root = _SQRT_RE.fullmatch(t)
    if root:
        q, m = _coefficient(root.group("coef")), _parse_plain(root.group("m") or root.group("m1"))
        if q is None or m is None or m < 0:
            return None
        return ("alg", _sign(q) if m else 0, q * q * m)
    return None


def _pi_key(q: Fraction) -> tuple:
    return ("pi", q) if q else ("alg", 0, Fraction(0))


_GENERIC_FRAC_RE = re.compile(r"(?P<sign>[+-]?)\\[dtc]?frac\{(?P<a>(?:[^{}]|\{[^{}]*\})+)\}\{(?P<b>[^{}]+)\}")
_GENERIC_SLASH_RE = re.compile(r"(?P<a>[^/]*\\(?:sqrt|pi)[^/]*)/(?P<b>[^/\\]+)")
_SQRT_RE = re.compile(r"(?P<coef>[^\\]*?(?:\\[dt]?frac\{[^{}]*\}\{[^{}]*\})?(?:\\cdot|\\times|\*)?)"
                      r"\\sqrt(?:\{(?P<m>[^{}]+)\}|(?P<m1>\d))")  # fmt: skip


def canonical(answer: str | None) -> tuple | None:
    """A hashable key, equal for two answers exactly when they are equal, for the forms this module knows."""
    if answer is None or len(answer) > _MAX_NUMBER_CHARS:
        return None
    return _canonical(answer)


@functools.lru_cache(maxsize=1 << 16)
def _canonical(answer: str) -> tuple | None:
    t = _THOUSANDS_RE.sub(",", answer)
    t = (
        _WS_RE.sub("", _LATEX_NOISE_RE.sub(" ", t))
        .replace("−", "-")
        .replace("\\dfrac", "\\frac")
        .replace("\\cfrac", "\\frac")
    )
    t = re.sub(r"^(?:[A-Za-z](?:_\{?\w+\}?)?(?:=|\\in))", "", t)  # `x = 3\sqrt{2}`, `x \in [1, 2)`
    if t in _EMPTY_SETS:
        return ("set", frozenset())
    scalar = _scalar(t)
    if scalar is not None:
        return ("scalar", scalar)
    if len(t) >= 2 and t[0] in "([" and t[-1] in ")]" or t.startswith("\\{") and t.endswith("\\}"):
        is_set = t.startswith("\\{")
        inner = t[2:-2] if is_set else t[1:-1]
        left, right = ("{", "}") if is_set else (t[0], t[-1])
    else:
        inner, left, right, is_set = t, "", "", True  # a bare list `1, 2` reads as a set, as math-verify does
    parts = _split_top_level(inner.replace("\\{", "{").replace("\\}", "}"))
    if parts is None or len(parts) < 2:
        return None
    keys = [_scalar(part) for part in parts]
    if any(key is None for key in keys):
        return None
    if is_set:
        return ("set", frozenset(keys))
    if len(parts) > 2 and (left, right) != ("(", ")"):
        return None
    return ("seq", left, right, tuple(keys))  # an interval `[a, b)` or a tuple `(a, b, c)`


def _float(key: tuple) -> float:
    kind, *value = key
    if kind == "inf":
        return math.inf * value[0]
    if kind == "pi":
        return float(value[0]) * math.pi
    return value[0] * math.sqrt(value[1])


def exact_equal(pred: str | None, gold: str | None, rel_tol: float = 0.0) -> bool | None:
    """True / False when both answers have a form `canonical` knows and of the same kind (numbers, sets, or
    intervals/tuples); None when only math-verify can tell. `rel_tol` > 0 also accepts two close numbers."""
    pred_key, gold_key = canonical(pred), canonical(gold)
    if pred_key is None or gold_key is None or pred_key[0] != gold_key[0]:
        return None
    if pred_key == gold_key:
        return True
    if rel_tol > 0 and pred_key[0] in ("scalar", "seq"):  # a number, or an interval / tuple element by element
        pairs = [(pred_key[1], gold_key[1])] if pred_key[0] == "scalar" else None
        if pred_key[0] == "seq" and pred_key[1:3] == gold_key[1:3] and len(pred_key[3]) == len(gold_key[3]):
            pairs = list(zip(pred_key[3], gold_key[3]))
        try:
            return bool(pairs) and all(math.isclose(_float(p), _float(g), rel_tol=rel_tol) for p, g in pairs)
        except OverflowError:  # beyond float range: let math-verify decide
            return None
    return False

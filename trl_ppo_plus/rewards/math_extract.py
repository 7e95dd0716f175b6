"""Answer extraction for math rewards: find the final answer in a completion or a gold solution.

Pure string work, linear time in the input length (a 1 MB completion or 5,000 nested braces take milliseconds),
no recursion. `math.py` calls it in-process for every completion.

Extraction order (`extract_answer`):
    1. the last top-level `\\boxed{...}` / `\\fbox{...}` (nested braces; `\\boxed{\\boxed{5}}` unwraps to `5`);
    2. the last `#### N` (GSM8K);
    3. the last "the (final) answer is ..." / "answer: ...";
    4. only when `strict=False`: the last number in the text.
An earlier rule wins even if a later one matches further down the text, as in open-instruct (boxed first) and
veRL's GSM8K parser (`####` anchor, last match).
"""

import re


_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])\s*")
_BRACE_RE = re.compile(r"\\.|[{}]")  # an escaped char (\{ \} \\) is skipped, so literal braces never count
_GSM8K_RE = re.compile(r"####\s*([^\n]*)")
_ANSWER_IS_RE = re.compile(r"answer\s*(?:is\s*:?|:|=)", re.IGNORECASE)
_LAST_NUMBER_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_SENTENCE_END_RE = re.compile(r"\.(?=\s|$)|,\s+(?=[A-Za-z]{2})|\n")
_LAST_NUMBER_TAIL = 2_000  # chars searched first for the last number; the whole text only if the tail has none


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

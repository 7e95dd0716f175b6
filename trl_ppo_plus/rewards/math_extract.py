"""Answer extraction for math rewards: find the final answer in a completion or a gold solution.

Pure string work, linear time in the input length (a 1 MB completion or 5,000 nested braces take milliseconds),
no recursion. `math.py` calls it in-process for every completion.

Extraction order (`extract_answer`); the first rule that finds an answer wins:
    1. the last closed `<answer>...</answer>` block (R1-style prompts), read with rules 2-6 inside it alone;
    2. the last top-level `\\boxed{...}` / `\\fbox{...}` (nested braces; `\\boxed{\\boxed{5}}` unwraps to `5`;
       boxes separated only by "and", commas or spacing, `\\boxed{-2} \\quad \\boxed{1}`, are read together as
       `-2, 1`), unless a "final answer is" statement comes after it (Minerva's `Final Answer: The final answer is`);
    3. the last `#### N` (GSM8K);
    4. the last answer marker: "the (final) answer is", `answer:` / `**Answer**:` / `answer =`, `Answer $9$`,
       `A: 18` at the start of a line (GSM8K model solutions), and "la réponse est", "答案是", "la respuesta es",
       "die Antwort ist";
       a marker followed by a sentence ("The largest $n$ is 34") gives what follows its last "is" / "=";
    5. a bare answer: the whole text is one number or one LaTeX expression, optionally in `$...$`;
    6. a closing math span: the last `$...$` / `\\[...\\]` / `\\(...\\)` of the text, in its final sentence
       ("Therefore $x \\geq 5$ is the solution."), as Math-Verify reads free-form answers; spans listed side by
       side (`$1$, $2$ or $3$`) are read together, as boxes are;
    7. only when `strict=False`: the last number in the text (`1 234,5` and `2,74` read as one number each).
Inside LaTeX (a box, a math span) a comma between digits separates items (`\\boxed{1,2}` is the pair 1, 2, as
Math-Verify reads it); only plain text has decimal commas (`Answer: 2,74`).
Rules 1-6 are "an explicit answer" (strict mode); rule 7 also rewards a number that merely comes last. Boxes and
`####` outrank an earlier or later "the answer is", as in open-instruct (boxed first) and veRL's GSM8K parser.
"""

import re


_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])\s*")
_BRACE_RE = re.compile(r"\\.|[{}]")  # an escaped char (\{ \} \\) is skipped, so literal braces never count
_GSM8K_RE = re.compile(r"####\s*([^\n]*)")
# Answer markers, each behind a cheap substring test (one alternation of them all is 5x slower on GSM8K text):
_ANSWER_MARKERS = (
    # answer is / answer: / Answer $9$ / **Answer**: 9
    ("nswer", re.compile(r"[aA](?i:nswer)(?:\*\*|__)?\s*(?:is\s*:?|:|=|(?=\$|\\\[|\\\())")),
    ("a", re.compile(r"A[ \t*]*:")),  # GSM8K model solutions end in "A: 18" (at a line start: `_at_line_start`)
    ("ponse", re.compile(r"[rR][ée](?i:ponse)\s*(?:est|:|=)")),  # la réponse est
    ("答案", re.compile(r"答案\s*(?:是|为|:|：|=)")),
    ("espuesta", re.compile(r"[rR](?i:espuesta)\s*(?:es|:|=)")),
    ("ntwort", re.compile(r"[aA](?i:ntwort)\s*(?:ist|lautet|:|=)")),
)
_FINAL_ANSWER_RE = re.compile(r"final\s+answer\s*(?:is|:)", re.IGNORECASE)
_BOX_JOINER_RE = re.compile(
    r"(?:\s|,|;|\$|\\[,;:! ]|\\q?quad|\\\[|\\\]|\\\(|\\\)|\band\b|\bor\b|\\text\{\s*(?:and|or|,)?\s*\})*"
)
# A span never holds its own opener, so an unclosed `\[` is scanned only up to the next one (linear, not quadratic).
_MATH_SPAN_RE = re.compile(
    r"\$\$((?:(?!\$\$).)+?)\$\$|\\\[((?:(?!\\\[).)+?)\\\]|\\\(((?:(?!\\\().)+?)\\\)|\$([^$]+?)\$", re.DOTALL
)
_SPECIAL_TOKEN_RE = re.compile(r"(?:<\|[^|>]{1,40}\|>|</s>|<eos>)\w*$")  # a `<|im_start|>user` left at the end
_TEXT_CMD_RE = re.compile(r"\\(?:text|mbox|textbf|mathrm|operatorname|begin|end)\s*\{[^{}]*\}")
_PROSE_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}\s+[A-Za-z]{2,}(?![A-Za-z(])")  # two words in a row
_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
_COPULA_RE = re.compile(r"\b(?:is|are|was|equals|be)\b|=", re.IGNORECASE)
_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?!\d)|\d+)(?:\.\d+|,\d{1,2}(?!\d))?(?:/\d+)?|-?\.\d+"
_LAST_NUMBER_RE = re.compile(_NUMBER)
# `1,22`, `0,111`, `1 234,50`: a decimal comma, never a thousands separator (those group by 3)
DECIMAL_COMMA_RE = re.compile(r"[+-]?(?:0,\d+|\d+,(?:\d{1,2}|\d{4,})|\d{1,3}(?:[ \u00a0\u202f]\d{3})+,\d{1,2})")
_PLAIN_NUMBER_TAIL_RE = re.compile(r"[ \t*]*:?[ \t*]*(-?\d+(?:\.\d+)?)[ \t]*\.?[ \t]*(?:\n|$)")
_SENTENCE_END_RE = re.compile(r"[.!?](?=\s|$)|[。！？；，]|,\s+(?=[A-Za-z]{2})|\n")
_LAST_NUMBER_TAIL = 2_000  # chars searched first for the last number; the whole text only if the tail has none
_MARKER_TAIL = 1_000  # chars searched first for the last answer marker
_SPAN_TAIL = 4_000  # chars searched for a closing math span
_MAX_BARE = 300  # longest text read whole as a bare answer
_MAX_JOINED_BOXES = 16  # `\boxed{1} \boxed{2}` read together, up to this many


def _latex_commas(answer: str) -> str:
    """In LaTeX a comma between digits separates items (`\\boxed{1,2}` is the pair 1, 2, as Math-Verify reads it);
    only plain text has decimal commas (`1,22`). `1,2` -> `1, 2`, so that `parse_number` never reads it as 1.2."""
    return answer.replace(",", ", ") if DECIMAL_COMMA_RE.fullmatch(answer) else answer


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


def _unwrap(content: str) -> str:
    """`\\boxed{\\boxed{5}}` -> `5`: unwrap boxes that fill a box; the bound only guards absurd nesting."""
    for _ in range(64):
        inner = content.strip()
        wrapped = _boxes(inner)
        if not (len(wrapped) == 1 and wrapped[0][0] == 0 and wrapped[0][1] == len(inner)):
            return inner
        content = wrapped[0][2]
    return content.strip()


def _last_boxes(text: str) -> tuple[int, str] | None:
    """(start, content) of the last box, joined with the boxes just before it that only spacing or "and" separate."""
    boxes = _boxes(text)
    if not boxes:
        return None
    start, end, content = boxes[-1]
    group = [_latex_commas(_unwrap(content))]
    for prev_start, prev_end, prev_content in reversed(boxes[-_MAX_JOINED_BOXES:-1]):
        if _BOX_JOINER_RE.fullmatch(text, prev_end, start) is None:
            break
        group.append(_latex_commas(_unwrap(prev_content)))
        start = prev_start
    group = [part for part in reversed(group) if part]
    return (start, ", ".join(group)) if group else None


def last_boxed(text: str) -> str | None:
    """Content of the last top-level `\\boxed{}` / `\\fbox{}`, unwrapping boxes that fill a box; None if none."""
    boxes = _boxes(text)
    return (_unwrap(boxes[-1][2]) or None) if boxes else None


def strip_math_delimiters(answer: str) -> str:
    """`$x$`, `$$x$$`, `\\(x\\)`, `\\[x\\]`, `**x**` -> `x`, and a trailing sentence period or `*`."""
    answer = answer.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("**", "**")):
        if len(answer) > len(left) + len(right) and answer.startswith(left) and answer.endswith(right):
            answer = answer[len(left) : -len(right)].strip()
    return answer.rstrip(".。").strip().strip("*").strip()  # and a bold marker left on one side: `**42**.`


def is_prose(text: str) -> bool:
    """Whether `text` reads as words (two in a row, outside `\\text{}` and LaTeX commands), not as math."""
    return bool(_PROSE_RE.search(_TEXT_CMD_RE.sub(" ", text)))


def _first_span(tail: str) -> str | None:
    """The math span that `tail` starts with; inline spans (`$`, `\\(`) do not cross lines, `\\$` is a dollar."""
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if tail.startswith(left):
            close = tail.find(right, len(left))
            while close > 0 and right == "$" and tail[close - 1] == "\\":
                close = tail.find(right, close + 1)
            if close > 0 and not (left in ("$", "\\(") and "\n" in tail[:close]):
                return _latex_commas(tail[len(left) : close].strip())
    return None


def _after_anchor(tail: str) -> str:
    """The answer that follows a marker: the first math span, else the sentence; in a sentence, what follows its
    last "is" or "=" ("The largest $n$ is 34" -> 34), else its last number."""
    plain = _PLAIN_NUMBER_TAIL_RE.match(tail)
    if plain:  # "A: 18", "The answer is 72." (the common case, without the steps below)
        return plain.group(1)
    tail = tail.strip().lstrip(":：*").strip()  # `**Answer:** 72`
    span = _first_span(tail)
    if span is not None:
        return span
    end = _SENTENCE_END_RE.search(tail)
    answer = strip_math_delimiters(tail[: end.start()] if end else tail)
    if not is_prose(answer):
        return answer
    copula = None
    for copula in _COPULA_RE.finditer(answer):  # noqa: B007 (we want the last match)
        pass
    if copula is not None:
        rest = answer[copula.end() :].strip()
        return _first_span(rest) or strip_math_delimiters(rest) or answer
    numbers = _LAST_NUMBER_RE.findall(answer)
    return numbers[-1] if numbers else answer


def _last_marker(text: str, pattern: re.Pattern, begin: int = 0) -> re.Match | None:
    last = None
    for last in pattern.finditer(text, begin):  # noqa: B007 (we want the last match)
        pass
    return last


def _at_line_start(text: str, index: int) -> bool:
    """Whether only spaces, `*` or `#` stand between the line start and `index` (a backward walk over them)."""
    index -= 1
    while index >= 0 and text[index] in " \t*#":
        index -= 1
    return index < 0 or text[index] == "\n"


def _strip_special_tokens(text: str) -> str:
    """Drop chat-template tokens left at the end (`... is $(7, 6)$. <|im_start|>user`); bounded work per token."""
    text = text.rstrip()
    for _ in range(8):
        m = _SPECIAL_TOKEN_RE.search(text, max(0, len(text) - 64))
        if m is None:
            break
        text = text[: m.start()].rstrip()
    return text


def _last_answer_marker(text: str) -> re.Match | None:
    """The last answer marker of any kind, looked for in the last `_MARKER_TAIL` chars first (a match there is the
    last one), then in the whole text."""
    start = max(0, len(text) - _MARKER_TAIL)
    start = text.rfind("\n", 0, start) + 1 if start else 0  # from a line start: no marker is cut in two
    for begin in (start, 0) if start else (0,):
        lowered = text[begin:].lower()
        found = []
        for key, pattern in _ANSWER_MARKERS:
            if key == "a":  # `A:` counts only at the start of a line (after spaces, `*` or `#`)
                found += [m for m in pattern.finditer(text, begin) if _at_line_start(text, m.start())][-1:]
            elif key in lowered:
                found.append(_last_marker(text, pattern, begin))
        found = [m for m in found if m is not None]
        if found:
            return max(found, key=lambda m: m.start())
    return None


def _bare_answer(text: str) -> str | None:
    """The whole text when it is one answer: a number or a LaTeX expression, optionally in `$...$`, no prose."""
    if len(text) > 2 * _MAX_BARE:
        return None
    text = _strip_special_tokens(text).lstrip()
    if not text or len(text) > _MAX_BARE or "\n\n" in text:
        return None
    answer = strip_math_delimiters(text)
    if text.startswith(("$", "\\(", "\\[")) and text.rstrip(" .").endswith(("$", "\\)", "\\]")):
        answer = _latex_commas(answer)  # `$1,2$` is a pair, `1,22` a decimal
    if answer.count("$") % 2 == 0 and "\\$" not in answer:
        answer = " ".join(answer.replace("$", " ").split())  # `$28$ %`, `$28$ percent`
    if not answer or is_prose(answer) or _BOX_RE.search(answer):  # a box left open (truncated) is no answer
        return None
    words = _WORD_RE.findall(_TEXT_CMD_RE.sub(" ", answer))
    if len(words) > 1 or (words and re.search(r"\d", answer) and not re.search(r"\d\D*" + words[0], answer)):
        return None  # one word ("Evelyn") or a unit after a number ("5 apples") is an answer, "Soucis : 2,74" is not
    return answer


def _closing_span(text: str) -> str | None:
    """The last math span of the text when it sits in the final sentence and holds math, not currency prose; joined
    with the spans just before it that only commas, "and" or "or" separate (`$1$, $2$ or $3$` -> `1, 2, 3`), as boxes
    are, so that a list of candidates is one answer."""
    tail = _strip_special_tokens(text[-_SPAN_TAIL:])
    spans = list(_MATH_SPAN_RE.finditer(tail))
    if not spans:
        return None
    last = spans[-1]
    after = tail[last.end() :].strip()
    if len(after) > 100 or re.search(r"[.!?。](?:\s|$)+\S|\d", after) or "\n\n" in after:
        return None  # more sentences or numbers follow: the span is a step, not the result
    content = next(group for group in last.groups() if group is not None).strip()
    if (
        not re.search(r"[^\W_]", content)
        or is_prose(content)
        or content.endswith(("=", "+", "-", "\\times", "\\cdot"))
    ):
        return None
    group, start = [_latex_commas(content)], last.start()
    for prev in reversed(spans[-_MAX_JOINED_BOXES:-1]):
        if _BOX_JOINER_RE.fullmatch(tail, prev.end(), start) is None:
            break
        group.append(_latex_commas(next(g for g in prev.groups() if g is not None).strip()))
        start = prev.start()
    return ", ".join(part for part in reversed(group) if part)


def extract_answer(text: str, strict: bool = True) -> str | None:
    """The final answer written in `text`, as a string, or None when there is none.

    Args:
        text: a completion, or a gold solution (a MATH solution with `\\boxed{}`, a GSM8K one with `#### N`).
        strict: when False, fall back to the last number in the text (rewards answers that carry no marker, which
            also rewards a number that merely happens to come last). When True, only explicit answers count: the
            rules 1-6 of the module docstring.
    """
    if not text:
        return None
    close = text.rfind("</answer>")
    open_ = text.rfind("<answer>", 0, close) if close >= 0 else -1
    if open_ >= 0:  # 1. R1 style: the last answer block, read on its own (prose in it is no answer)
        return _explicit_answer(text[open_ + len("<answer>") : close])
    answer = _explicit_answer(text)
    if answer is None and not strict:  # 7. the last number, as a last resort
        for window in (text[-_LAST_NUMBER_TAIL:], text):
            numbers = _LAST_NUMBER_RE.findall(window)
            if numbers:
                return numbers[-1]
    return answer


def _explicit_answer(text: str) -> str | None:
    """Rules 2-6 of the module docstring."""
    boxed = _last_boxes(text)
    if boxed is not None:
        final = _last_marker(text[boxed[0] :], _FINAL_ANSWER_RE)
        if final is not None:
            answer = _after_anchor(text[boxed[0] + final.end() : boxed[0] + final.end() + 1_000])
            if answer and not is_prose(answer):
                return answer
        return boxed[1]
    idx = text.rfind("####")
    if idx >= 0:
        answer = strip_math_delimiters(_GSM8K_RE.match(text, idx).group(1))
        if answer:
            return answer
    marker = _last_answer_marker(text)
    if marker is not None:
        answer = _after_anchor(text[marker.end() : marker.end() + 1_000])
        if answer:
            return answer
    return _bare_answer(text) or _closing_span(text)

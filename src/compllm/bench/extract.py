"""Reading an answer out of free text, strictly: a reply counts only for what it states.

Multiple choice, in this order:
1. Echoed material is removed first: sentences that end in "?" (the question asked back) and
   restated option lists (two or more option markers in order, "(A) 10; (B) 13 ..." or one
   option per line), with the option texts they carry.
2. Explicit statements ("the answer is (B)", "Answer: C", "I choose D", "B is correct", "the
   answer is Paris"): the LAST one wins, so "The answer is A. No wait, the answer is C" is C.
   A statement naming several options ("A or B", "B and C") is a hedge: no answer.
3. Without a statement: a reply that starts with one option letter ("B.", "(C) Berlin",
   "b) London", "A"), or marks exactly one letter ("... so (C)").
4. Last: the words of exactly one option, when that option has letters in it. A number-only
   option is never read from a bare mention (a reply that lists the question's data
   "10, 13, 10, 22, 24" does not pick the option "22"); it needs a statement.

Numbers: the last stated result ("= 42", "the answer is 42", "... gives 42"); a statement
"12 or 13" is a hedge; without any statement, the one number the reply contains, and no answer
when it contains several.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["LETTERS", "extract_choice", "extract_number", "without_echo"]

LETTERS = "ABCDEFGHIJ"

# A letter stands for an option when upper-case and not part of a word, or lower-case and
# punctuated ("b)", "(c)", "d."): a bare "a" is an article.
_LETTER = r"(?:\(\s*([A-Ja-j])\s*\)|([A-J])(?![A-Za-z'’])|([a-j])(?=[).:]|\s*$))"
# An option marker: "(B)" anywhere; "B)" after a space or a line start; "B." / "B:" at a line
# start or after "; " / ", " / two spaces (inline lists).
_MARKER = re.compile(
    r"\(\s*([A-J])\s*\)"
    r"|(?:(?<![^\s])[*>-]*([A-J])\))"
    r"|(?:(?:(?<![^\n])|(?<=[;,]\s)|(?<=\s\s))[ \t*>-]*([A-J])\s*[.:](?!\d))"
)
_QUESTION = re.compile(r"[^.!?\n]*\?")
_STATEMENT = re.compile(
    r"(?i:\b(?:the\s+|my\s+)?(?:final\s+|correct\s+|right\s+|best\s+)?"
    r"(?:answer|option|choice)\s*(?:is|would\s+be|will\s+be|should\s+be|must\s+be|=|:|-)"
    r"|\bI(?:\s+would|\s+will|'d|’d)?\s+(?:choose|pick|select|go\s+with))"
    r"[\s*:]*(?i:(?:option|choice|letter)\s+)?"
)
_LEAD = re.compile(
    r"\s*[*>#-]*\s*(?:\(\s*([A-Ja-j])\s*\)|([A-Ja-j])\s*[).:](?!\d)|([A-J])\s*(?:$|\n))"
)
_LETTER_IS_CORRECT = re.compile(
    r"(?<![A-Za-z])\(?([A-J])\)?\s+(?:is|seems|would\s+be)\s+(?:the\s+)?(?:correct|right|best)\b"
)
_HEDGE_JOIN = re.compile(r"\s*(?:,|/|\bor\b|\band\b|&)\s*", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")
_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_BARE_NUMBER = re.compile(r"(?<![A-Za-z\d.,])" + _NUMBER + r"(?![\d])")
_NUMBER_STATEMENT = re.compile(
    r"(?i:(?:answer|result|total|sum|product|difference|value|remainder)\s*"
    r"(?:is|would\s+be|will\s+be|comes\s+to|equals|=|:)"
    r"|=|\bequals?\b|\bgives?\b|\bmakes?\b|\bget\b|\bcomes?\s+(?:out\s+)?to\b|\bis\b|\bare\b)"
    r"[\s*:$€£]*(" + _NUMBER + r")(?![\d])"
    r"(?P<hedge>\s*(?:or|/|to)\s*[$€£]?" + _NUMBER + r")?"
)


def without_echo(text: str, choices: Sequence[str] = ()) -> str:
    """`text` without questions asked back and restated option lists (see the module doc)."""
    text = text.replace("**", "").replace("__", "")
    text = _QUESTION.sub(" ", text)
    markers = list(_MARKER.finditer(text))
    runs: list[list[re.Match[str]]] = []
    for marker in markers:
        letter = _letter(marker)
        if runs and LETTERS.index(letter) > LETTERS.index(_letter(runs[-1][-1])):
            runs[-1].append(marker)
        else:
            runs.append([marker])
    cut: list[tuple[int, int]] = []
    for run in runs:
        if len(run) >= 2:  # options in order: the list restated, not a choice
            cut.append((run[0].start(), _option_end(text, run[-1], choices)))
    for start, end in reversed(cut):
        text = text[:start] + " " + text[end:]
    return text


def _letter(marker: re.Match[str]) -> str:
    return str(marker.group(1) or marker.group(2) or marker.group(3))


def _option_end(text: str, marker: re.Match[str], choices: Sequence[str]) -> int:
    """Where the last option of a restated list ends: after its own text when it is one of
    `choices`, else at the end of the line."""
    index = LETTERS.index(_letter(marker))
    rest = text[marker.end() :]
    if index < len(choices):
        option = choices[index].strip().rstrip(".")
        stripped = rest.lstrip()
        if option and stripped.lower().startswith(option.lower()):
            end = marker.end() + (len(rest) - len(stripped)) + len(option)
            return end + 1 if text[end : end + 1] in (".", ";") else end
    newline = text.find("\n", marker.end())
    return len(text) if newline < 0 else newline


def extract_choice(text: str, choices: Sequence[str] = ()) -> int | None:
    """The option index a reply picks, or None when it picks none or hedges."""
    letters = LETTERS[: len(choices) or 4]
    clean = without_echo(text, choices)
    stated = _statements(clean, letters, choices)
    if stated:
        last = stated[-1][1]
        return next(iter(last)) if len(last) == 1 else None
    lead = _LEAD.match(clean)
    if lead:
        letter = (lead.group(1) or lead.group(2) or lead.group(3)).upper()
        if letter in letters:
            return letters.index(letter)
    marked = {_letter(m) for m in _MARKER.finditer(clean)} & set(letters)
    if len(marked) == 1:
        return letters.index(marked.pop())
    named = [
        i for i, choice in enumerate(choices) if _has_letters(choice) and _names(clean, choice)
    ]
    return named[0] if len(named) == 1 else None


def _statements(
    text: str, letters: str, choices: Sequence[str]
) -> list[tuple[int, frozenset[int]]]:
    """(position, options named) of every explicit statement, in order."""
    found: list[tuple[int, frozenset[int]]] = []
    for match in _STATEMENT.finditer(text):
        named = _named_at(text[match.end() :], letters, choices)
        if named:
            found.append((match.start(), named))
    for match in _LETTER_IS_CORRECT.finditer(text):
        if match.group(1) in letters:
            found.append((match.start(), frozenset({letters.index(match.group(1))})))
    return sorted(found, key=lambda pair: pair[0])


def _named_at(span: str, letters: str, choices: Sequence[str]) -> frozenset[int]:
    """The options a statement names right after its lead: one letter, or several joined by
    "or"/"and"/"," (a hedge), or the text of one option."""
    span = span[: _sentence_end(span)]
    named: set[int] = set()
    position = 0
    while True:
        letter = re.match(_LETTER, span[position:])
        if not letter:
            break
        value = (letter.group(1) or letter.group(2) or letter.group(3)).upper()
        if value in letters:
            named.add(letters.index(value))
        position += letter.end()
        option = _option_text_at(span[position:], choices)
        position += option
        join = _HEDGE_JOIN.match(span, position)
        if not join:
            break
        position = join.end()
    if named:
        return frozenset(named)
    lowered = span.strip().lower()
    by_text = {
        i
        for i, choice in enumerate(choices)
        if (words := choice.strip().rstrip(".").lower())
        and re.match(rf"(?:the\s+)?{re.escape(words)}(?![\w])", lowered)
    }
    if len(by_text) == 1:
        return frozenset(by_text)
    mentioned = {i for i, choice in enumerate(choices) if _names(span, choice)}
    if len(mentioned) == 1 and not _has_letters(choices[next(iter(mentioned))]):
        return frozenset()  # "the answer is not 22": a number option needs to lead the span
    return frozenset(mentioned)


def _option_text_at(span: str, choices: Sequence[str]) -> int:
    """How many characters of `span` an option's own text takes right after its letter
    ("(B) London or (C) Berlin"), so the join after it can be read."""
    stripped = span.lstrip(" )")
    for choice in choices:
        words = choice.strip().rstrip(".")
        if words and stripped.lower().startswith(words.lower()):
            return len(span) - len(stripped) + len(words)
    return 0


def _sentence_end(span: str) -> int:
    end = _SENTENCE_END.search(span)
    return len(span) if end is None else end.start()


def _has_letters(choice: str) -> bool:
    return len(choice.strip()) >= 3 and re.search(r"[A-Za-z]{2}", choice) is not None


def _names(text: str, choice: str) -> bool:
    words = choice.strip().rstrip(".").lower()
    return bool(words) and re.search(rf"(?<!\w){re.escape(words)}(?!\w)", text.lower()) is not None


def extract_number(text: str) -> float | None:
    """The number a reply states as its result (see the module doc), or None."""
    clean = _QUESTION.sub(" ", text.replace("**", ""))
    stated = list(_NUMBER_STATEMENT.finditer(clean))
    if stated:
        last = stated[-1]
        return None if last.group("hedge") else _number(last.group(1))
    numbers = {_number(m.group()) for m in _BARE_NUMBER.finditer(clean)}
    numbers.discard(None)
    return numbers.pop() if len(numbers) == 1 else None


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None

"""Reading a final answer out of free text the way small models write it: "The answer is
(B)", "B.", "b) Paris", "**Answer: C**", or the option's own words; numbers as "= 1,234",
"The result is -7.5"."""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["extract_choice", "extract_number"]

# A lower-case letter counts only when punctuated ("b)", "c."): a bare "a" is an article.
_LETTER = r"\(?\s*([A-J](?![a-zA-Z])|[a-j](?=\)|\.|:|\s*$))"
_STATED = re.compile(
    r"(?i:answer|option|choice)(?:\s+is|\s*:|\s*-)?\s*(?i:option\s*|choice\s*)?\**\s*" + _LETTER
)
_LEADING = re.compile(r"^\W{0,3}\(?([A-Ja-j])(?:\)|\.|:|\s*$)", re.MULTILINE)
_PARENTHESISED = re.compile(r"\(([A-J])\)")
_NUMBER = r"-?\d[\d,]*(?:\.\d+)?"
_STATED_NUMBER = re.compile(
    r"(?:answer|result|total|equals|is|=)\s*(?:is\s*)?:?\s*\**\s*(" + _NUMBER + r")",
    re.IGNORECASE,
)


def extract_choice(text: str, choices: Sequence[str] = ()) -> int | None:
    """The option index a reply picks, or None when it picks none (or several equally)."""
    letters = "ABCDEFGHIJ"[: len(choices) or 4]
    for match in _STATED.finditer(text):
        if match.group(1).upper() in letters:
            return letters.index(match.group(1).upper())
    for pattern in (_LEADING, _PARENTHESISED):
        marked = {m.group(1).upper() for m in pattern.finditer(text)} & set(letters)
        if len(marked) == 1:  # several marked letters: the options restated, not a choice
            return letters.index(marked.pop())
    bare = text.strip().strip("*.").strip()
    if len(bare) == 1 and bare.upper() in letters:
        return letters.index(bare.upper())
    named = [i for i, choice in enumerate(choices) if _mentions(text, choice)]
    return named[0] if len(named) == 1 else None


def _mentions(text: str, choice: str) -> bool:
    words = choice.strip().rstrip(".").lower()
    return (
        len(words) >= 2 and re.search(rf"(?<!\w){re.escape(words)}(?!\w)", text.lower()) is not None
    )


def extract_number(text: str) -> float | None:
    """The number a reply ends on: the last stated result ("= 42", "the answer is 42"), else
    the last number in the text."""
    stated = _STATED_NUMBER.findall(text)
    found = stated or re.findall(_NUMBER, text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None

"""Deterministic decomposition: the planner's fallback, so that a plan always exists.

It splits only at boundaries a reader would agree on: enumerations, sentence and question
ends, and conjunctions that start a new question ("..., and what is ..."). A part that refers
back ("that result", "then ...", "q1", "step 1") depends on the part it refers to. Statements
that ask nothing ("My father is 60.") are kept as context for the next question.
"""

from __future__ import annotations

import re

from compllm.plan import DEFAULT_MAX_SUBQUERIES, Plan, SubQuery

__all__ = ["decompose", "explicit_parts"]

_IMPERATIVES = frozenset(
    (  # noqa: SIM905 - a word list reads better as text
        "explain describe compute calculate find list name tell give solve determine evaluate "
        "compare define summarize write translate convert estimate identify square double "
        "halve add subtract multiply divide simplify prove show check verify state"
    ).split()
)
_ASKING = "what|who|whom|whose|which|when|where|why|how|is|are|was|were|do|does|did|can|" + (
    "could|should|would|will|" + "|".join(sorted(_IMPERATIVES))
)
_ASKS = re.compile(rf"^\W*(?:{_ASKING})\b", re.IGNORECASE)
_NUMBERED = re.compile(r"(?:^|(?<=\s))\(?(\d{1,2})[.)]\s+(?=\S)")
_BULLET = re.compile(r"^\s*[-*\u2022]\s+", re.MULTILINE)
_LEADING_LINK = re.compile(
    r"^(?P<link>also|and|plus|additionally|then|next|finally|after that)\b,?\s*", re.IGNORECASE
)
_SENTENCE_END = re.compile(r"(?<=[.?!;])\s+(?=[\"'(\[]?[A-Z0-9])")
_CONJUNCTION = re.compile(
    rf"(?:,\s*|\s+)(?P<link>and\s+then|and\s+also|and|then|also|plus)\s+(?=(?:{_ASKING})\b)",
    re.IGNORECASE,
)
_BACK_REFERENCE = re.compile(
    r"\b(?:that|this|the|its|previous|above|last|prior|earlier|same)\s+"
    r"(?:result|answer|number|value|amount|figure|outcome|sum|product|total|quantity|one)\b"
    r"|\b(?:using|with|from|of)\s+(?:it|that|this)\b",
    re.IGNORECASE,
)
_EXPLICIT_REFERENCE = re.compile(r"\b(?:q|step|part|question)\s*#?(\d{1,2})\b", re.IGNORECASE)


def explicit_parts(query: str) -> list[tuple[str, bool]]:
    """The query's parts as (text, introduced_by_then) pairs, in order."""
    parts: list[tuple[str, bool]] = []
    context = ""
    for chunk in _chunks(query):
        for sentence in _SENTENCE_END.split(" ".join(chunk.split())):
            for text, sequenced in _split_conjunctions(sentence):
                link = _LEADING_LINK.match(text)
                if link and len(text) > link.end():
                    text = text[link.end() :]
                    sequenced = sequenced or link.group("link").lower() in {
                        "then",
                        "next",
                        "finally",
                        "after that",
                    }
                if not _asks(text):
                    if not text.endswith(":"):  # a header ("Questions:") is not context
                        context = f"{context} {text}".strip()  # statement: context for what follows
                    continue
                parts.append((_tidy(f"{context} {text}" if context else text), sequenced))
                context = ""
    if context:  # trailing statements belong to the last question (or stand alone)
        if parts:
            last, sequenced = parts[-1]
            parts[-1] = (f"{last} {context}", sequenced)
        else:
            parts.append((_tidy(context), False))
    return parts


def decompose(query: str, *, max_subqueries: int = DEFAULT_MAX_SUBQUERIES) -> Plan:
    """A plan from the query's explicit structure; one node when it has one part."""
    parts = explicit_parts(query) or [(" ".join(query.split()), False)]
    if len(parts) > max_subqueries:  # keep the limit: fold the tail into the last part
        head, tail = parts[: max_subqueries - 1], parts[max_subqueries - 1 :]
        parts = [*head, (" ".join(text for text, _ in tail), tail[0][1])]
    subqueries = []
    for index, (text, sequenced) in enumerate(parts):
        depends_on: list[str] = []
        for match in _EXPLICIT_REFERENCE.finditer(text):
            referenced = int(match.group(1))
            if 1 <= referenced <= index:
                depends_on.append(f"q{referenced}")
        if index > 0 and not depends_on and (sequenced or _BACK_REFERENCE.search(text)):
            depends_on.append(f"q{index}")
        subqueries.append(
            SubQuery(id=f"q{index + 1}", question=text, depends_on=tuple(dict.fromkeys(depends_on)))
        )
    return Plan.build(subqueries, max_subqueries=max_subqueries)


def _chunks(query: str) -> list[str]:
    """Split bulleted lines, or a numbered enumeration "1. ... 2. ..." counting up from 1.
    Text before the first item stays as its own chunk (usually context)."""
    bullets = [b.strip() for b in _BULLET.split(query)]
    if len([b for b in bullets[1:] if b]) >= 2:
        return [b for b in bullets if b]
    numbered, expected = [], 1
    for marker in _NUMBERED.finditer(query):
        if int(marker.group(1)) == expected:
            numbered.append(marker)
            expected += 1
    if len(numbered) < 2:
        return [query]
    bounds = [m.start() for m in numbered] + [len(query)]
    items = [query[m.end() : end] for m, end in zip(numbered, bounds[1:], strict=True)]
    return [c.strip() for c in [query[: bounds[0]], *items] if c.strip()]


def _split_conjunctions(sentence: str) -> list[tuple[str, bool]]:
    pieces: list[tuple[str, bool]] = []
    start, sequenced = 0, False
    for match in _CONJUNCTION.finditer(sentence):
        left = sentence[start : match.start()].strip()
        if len(left.split()) < 3:  # "what and how ..." is one question, not two
            continue
        pieces.append((left, sequenced))
        start, sequenced = match.end(), "then" in match.group("link").lower()
    pieces.append((sentence[start:].strip(), sequenced))
    return [(text, seq) for text, seq in pieces if text]


def _asks(text: str) -> bool:
    return text.rstrip().endswith("?") or bool(_ASKS.match(text))


def _tidy(text: str) -> str:
    text = text.strip().rstrip(",;")
    text = text[0].upper() + text[1:]
    if text[-1] not in ".?!":
        text += "?" if _ASKS.match(text) and not _imperative(text) else "."
    return text


def _imperative(text: str) -> bool:
    return text.split()[0].lower() in _IMPERATIVES

"""Deterministic decomposition: the planner's fallback, so that a plan always exists.

It splits only at boundaries a reader would agree on: enumerations, sentence and question
ends, and conjunctions that start a new question ("..., and what is ..."). A part that refers
back ("that result", "then ...", "q1", "step 1") depends on the part it refers to. Statements
that ask nothing ("My father is 60.") are kept as context for the next question.
"""

from __future__ import annotations

import re

from compllm.plan import DEFAULT_MAX_SUBQUERIES, Plan, SubQuery

__all__ = ["asks", "decompose", "explicit_parts"]

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
_NUMBERED_LINE = re.compile(r"^[ \t]*\(?(\d{1,2})[.)]\s+(?=\S)", re.MULTILINE)
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
# In an explicit "1. ... 2. ..." list each item is a whole question, which may well say "the
# number of ..." or "its value": there only a pointed reference ("that result") links items.
_POINTED_REFERENCE = re.compile(
    r"\b(?:that|this|previous|above|prior|earlier)\s+"
    r"(?:result|answer|number|value|amount|figure|outcome|sum|product|total|quantity)\b",
    re.IGNORECASE,
)
_EXPLICIT_REFERENCE = re.compile(r"\b(?:q|step|part|question)\s*#?(\d{1,2})\b", re.IGNORECASE)


def explicit_parts(query: str) -> list[tuple[str, bool]]:
    """The query's parts as (text, introduced_by_then) pairs, in order."""
    items = _numbered_items(query)
    if items is not None:  # "1. ... 2. ...": each item is one part, whatever its sentences
        return [_linked(" ".join(item.split())) for item in items]
    parts: list[tuple[str, bool]] = []
    context = ""
    pending = _chunks(query)
    while pending:
        chunk, options, rest = _without_options(" ".join(pending.pop(0).split()))
        if rest:  # a new question after the options: its own chunk
            pending.insert(0, rest)
        for sentence in _SENTENCE_END.split(chunk):
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
                if not asks(text):
                    if not text.endswith(":"):  # a header ("Questions:") is not context
                        context = f"{context} {text}".strip()  # statement: context for what follows
                    continue
                parts.append((_tidy(f"{context} {text}" if context else text), sequenced))
                context = ""
        if options and parts:  # a question's answer options stay with it
            last, sequenced = parts[-1]
            parts[-1] = (f"{last} {options}", sequenced)
        elif options:
            context = f"{context} {options}".strip()
    if context:  # trailing statements belong to the last question (or stand alone)
        if parts:
            last, sequenced = parts[-1]
            parts[-1] = (f"{last} {context}", sequenced)
        else:
            parts.append((_tidy(context), False))
    return [(text, sequenced) for text, sequenced in parts if text]


def decompose(query: str, *, max_subqueries: int = DEFAULT_MAX_SUBQUERIES) -> Plan:
    """A plan from the query's explicit structure; one node when it has one part."""
    parts = explicit_parts(query) or [(" ".join(query.split()), False)]
    enumerated = _numbered_items(query) is not None
    back_reference = _POINTED_REFERENCE if enumerated else _BACK_REFERENCE
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
        if index > 0 and not depends_on and (sequenced or back_reference.search(text)):
            depends_on.append(f"q{index}")
        subqueries.append(
            SubQuery(id=f"q{index + 1}", question=text, depends_on=tuple(dict.fromkeys(depends_on)))
        )
    return Plan.build(subqueries, max_subqueries=max_subqueries)


_OPTIONS = re.compile(r"\s+(?=(?:Options|Choices|Answer choices)\s*:)", re.IGNORECASE)


def _without_options(chunk: str) -> tuple[str, str, str]:
    """(the text, its "Options: (A) ...; (B) ..." list or '', what follows the list): the
    list ends where a sentence that asks something, and is not an option, begins."""
    pieces = _OPTIONS.split(chunk, maxsplit=1)
    if len(pieces) == 1:
        return chunk, "", ""
    head, tail = pieces
    sentences = _SENTENCE_END.split(tail)
    for index, sentence in enumerate(sentences[1:], 1):
        if not sentence.startswith("(") and asks(sentence):
            return head, " ".join(sentences[:index]), " ".join(sentences[index:])
    return head, tail, ""


def _linked(text: str) -> tuple[str, bool]:
    """An enumerated item without its leading "Then", and whether it had one."""
    link = _LEADING_LINK.match(text)
    if link and len(text) > link.end():
        return _tidy(text[link.end() :]), link.group("link").lower() in {"then", "next"}
    return _tidy(text), False


def _numbered_items(query: str) -> list[str] | None:
    """The items of a "1. ... 2. ..." enumeration counting up from 1 (text before the first
    item is an instruction to all of them, not a part), or None."""
    if len(_chunks(query)) > 1:  # bullets take precedence
        return None
    # Markers at line starts, when there are any: "... delta 2.\n2. ..." has one item 2.
    for pattern in (_NUMBERED_LINE, _NUMBERED):
        numbered, expected = [], 1
        for marker in pattern.finditer(query):
            if int(marker.group(1)) == expected:
                numbered.append(marker)
                expected += 1
        if len(numbered) >= 2:
            break
    else:
        return None
    bounds = [m.start() for m in numbered[1:]] + [len(query)]
    return [query[m.end() : end].strip() for m, end in zip(numbered, bounds, strict=True)]


def _chunks(query: str) -> list[str]:
    """Bulleted lines, or the whole query."""
    bullets = [b.strip() for b in _BULLET.split(query)]
    if len([b for b in bullets[1:] if b]) >= 2:
        return [b for b in bullets if b]
    return [query]


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


def asks(text: str) -> bool:
    """Whether `text` asks something: a question mark, or a question word or an imperative
    ("Compute ...") at its start."""
    return text.rstrip().endswith("?") or bool(_ASKS.match(text))


def _tidy(text: str) -> str:
    text = text.strip().rstrip(",;").strip()
    if not text:  # punctuation alone: nothing to ask
        return ""
    text = text[0].upper() + text[1:]
    if text[-1] not in ".?!":
        text += "?" if _ASKS.match(text) and not _imperative(text) else "."
    return text


def _imperative(text: str) -> bool:
    return text.split()[0].lower() in _IMPERATIVES

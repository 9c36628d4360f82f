"""Cutting a final answer (what the user reads) into the parts of the composite query, the
same way for every system: the monolithic model's one reply and the pipelines' aggregated
answer are read by this one function.

A part's section is found, in this order:
1. Markers: "Part 2:", "Question 2 -", "**Q2**", "Answer 2:" anywhere; "2." / "2)" / "(2)" at
   a line start; "Second:", "The second question:" at a line or sentence start; "b)" / "(b)"
   at a line start when the query itself lettered its parts. Everything after a marker up to
   the next marker belongs to that part; when a part is marked twice its sections are joined
   (extraction then takes the last statement in them). A section that opens by repeating a
   part's question (as the aggregator's fallback "1. <sub-question> (expert)" does) is read
   as that part's, whatever its number, the way a reader would: a pipeline numbers its own
   plan, which may hold an extra or a merged part. A section that repeats no question keeps
   its number unless that number's part was found by its question elsewhere.
2. The part's own question echoed back: an unmarked reply that repeats the question (or its
   first words) before answering it.
3. Lines: a reply with no marker at all and exactly one non-empty line per part.
4. A one-part query: the whole reply.
A part found none of these ways gets no section (and no answer): reported as "not located".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from compllm.bench.matching import MIN_DICE, content_words, dice

__all__ = ["Sections", "split_sections"]

_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")
_WORD_MARKER = re.compile(
    r"\**(?i:\b(?:part|question|q|answer|task|problem)\s*#?\s*(\d{1,2})\b)\**\s*(?:[:.)\-–]|\(|\n)",
)
_NUMBER_MARKER = re.compile(r"(?m:^)[ \t>*#-]*\(?(\d{1,2})\s*[.):](?!\d)\**")
_ORDINAL_MARKER = re.compile(
    r"(?:(?<![^\n])|(?<=[.!?]\s))[ \t>*#-]*(?i:(?:the\s+|for\s+the\s+)?("
    + "|".join(_ORDINALS)
    + r")(?:\s+(?:question|part|one|answer|problem|step))?)\s*[:,.\-–]"
)
_LETTER_MARKER = re.compile(r"(?m:^)[ \t>*#-]*\(?([a-h])\)")


@dataclass(frozen=True)
class Sections:
    texts: list[str]  # one per part, '' where not located
    how: list[str]  # per part: "marker", "echo", "line", "whole" or "none"


def split_sections(
    text: str,
    count: int,
    *,
    questions: Sequence[str] = (),
    lettered: bool = False,
) -> Sections:
    """The reply's section for each of `count` parts (see the module doc). `questions` are the
    parts' own texts, for echo anchors; `lettered` when the query labelled its parts a), b)."""
    markers = _markers(text, lettered)
    by_echo = _by_echo(text, markers, questions[:count])
    echoed = set(by_echo.values())
    # A section that repeats a part's question is that part's; another keeps its number,
    # unless that number's part repeated its question elsewhere (then the numbering is the
    # pipeline's own, shifted by a part the query did not have).
    anchors = [
        (s, b, by_echo.get(s, n if n < count and n not in echoed else None)) for s, b, n in markers
    ]
    how = ["echo" if i in echoed else "none" for i in range(count)]
    for _, _, index in anchors:
        if index is not None and how[index] == "none":
            how[index] = "marker"
    for number, question in enumerate(questions[:count]):
        if how[number] == "none" and (at := _echo(text, question)) is not None:
            anchors.append((at, at, number))
            how[number] = "echo"
    anchors.sort(key=lambda anchor: anchor[0])
    texts = [""] * count
    if any(index is not None for _, _, index in anchors):
        ends = [start for start, _, _ in anchors[1:]] + [len(text)]
        for (_, body_start, index), end in zip(anchors, ends, strict=True):
            if index is None:  # a marker of something else (a part the query did not have)
                continue
            body = text[body_start:end].strip(" \t\n*#>")
            texts[index] = f"{texts[index]}\n{body}" if texts[index] else body
        return Sections(texts, how)
    if count == 1:
        return Sections([text.strip()], ["whole"])
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if len(lines) == count:
        return Sections(lines, ["line"] * count)
    return Sections(texts, how)


def _by_echo(
    text: str, markers: list[tuple[int, int, int]], questions: Sequence[str]
) -> dict[int, int]:
    """Marker start -> part index, for the markers whose section opens by repeating a part's
    question (its first line's content words overlap by Dice > 0.5). A pipeline numbers the
    parts of its own plan, which may have more or fewer parts than the query."""
    if not questions:
        return {}
    heads = [content_words(q.strip().split("\n")[0]) for q in questions]
    resolved: dict[int, int] = {}
    for start, body_start, _ in markers:
        line = text[body_start:].strip().split("\n")[0][:400]
        scores = [dice(content_words(line), head) for head in heads]
        best = max(range(len(scores)), key=lambda i: scores[i])
        if scores[best] > MIN_DICE:
            resolved[start] = best
    return resolved


def _markers(text: str, lettered: bool) -> list[tuple[int, int, int]]:
    """(marker start, section start, part index) of every part marker, in order."""
    found: dict[int, tuple[int, int, int]] = {}
    for pattern in (_WORD_MARKER, _NUMBER_MARKER):
        for match in pattern.finditer(text):
            number = int(match.group(1))
            if number >= 1:
                found.setdefault(match.start(), (match.start(), match.end(), number - 1))
    for match in _ORDINAL_MARKER.finditer(text):
        index = _ORDINALS.index(match.group(1).lower())
        found.setdefault(match.start(), (match.start(), match.end(), index))
    if lettered:
        for match in _LETTER_MARKER.finditer(text):
            index = "abcdefgh".index(match.group(1))
            found.setdefault(match.start(), (match.start(), match.end(), index))
    # A marker inside another's span (e.g. "Part 2:" matched as "2:" too) counts once.
    kept: list[tuple[int, int, int]] = []
    for anchor in sorted(found.values()):
        if kept and anchor[0] < kept[-1][1]:
            continue
        kept.append(anchor)
    return kept


def _echo(text: str, question: str) -> int | None:
    """Where the reply repeats the start of `question` (its first eight words), if it does."""
    words = re.findall(r"\w+", question)[:8]
    if len(words) < 3:
        return None
    pattern = r"\W+".join(re.escape(w) for w in words)
    match = re.search(pattern, text, re.IGNORECASE)
    return None if match is None else match.start()

"""Which sub-query of a plan asks which gold part, strictly: one sub-query per gold part.

A sub-query matches a gold part when their content words overlap by a Dice coefficient above
one half (2|A∩B| / (|A|+|B|) > 0.5), each sub-query matching at most one part (best pairs
first). So a sub-query that merges two parts of similar size (2/3 with each) counts for one of
them and the other is a miss; one that holds three or more such parts (at most 1/2 with each)
counts for none. A reworded part still matches ("add 15 to it" and "Add 15 to the result of
step 1": 4/7).
Plan recall is the share of gold parts matched this way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from compllm.bench.suite import Part
from compllm.plan import Plan

__all__ = ["MIN_DICE", "content_words", "dice", "match_parts"]

MIN_DICE = 0.5

_STOPWORDS = frozenset(
    re.findall(
        r"[a-z]+",
        """a an the of to in on at by for with from and or but if then than that this these those
        it its is are was were be been being do does did what which who whom whose how why when
        where there here as so such not no yes can could would should will may might must i you
        he she we they me him her us them my your our their please also just about into out up
        options option choices choice answer question questions""",
    )
)


def content_words(text: str) -> frozenset[str]:
    """Lower-case words and numbers, without stop words and one-letter words (option letters);
    numbers are kept whatever their length."""
    return frozenset(
        word
        for word in re.findall(r"[a-z0-9]+", text.lower())
        if word.isdigit() or (len(word) > 1 and word not in _STOPWORDS)
    )


def dice(first: frozenset[str], second: frozenset[str]) -> float:
    if not first or not second:
        return 0.0
    return 2 * len(first & second) / (len(first) + len(second))


def match_parts(plan: Plan, parts: Sequence[Part]) -> dict[str, str]:
    """Gold part id -> the id of the one sub-query that asks it (see the module doc)."""
    pairs = []
    for part in parts:
        gold = content_words(part.question)
        for sub in plan.subqueries:
            pairs.append((dice(gold, content_words(sub.question)), part.id, sub.id))
    matched: dict[str, str] = {}
    used: set[str] = set()
    for score, part_id, sub_id in sorted(pairs, key=lambda p: -p[0]):
        if score > MIN_DICE and part_id not in matched and sub_id not in used:
            matched[part_id] = sub_id
            used.add(sub_id)
    return matched

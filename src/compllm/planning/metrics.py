"""How good a plan is against a gold decomposition, and intervals for the rates.

Per query: the right number of parts; exactly the right dependency edges (parts aligned in
order, so this needs the right count); the right expert for every part (when routed); and
questions dropped (a gold part whose words no sub-question carries) or merged (one
sub-question carrying several gold parts). Rates come with Wilson 95% intervals.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from compllm.plan import Plan
from compllm.planning.examples import Example

__all__ = ["PlanScore", "Rate", "score_plan", "summarise", "wilson"]

_WORD = re.compile(r"[a-z0-9]+(?:['.^][a-z0-9]+)*")
_STOPWORDS = frozenset(
    (  # noqa: SIM905 - a word list reads better as text
        "a an the of to in on for and or is are was were be been what whats what's who which "
        "when where why how does do did can could should would will with by from at as that "
        "this it its me my i you your tell give please about then also plus so"
    ).split()
)


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


@dataclass(frozen=True)
class PlanScore:
    gold_parts: int
    predicted_parts: int
    edges_ok: bool
    experts_ok: bool | None  # None when the plan was not routed
    dropped: int
    merged: int

    @property
    def parts_ok(self) -> bool:
        return self.gold_parts == self.predicted_parts

    @property
    def fully_ok(self) -> bool:
        return self.parts_ok and self.edges_ok and bool(self.experts_ok)


def score_plan(
    plan: Plan, example: Example, *, expert_aliases: Mapping[str, str] | None = None
) -> PlanScore:
    """Compare `plan` with `example`'s gold parts. `expert_aliases` maps a gold expert the
    registry lacks to the one that stands in for it (e.g. calculator -> math)."""
    questions = [s.question for s in plan.subqueries]
    gold_edges = example.edges
    edges_ok = False
    experts_ok: bool | None = None
    if len(questions) == len(example.parts):
        index = {s.id: i for i, s in enumerate(plan.subqueries)}
        predicted_edges = {
            (index[d], i) for i, s in enumerate(plan.subqueries) for d in s.depends_on
        }
        edges_ok = predicted_edges == set(gold_edges)
    if all(s.expert for s in plan.subqueries):
        aliases = expert_aliases or {}
        experts_ok = len(questions) == len(example.parts) and all(
            part.expert is None or (aliases.get(part.expert, part.expert) == sub.expert)
            for part, sub in zip(example.parts, plan.subqueries, strict=False)
        )
    dropped, merged = coverage(questions, [example.text(i) for i in range(len(example.parts))])
    return PlanScore(
        gold_parts=len(example.parts),
        predicted_parts=len(questions),
        edges_ok=edges_ok,
        experts_ok=experts_ok,
        dropped=dropped,
        merged=merged,
    )


def coverage(questions: Sequence[str], gold_texts: Sequence[str]) -> tuple[int, int]:
    """(gold parts no question carries, gold parts carried by a question that already
    carries another): a gold part is carried by the question holding most of its words,
    when that is at least half of them."""
    words = [_words(q) for q in questions]
    carriers: list[int] = []
    dropped = 0
    for text in gold_texts:
        gold = _words(text)
        if not gold:
            continue
        shares = [len(gold & w) / len(gold) for w in words]
        best = max(range(len(shares)), key=lambda i: shares[i], default=-1)
        if best < 0 or shares[best] < 0.5:
            dropped += 1
        else:
            carriers.append(best)
    merged = len(carriers) - len(set(carriers))
    return dropped, merged


@dataclass(frozen=True)
class Rate:
    hits: int
    total: int

    @property
    def value(self) -> float:
        return self.hits / self.total if self.total else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.hits, self.total)

    def as_dict(self) -> dict[str, float | int | list[float]]:
        low, high = self.interval
        return {
            "rate": round(self.value, 4),
            "hits": self.hits,
            "total": self.total,
            "ci95": [round(low, 4), round(high, 4)],
        }

    def __str__(self) -> str:
        low, high = self.interval
        share = f"{100 * self.value:5.1f}% [{100 * low:.1f}, {100 * high:.1f}]"
        return f"{share} ({self.hits}/{self.total})"


def wilson(hits: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default)."""
    if total == 0:
        return 0.0, 1.0
    p = hits / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def summarise(scores: Sequence[PlanScore]) -> dict[str, Rate]:
    """Rates over queries: parts, edges, experts, fully right, and queries with a dropped or
    merged question."""
    total = len(scores)
    rates = {
        "parts": Rate(sum(s.parts_ok for s in scores), total),
        "edges": Rate(sum(s.edges_ok for s in scores), total),
        "dropped_or_merged": Rate(sum(bool(s.dropped or s.merged) for s in scores), total),
    }
    routed = [s for s in scores if s.experts_ok is not None]
    if routed:
        rates["experts"] = Rate(sum(bool(s.experts_ok) for s in routed), len(routed))
        rates["fully_right"] = Rate(sum(s.fully_ok for s in routed), len(routed))
    return rates

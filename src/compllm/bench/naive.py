"""What guessing scores on the same parts, so that every accuracy has something to be read
against. Each gives a part an expected score in [0, 1]:

- `chance`: a uniformly random option (1/4 for four options); an arithmetic part 0;
- `constant letter`: always the letter that is most often right in this suite;
- `letter prior`: a random letter drawn with the suite's own frequencies of right letters.

The last two are fitted on the very answers they are scored on: they are what a model's habit
of favouring one letter could score at best, not a system anyone could run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from compllm.bench.suite import CompositeItem, Part

__all__ = ["NaiveBaseline", "naive_baselines"]

PartScore = Callable[[Part], float]


class NaiveBaseline:
    def __init__(self, name: str, description: str, score: PartScore) -> None:
        self.name, self.description, self.score = name, description, score

    def item_scores(
        self, items: Sequence[CompositeItem], kind: str | None = None
    ) -> list[list[float]]:
        """Per item, the expected score of each part (of `kind` when given)."""
        return [
            [self.score(p) for p in item.parts if kind is None or p.kind == kind] for item in items
        ]


def naive_baselines(items: Sequence[CompositeItem]) -> list[NaiveBaseline]:
    letters = Counter(p.answer for item in items for p in item.parts if p.kind == "choice")
    total = sum(letters.values())
    # Ties go to the earlier letter, so the choice does not depend on the order of parts.
    common = min(letters, key=lambda x: (-letters[x], x)) if letters else "A"
    share = letters[common] / total if total else 0.0

    def chance(part: Part) -> float:
        return 1 / len(part.choices) if part.kind == "choice" and part.choices else 0.0

    def constant(part: Part) -> float:
        return float(part.kind == "choice" and part.answer == common)

    def prior(part: Part) -> float:
        return letters[part.answer] / total if part.kind == "choice" and total else 0.0

    return [
        NaiveBaseline("chance", "a uniformly random option; arithmetic parts 0", chance),
        NaiveBaseline(
            f"constant letter {common}",
            f"always {common}, the letter right most often here ({share:.0%} of "
            "multiple-choice parts); fitted on these answers",
            constant,
        ),
        NaiveBaseline(
            "letter prior",
            "a random letter with this suite's frequencies of right letters; fitted on these "
            "answers",
            prior,
        ),
    ]

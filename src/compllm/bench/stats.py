"""Statistics for small samples: bootstrap intervals on accuracies and paired McNemar tests.

Parts of one composite item are not independent (one reply, one plan), so intervals resample
whole items (a cluster bootstrap), not parts. Each part's score is a number in [0, 1]: 1 or 0
for a system's answer, an expected value for a random baseline (1/4 for chance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Interval", "McNemar", "bootstrap_interval", "mcnemar"]

RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    """A mean with its percentile-bootstrap interval."""

    value: float
    low: float
    high: float
    n: int  # parts

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}


def bootstrap_interval(
    items: Sequence[Sequence[float]],
    *,
    level: float = 0.95,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Interval | None:
    """Mean part score over `items` (each a list of its parts' scores), with the
    `level` percentile interval of that mean over items drawn with replacement. None when
    there are no parts."""
    import numpy as np

    items = [list(scores) for scores in items if scores]
    parts = sum(len(scores) for scores in items)
    if not parts:
        return None
    sums = np.array([sum(scores) for scores in items], dtype=float)
    counts = np.array([len(scores) for scores in items], dtype=float)
    value = float(sums.sum() / parts)
    drawn = np.random.default_rng(seed).integers(0, len(items), size=(resamples, len(items)))
    means = sums[drawn].sum(axis=1) / counts[drawn].sum(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = (float(x) for x in np.percentile(means, [tail, 100 - tail]))
    return Interval(value, low, high, parts)


@dataclass(frozen=True)
class McNemar:
    """A paired comparison of two systems on the same parts."""

    both: int  # both right
    only_first: int
    only_second: int
    neither: int
    p_value: float
    test: str  # "exact binomial" or "chi-square, continuity-corrected"

    @property
    def n(self) -> int:
        return self.both + self.only_first + self.only_second + self.neither

    def as_dict(self) -> dict[str, object]:
        return {
            "both": self.both,
            "only_first": self.only_first,
            "only_second": self.only_second,
            "neither": self.neither,
            "n": self.n,
            "p_value": self.p_value,
            "test": self.test,
        }


EXACT_BELOW = 25  # discordant pairs under which the exact test is used


def mcnemar(first: Sequence[bool], second: Sequence[bool]) -> McNemar:
    """McNemar's test on paired outcomes: only the discordant pairs (b = first right and
    second wrong, c = the reverse) matter. Exact two-sided binomial test when b + c < 25,
    else the chi-square statistic (|b - c| - 1)^2 / (b + c) with one degree of freedom."""
    if len(first) != len(second):
        raise ValueError("paired outcomes must have the same length")
    pairs = list(zip(first, second, strict=True))
    b = sum(1 for x, y in pairs if x and not y)
    c = sum(1 for x, y in pairs if y and not x)
    both = sum(1 for x, y in pairs if x and y)
    neither = len(pairs) - b - c - both
    discordant = b + c
    if discordant == 0:
        return McNemar(both, b, c, neither, 1.0, "exact binomial")
    if discordant < EXACT_BELOW:
        tail = sum(math.comb(discordant, k) for k in range(min(b, c) + 1)) / 2**discordant
        return McNemar(both, b, c, neither, min(1.0, 2 * tail), "exact binomial")
    statistic = (abs(b - c) - 1) ** 2 / discordant
    p_value = math.erfc(math.sqrt(statistic / 2))  # chi-square survival, 1 degree of freedom
    return McNemar(both, b, c, neither, p_value, "chi-square, continuity-corrected")

"""Router calibration (`compllm fit`): learn routing examples and the threshold from labelled
questions, like semantic-router's `fit`.

Labelled questions are split in two, reproducibly. The fit part becomes each expert's routing
examples (the router scores an expert by its nearest examples, so more in-domain examples is
what sharpens it). On the other part the threshold is chosen: the one under which sending
low-scoring questions to the generalist gives the highest routing accuracy. The report is
measured on that held-out part only, with a confusion matrix by domain. With `refit`, the
examples written are then all the labelled questions (the threshold stays the one chosen on
the held-out part), so the report is, if anything, pessimistic.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from langchain_core.embeddings import Embeddings

from compllm.errors import ConfigError, RegistryError
from compllm.registry import Registry
from compllm.router import ExpertRouter

__all__ = [
    "FitResult",
    "LabelledQuestion",
    "RoutingReport",
    "evaluate_routing",
    "fit_router",
    "routing_report",
    "split_by_hash",
    "write_fitted_registry",
]

T = TypeVar("T")

THRESHOLD_GRID = tuple(round(0.01 * step, 2) for step in range(61))


@dataclass(frozen=True)
class LabelledQuestion:
    text: str
    expert: str


@dataclass(frozen=True)
class RoutingReport:
    """Routing accuracy on labelled questions, with the confusion matrix[gold][routed]."""

    threshold: float
    total: int
    correct: int
    confusion: dict[str, dict[str, int]]
    to_generalist: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def per_expert(self) -> dict[str, float]:
        return {
            gold: row.get(gold, 0) / sum(row.values())
            for gold, row in sorted(self.confusion.items())
        }

    def render(self) -> list[str]:
        """The confusion matrix as text rows (gold down, routed across)."""
        names = sorted({n for row in self.confusion.values() for n in row} | set(self.confusion))
        width = max(len(n) for n in names) + 1
        short = [n[:6] for n in names]
        lines = [" " * width + " ".join(f"{s:>6}" for s in short) + "  accuracy"]
        for gold in names:
            row = self.confusion.get(gold)
            if not row:
                continue
            cells = " ".join(f"{row.get(n, 0):>6}" for n in names)
            lines.append(f"{gold:<{width}}{cells}  {row.get(gold, 0) / sum(row.values()):.3f}")
        return lines


def routing_report(
    scores: Sequence[dict[str, float]],
    gold: Sequence[str],
    *,
    threshold: float,
    generalist: str,
) -> RoutingReport:
    """Score routes: below `threshold` a question goes to the generalist."""
    confusion: dict[str, Counter[str]] = {}
    correct = to_generalist = 0
    for row, expected in zip(scores, gold, strict=True):
        best = max(row, key=lambda name: row[name])
        routed = best if row[best] >= threshold else generalist
        to_generalist += routed == generalist
        correct += routed == expected
        confusion.setdefault(expected, Counter())[routed] += 1
    return RoutingReport(
        threshold=threshold,
        total=len(gold),
        correct=correct,
        confusion={g: dict(c) for g, c in confusion.items()},
        to_generalist=to_generalist,
    )


def evaluate_routing(
    router: ExpertRouter, questions: Sequence[LabelledQuestion], *, threshold: float | None = None
) -> RoutingReport:
    """How often `router` sends each question to its labelled expert."""
    scores = router.scores([q.text for q in questions])
    return routing_report(
        scores,
        [q.expert for q in questions],
        threshold=router.registry.threshold if threshold is None else threshold,
        generalist=router.registry.generalist,
    )


@dataclass(frozen=True)
class FitResult:
    registry: Registry  # the input registry with the fitted examples and threshold
    examples: list[LabelledQuestion]  # the routing examples added
    held_out: RoutingReport  # at the fitted threshold, on questions not used as examples
    threshold_curve: dict[float, float] = field(default_factory=dict)


def fit_router(
    registry: Registry,
    embeddings: Embeddings,
    questions: Sequence[LabelledQuestion],
    *,
    holdout: float = 0.5,
    seed: int = 0,
    max_examples_per_expert: int | None = None,
    refit: bool = True,
) -> FitResult:
    """Fit routing examples and the threshold on labelled questions (see the module doc)."""
    unknown = sorted({q.expert for q in questions} - set(registry.names))
    if unknown:
        raise RegistryError(f"labelled experts not in {registry.source}: {', '.join(unknown)}")
    fit_part, held_out = split_by_hash(questions, lambda q: q.text, holdout=holdout, seed=seed)
    if not fit_part or not held_out:
        raise ConfigError(
            f"need labelled questions on both sides of the split ({len(questions)} given)"
        )
    examples = _cap(fit_part, max_examples_per_expert)
    fitted = with_examples(registry, examples)
    router = ExpertRouter(fitted, embeddings)
    scores = router.scores([q.text for q in held_out])
    gold = [q.expert for q in held_out]
    curve = {
        t: routing_report(scores, gold, threshold=t, generalist=registry.generalist).accuracy
        for t in THRESHOLD_GRID
    }
    best = max(curve, key=lambda t: (curve[t], -t))  # ties: the lowest threshold
    if refit:
        examples = _cap(list(questions), max_examples_per_expert)
        fitted = with_examples(registry, examples)
    fitted = fitted.model_copy(update={"threshold": best})
    report = routing_report(scores, gold, threshold=best, generalist=registry.generalist)
    return FitResult(fitted, examples, report, curve)


def with_examples(registry: Registry, examples: Sequence[LabelledQuestion]) -> Registry:
    """The registry with `examples` appended to its experts' own example questions."""
    experts = [
        spec.model_copy(
            update={
                "examples": (*spec.examples, *(e.text for e in examples if e.expert == spec.name))
            }
        )
        for spec in registry.experts
    ]
    return registry.model_copy(update={"experts": tuple(experts)})


def split_by_hash(
    items: Iterable[T], key: Callable[[T], str], *, holdout: float, seed: int
) -> tuple[list[T], list[T]]:
    """(kept, held out): about `holdout` of the items are held out, chosen by a hash of their
    key and the seed, so an item stays on its side whatever else the collection holds."""
    kept: list[T] = []
    held_out: list[T] = []
    for item in items:
        digest = hashlib.sha256(f"{seed}\0{key(item)}".encode()).digest()
        (held_out if digest[0] / 256 < holdout else kept).append(item)
    return kept, held_out


def _cap(examples: list[LabelledQuestion], limit: int | None) -> list[LabelledQuestion]:
    if limit is None:
        return examples
    kept: list[LabelledQuestion] = []
    seen: Counter[str] = Counter()
    for example in examples:
        if seen[example.expert] < limit:
            kept.append(example)
            seen[example.expert] += 1
    return kept


def write_fitted_registry(source: Path, target: Path, result: FitResult) -> Path:
    """Write the fitted registry: `target` is `source` with its `threshold` and
    `routing_examples` set (the rest of the file, comments included, unchanged), and the
    examples go to `<target stem>.routing.jsonl` beside it. Returns the examples file."""
    examples_file = target.with_name(f"{target.stem}.routing.jsonl")
    target.parent.mkdir(parents=True, exist_ok=True)
    examples_file.write_text(
        "".join(
            json.dumps({"expert": e.expert, "text": e.text}, ensure_ascii=False) + "\n"
            for e in result.examples
        ),
        encoding="utf-8",
    )
    text = source.read_text(encoding="utf-8")
    toml = source.suffix.lower() == ".toml"
    threshold = f"{result.registry.threshold:.2f}"
    text = _set_top_level(text, "threshold", threshold, toml=toml)
    text = _set_top_level(text, "routing_examples", json.dumps(examples_file.name), toml=toml)
    target.write_text(text, encoding="utf-8")
    return examples_file


def _set_top_level(text: str, key: str, value: str, *, toml: bool) -> str:
    """Replace a top-level `key: value` line (YAML) or `key = value` (TOML), or add one
    before the first table/list of experts."""
    separator = " = " if toml else ": "
    line = f"{key}{separator}{value}"
    pattern = re.compile(rf"^{re.escape(key)}\s*[:=].*$", re.MULTILINE)
    if pattern.search(text):
        return pattern.sub(line.replace("\\", "\\\\"), text, count=1)
    anchor = re.search(r"^\[\[experts\]\]" if toml else r"^experts\s*:", text, re.MULTILINE)
    at = anchor.start() if anchor else len(text)
    return f"{text[:at]}{line}\n{text[at:]}"

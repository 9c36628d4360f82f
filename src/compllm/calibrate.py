"""Router calibration (`compllm fit`): learn routing examples, the threshold and the learned
router from labelled questions, like semantic-router's `fit`, and say which routes better.

Labelled questions are split in two, reproducibly (`holdout`). The fit part becomes each
expert's routing examples and the training data of the learned head (`compllm.routing_head`);
the other part is held out, and every figure of the report is measured there, on questions
that nothing was fitted or chosen on:

- the similarity threshold (below it, the generalist) and the head's per-expert thresholds
  are chosen on the fit part by 5-fold cross-validation (each question scored by a router
  fitted on the other folds), never on the held-out part;
- similarity routing and the head are then both measured on the held-out part, and the head
  is kept when it routes at least as well (else the registry routes by similarity).

With `refit`, the examples and the head written are then fitted on all labelled questions
(with the thresholds chosen above), so the report is, if anything, pessimistic.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from langchain_core.embeddings import Embeddings

from compllm.errors import ConfigError, RegistryError
from compllm.registry import Registry
from compllm.router import ExpertRouter, similarity_table
from compllm.routing_head import (
    PROFILE_WEIGHT,
    RoutingHead,
    fit_head,
    fit_thresholds,
    head_file,
)

__all__ = [
    "CachedEmbeddings",
    "FitResult",
    "LabelledQuestion",
    "RoutingReport",
    "evaluate_routing",
    "fit_router",
    "report_routes",
    "routing_report",
    "set_registry_line",
    "split_by_hash",
    "write_fitted_registry",
]

T = TypeVar("T")

THRESHOLD_GRID = tuple(round(0.01 * step, 2) for step in range(61))
FOLDS = 5  # cross-validation inside the fit part, for thresholds
_CHUNK = 512  # texts per embedding call while reporting progress


@dataclass(frozen=True)
class LabelledQuestion:
    """A question and the expert that should answer it. `topic`: a finer label inside the
    expert's domain (an MMLU subject), which the head learns from when given; `variants`:
    other texts of the same question (the stem without its options), which the head learns
    from too, so it routes both forms."""

    text: str
    expert: str
    topic: str | None = None
    variants: tuple[str, ...] = ()


@dataclass(frozen=True)
class RoutingReport:
    """Routing accuracy on labelled questions, with the confusion matrix[gold][routed].
    `threshold`: the similarity threshold used, None for the learned head (its thresholds
    are per expert)."""

    threshold: float | None
    total: int
    correct: int
    confusion: dict[str, dict[str, int]]
    to_generalist: int
    method: str = "similarity"

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
    routed = []
    for row in scores:
        best = max(row, key=lambda name: row[name])
        routed.append(best if row[best] >= threshold else generalist)
    return report_routes(routed, gold, generalist=generalist, threshold=threshold)


def report_routes(
    routed: Sequence[str],
    gold: Sequence[str],
    *,
    generalist: str,
    threshold: float | None = None,
    method: str = "similarity",
) -> RoutingReport:
    """The report of routes already made."""
    confusion: dict[str, Counter[str]] = {}
    correct = to_generalist = 0
    for chosen, expected in zip(routed, gold, strict=True):
        to_generalist += chosen == generalist
        correct += chosen == expected
        confusion.setdefault(expected, Counter())[chosen] += 1
    return RoutingReport(
        threshold=threshold,
        total=len(gold),
        correct=correct,
        confusion={g: dict(c) for g, c in confusion.items()},
        to_generalist=to_generalist,
        method=method,
    )


def evaluate_routing(
    router: ExpertRouter, questions: Sequence[LabelledQuestion], *, threshold: float | None = None
) -> RoutingReport:
    """How often `router` sends each question to its labelled expert (as `route` does: the
    applicability checks, the head or similarity, the thresholds)."""
    routes = router.route([q.text for q in questions], threshold=threshold)
    learned = router.head() is not None
    return report_routes(
        [r.expert for r in routes],
        [q.expert for q in questions],
        generalist=router.registry.generalist,
        threshold=threshold if threshold is not None or learned else router.registry.threshold,
        method=router.method,
    )


class CachedEmbeddings(Embeddings):
    """Embeds each distinct text once (a fit scores the same questions many times)."""

    def __init__(self, inner: Embeddings) -> None:
        self.inner = inner
        self.memo: dict[str, list[float]] = {}

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        missing = list(dict.fromkeys(t for t in texts if t not in self.memo))
        if missing:
            self.memo.update(zip(missing, self.inner.embed_documents(missing), strict=True))
        return [self.memo[t] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    def prefetch(self, texts: Sequence[str], say: Callable[[str], None] | None) -> None:
        """Embed the texts not seen yet, a chunk at a time, saying how far it got."""
        missing = list(dict.fromkeys(t for t in texts if t not in self.memo))
        if not missing:
            return
        started = time.perf_counter()
        for start in range(0, len(missing), _CHUNK):
            self.embed_documents(missing[start : start + _CHUNK])
            if say is not None:
                done = min(start + _CHUNK, len(missing))
                elapsed = time.perf_counter() - started
                say(f"embedded {done:,}/{len(missing):,} texts ({elapsed:.0f} s)")


@dataclass(frozen=True)
class FitResult:
    registry: Registry  # the input registry with the fitted examples and threshold
    examples: list[LabelledQuestion]  # the routing examples added
    held_out: RoutingReport  # the router kept, on questions not used as examples
    threshold_curve: dict[float, float] = field(default_factory=dict)  # cross-validated
    similarity: RoutingReport | None = None  # similarity routing on the held-out part
    learned: RoutingReport | None = None  # the head on the held-out part
    head: RoutingHead | None = None  # kept when it routed at least as well


def fit_router(
    registry: Registry,
    embeddings: Embeddings,
    questions: Sequence[LabelledQuestion],
    *,
    holdout: float = 0.5,
    seed: int = 0,
    max_examples_per_expert: int | None = None,
    refit: bool = True,
    learned: bool = True,
    embedding_model: str | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> FitResult:
    """Fit routing examples, the threshold and the head on labelled questions (see the
    module doc). `learned` False fits similarity routing only; `on_progress` receives
    one-line progress messages (embedding thousands of questions takes minutes on a CPU)."""
    unknown = sorted({q.expert for q in questions} - set(registry.names))
    if unknown:
        raise RegistryError(f"labelled experts not in {registry.source}: {', '.join(unknown)}")
    fit_part, held_out = split_by_hash(questions, lambda q: q.text, holdout=holdout, seed=seed)
    if not fit_part or not held_out:
        raise ConfigError(
            f"need labelled questions on both sides of the split ({len(questions)} given)"
        )
    cached = (
        embeddings if isinstance(embeddings, CachedEmbeddings) else CachedEmbeddings(embeddings)
    )
    vectors = _Vectors(cached)
    examples = _cap(fit_part, max_examples_per_expert)
    profiles = [t for e in registry.experts for t in e.profile_texts]
    variants = [v for q in questions for v in q.variants] if learned else []
    cached.prefetch([*profiles, *(q.text for q in questions), *variants], on_progress)

    curve = _threshold_curve(registry, examples, vectors, seed=seed)
    best = max(curve, key=lambda t: (curve[t], -t))  # ties: the lowest threshold
    fitted = with_examples(registry, examples).model_copy(update={"threshold": best})
    similar = evaluate_routing(ExpertRouter(fitted, cached, learned=False), held_out)

    head = learned_report = None
    if learned and _head_experts(registry):
        thresholds = _head_thresholds(registry, examples, vectors, seed=seed)
        head = _fit_head(registry, examples, vectors).with_thresholds(thresholds)
        router = ExpertRouter(fitted, cached, head=head)
        learned_report = evaluate_routing(router, held_out)
        if learned_report.accuracy < similar.accuracy:
            head = None
    report = learned_report if head is not None and learned_report is not None else similar

    if refit:
        examples = _cap(list(questions), max_examples_per_expert)
        fitted = with_examples(registry, examples).model_copy(update={"threshold": best})
        if head is not None:
            head = _fit_head(registry, examples, vectors).with_thresholds(head.thresholds)
    if head is not None:
        probe = vectors([e.description for e in fitted.experts])
        head = head.for_registry(fitted.fingerprint(), probe, embedding_model)
    return FitResult(fitted, examples, report, curve, similar, learned_report, head)


class _Vectors:
    """Unit vectors of texts, through one memo."""

    def __init__(self, embeddings: CachedEmbeddings) -> None:
        self.embeddings = embeddings

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        array = np.asarray(self.embeddings.embed_documents(list(texts)), dtype=np.float32)
        norms = np.linalg.norm(array, axis=1, keepdims=True)
        result: np.ndarray = array / np.where(norms == 0, 1.0, norms)
        return result


def _fold(question: LabelledQuestion, seed: int) -> int:
    return hashlib.sha256(f"fold\0{seed}\0{question.text}".encode()).digest()[0] % FOLDS


def _threshold_curve(
    registry: Registry, examples: Sequence[LabelledQuestion], vectors: _Vectors, *, seed: int
) -> dict[float, float]:
    """Accuracy of similarity routing at each threshold of the grid, each example scored
    against the registry's profiles plus the other folds' examples."""
    scores: list[dict[str, float]] = []
    gold: list[str] = []
    for fold in range(FOLDS):
        test = [q for q in examples if _fold(q, seed) == fold]
        if not test:
            continue
        train = [q for q in examples if _fold(q, seed) != fold]
        profiled = with_examples(registry, train)
        texts, owners = [], []
        for index, expert in enumerate(profiled.experts):
            texts.extend(expert.profile_texts)
            owners.extend([index] * len(expert.profile_texts))
        table = similarity_table(
            vectors([q.text for q in test]), vectors(texts), np.asarray(owners), 3
        )
        # Experts with an applicability check never win by score.
        eligible = [i for i, e in enumerate(profiled.experts) if e.accepts is None]
        for row in table:
            scores.append({profiled.experts[i].name: float(row[i]) for i in eligible})
        gold.extend(q.expert for q in test)
    return {
        t: routing_report(scores, gold, threshold=t, generalist=registry.generalist).accuracy
        for t in THRESHOLD_GRID
    }


def _head_experts(registry: Registry) -> list[str]:
    """The experts a head votes for: those without an applicability check."""
    return [e.name for e in registry.experts if e.accepts is None]


def _fit_head(
    registry: Registry, examples: Sequence[LabelledQuestion], vectors: _Vectors
) -> RoutingHead:
    """A head on the registry's own profile texts (each expert's description and examples,
    one topic per expert, votes weighted by `PROFILE_WEIGHT`) and the labelled examples with
    their variants."""
    scored = set(_head_experts(registry))
    texts: list[str] = []
    experts: list[str] = []
    topics: list[str | None] = []
    for expert in registry.experts:
        if expert.name in scored:
            texts.extend(expert.profile_texts)
            experts.extend([expert.name] * len(expert.profile_texts))
            topics.extend([f"profile of {expert.name}"] * len(expert.profile_texts))
    weights = [PROFILE_WEIGHT] * len(texts)
    for question in examples:
        if question.expert in scored:
            for text in (question.text, *question.variants):
                texts.append(text)
                experts.append(question.expert)
                topics.append(question.topic)
    weights += [1.0] * (len(texts) - len(weights))
    return fit_head(vectors(texts), experts, topics, weights=weights)


def _head_thresholds(
    registry: Registry, examples: Sequence[LabelledQuestion], vectors: _Vectors, *, seed: int
) -> dict[str, float]:
    """Per-expert thresholds chosen on the head's cross-validated probabilities (each
    question, in all its forms, scored by a head fitted on the other folds)."""
    rows: list[np.ndarray] = []
    gold: list[str] = []
    names = _head_experts(registry)
    for fold in range(FOLDS):
        test = [q for q in examples if _fold(q, seed) == fold and q.expert in names]
        if not test:
            continue
        head = _fit_head(registry, [q for q in examples if _fold(q, seed) != fold], vectors)
        texts = [t for q in test for t in (q.text, *q.variants)]
        gold.extend(q.expert for q in test for _ in (q.text, *q.variants))
        probabilities = head.probabilities(vectors(texts))
        columns = [head.experts.index(n) for n in names]
        rows.append(probabilities[:, columns])
    if not rows:
        return dict.fromkeys(names, 0.0)
    return fit_thresholds(np.concatenate(rows), names, gold, registry.generalist)


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
    """Write the fitted registry: `target` is `source` with its `threshold`,
    `routing_examples` and `routing_head` lines set (the rest of the file, comments included,
    unchanged); the examples go to `<target stem>.routing.jsonl` and the head, when one was
    kept, to `<target stem>.head.npz` beside it (else a `routing_head` line is removed: it
    would name a head fitted on other examples). Returns the examples file."""
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
    if result.head is not None:
        head_path = head_file(target)
        result.head.save(head_path)
        text = _set_top_level(text, "routing_head", json.dumps(head_path.name), toml=toml)
    else:
        text = re.sub(r"^routing_head\s*[:=].*\n?", "", text, flags=re.MULTILINE)
    target.write_text(text, encoding="utf-8")
    return examples_file


def set_registry_line(path: Path, key: str, value: str) -> None:
    """Set a top-level `key` of a registry file to `value` (already in the file's syntax),
    leaving the rest of the file as it is."""
    text = path.read_text(encoding="utf-8")
    toml = path.suffix.lower() == ".toml"
    path.write_text(_set_top_level(text, key, value, toml=toml), encoding="utf-8")


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

"""The learned router that `compllm fit` writes beside a registry (`<stem>.head.npz`).

Similarity routing scores an expert by its nearest profile texts in the raw embedding space,
where what a question is *about* competes with everything else a sentence embedding encodes
(length, wording, whether options follow). The head learns, from labelled questions, which
directions of the embedding separate topics:

1. A linear discriminant projection (LDA) of the embeddings: directions in which topics lie
   far apart relative to how much questions of one topic vary. Topics are finer than experts
   (an expert such as "humanities" covers logic, history and ethics, which no single linear
   boundary separates from the rest): the labelled data's topics when it has them (MMLU
   subjects), otherwise clusters of each expert's questions (spherical k-means). The
   within-topic scatter is shrunk towards its mean variance (`SHRINKAGE`), since 384
   dimensions are estimated from a few thousand questions.
2. In the projected space, a similarity-weighted vote of the `NEIGHBOURS` nearest labelled
   questions: each votes for its expert with weight exp(cosine / `TEMPERATURE`), times
   `PROFILE_WEIGHT` for the registry's own profile texts (its descriptions and example
   questions: what the registry's author says each expert is for, a few dozen among
   thousands of fitted questions). An expert's score is its share of the votes, a
   probability in [0, 1].
3. Per-expert thresholds, fitted as semantic-router fits route thresholds: below its
   threshold the chosen expert gives the question to the generalist.

The projection, the projected examples and the thresholds are all the router needs: it embeds
the question and never the thousands of profile texts. `SHRINKAGE`, `NEIGHBOURS` and
`TEMPERATURE` were chosen by 5-fold cross-validation inside the fit part of the packaged MMLU
file. `PROFILE_WEIGHT` was chosen on the dev half of the hand-written sub-questions in
benchmarks/planner_eval (MMLU's taxonomy is not everyone's: its biology puts antibiotics under
science): every weight from 10 to 100 routed 84.0% of them (1: 76.4%), 30 is the middle of that
range on a log scale, and it costs about 0.8 points on MMLU questions without options.
benchmarks/routing_accuracy.py measures every alternative on questions none of them was chosen
or fitted on.

A head is tied to what it was fitted for: the registry's routing profiles (its fingerprint)
and the embedding model (the embeddings of the experts' descriptions, compared when loaded).
`compllm.router.ExpertRouter` falls back to similarity routing when either differs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

__all__ = [
    "NEIGHBOURS",
    "PROFILE_WEIGHT",
    "SHRINKAGE",
    "TEMPERATURE",
    "RoutingHead",
    "cluster_topics",
    "fit_head",
    "fit_thresholds",
    "head_file",
    "route_with_thresholds",
]

SHRINKAGE = 0.2  # weight of the mean variance in the within-topic scatter
NEIGHBOURS = 20  # labelled questions that vote
TEMPERATURE = 0.1  # cosine difference that multiplies a vote's weight by e
PROFILE_WEIGHT = 30.0  # a registry's own profile text votes as much as 30 fitted questions
CLUSTER_SIZE = 20  # questions per k-means topic, when the data has no topics
MAX_CLUSTERS = 12  # k-means topics per expert at most
THRESHOLD_GRID = tuple(round(0.05 * step, 2) for step in range(20))
FORMAT = 1


def head_file(registry_file: Path) -> Path:
    """Where `compllm fit` writes the head of a registry file."""
    return registry_file.with_name(f"{registry_file.stem}.head.npz")


@dataclass(frozen=True, eq=False)
class RoutingHead:
    """A fitted head (see the module doc). `experts` are the experts it votes for, in the
    order of its probability columns."""

    experts: tuple[str, ...]
    mean: np.ndarray  # (dimensions,): subtracted before projecting
    projection: np.ndarray  # (dimensions, components)
    examples: np.ndarray  # (examples, components): projected labelled questions, unit length
    labels: np.ndarray  # (examples,): index into `experts`
    weights: np.ndarray | None = None  # (examples,): each one's vote multiplier (None: 1)
    thresholds: Mapping[str, float] = field(default_factory=dict)
    registry_fingerprint: str = ""
    probe: np.ndarray | None = None  # embeddings of the experts' descriptions, when fitted
    embedding_model: str | None = None  # informative only: the probe is what is checked
    neighbours: int = NEIGHBOURS
    temperature: float = TEMPERATURE

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """(questions, experts): each expert's share of the similarity-weighted votes of the
        nearest labelled questions; rows sum to 1."""
        projected = _unit((np.asarray(vectors, dtype=np.float32) - self.mean) @ self.projection)
        similarity = projected @ self.examples.T.astype(np.float32)
        k = min(self.neighbours, similarity.shape[1])
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        closeness = np.take_along_axis(similarity, nearest, axis=1)
        # Relative to the closest, so that exp() never overflows: the shares are the same.
        weights = np.exp((closeness - closeness.max(axis=1, keepdims=True)) / self.temperature)
        if self.weights is not None:
            weights = weights * self.weights[nearest]
        votes = np.zeros((len(projected), len(self.experts)))
        rows = np.repeat(np.arange(len(projected)), k)
        np.add.at(votes, (rows, self.labels[nearest].ravel()), weights.ravel())
        shares: np.ndarray = votes / votes.sum(axis=1, keepdims=True)
        return shares

    def with_thresholds(self, thresholds: Mapping[str, float]) -> RoutingHead:
        return replace(self, thresholds=dict(thresholds))

    def for_registry(
        self, fingerprint: str, probe: np.ndarray, embedding_model: str | None
    ) -> RoutingHead:
        """The head marked as fitted for a registry (its fingerprint and the embeddings of
        its experts' descriptions under the embedding model)."""
        return replace(
            self,
            registry_fingerprint=fingerprint,
            probe=np.asarray(probe, dtype=np.float32),
            embedding_model=embedding_model,
        )

    def save(self, path: Path) -> None:
        meta = {
            "format": FORMAT,
            "kind": "lda-nearest-vote",
            "experts": list(self.experts),
            "thresholds": {name: float(t) for name, t in self.thresholds.items()},
            "registry_fingerprint": self.registry_fingerprint,
            "embedding_model": self.embedding_model,
            "neighbours": self.neighbours,
            "temperature": self.temperature,
        }
        arrays = {
            "meta": np.array(json.dumps(meta, sort_keys=True)),
            "mean": self.mean.astype(np.float32),
            "projection": self.projection.astype(np.float32),
            # Unit vectors: half precision keeps cosines to ~1e-3 and halves the file.
            "examples": self.examples.astype(np.float16),
            "labels": self.labels.astype(np.int16),
        }
        if self.weights is not None:
            arrays["weights"] = self.weights.astype(np.float32)
        if self.probe is not None:
            arrays["probe"] = self.probe.astype(np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path) -> RoutingHead:
        """Read a head written by `save` (ValueError when the file is not one)."""
        with np.load(path, allow_pickle=False) as data:
            try:
                meta = json.loads(str(data["meta"]))
                if meta.get("format") != FORMAT:
                    raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
                return cls(
                    experts=tuple(meta["experts"]),
                    mean=data["mean"],
                    projection=data["projection"],
                    examples=data["examples"].astype(np.float32),
                    labels=data["labels"].astype(np.int64),
                    weights=data.get("weights"),
                    thresholds=dict(meta["thresholds"]),
                    registry_fingerprint=meta["registry_fingerprint"],
                    probe=data.get("probe"),
                    embedding_model=meta.get("embedding_model"),
                    neighbours=int(meta["neighbours"]),
                    temperature=float(meta["temperature"]),
                )
            except KeyError as missing:
                raise ValueError(f"not a routing head: no {missing}") from None


def fit_head(
    vectors: np.ndarray,
    experts: Sequence[str],
    topics: Sequence[str | None],
    *,
    weights: Sequence[float] | None = None,
    shrinkage: float = SHRINKAGE,
    neighbours: int = NEIGHBOURS,
    temperature: float = TEMPERATURE,
) -> RoutingHead:
    """A head on labelled embeddings: `experts[i]` is the expert of `vectors[i]`, `topics[i]`
    its topic (None: the expert's k-means clusters decide), `weights[i]` its vote's
    multiplier (default 1)."""
    vectors = _unit(np.asarray(vectors, dtype=np.float64))
    names = tuple(dict.fromkeys(experts))
    labels = np.array([names.index(e) for e in experts])
    # One BLAS thread: these matrices are small, and threads waiting for a busy core made a
    # fit 30x slower on a shared 2-core machine.
    with threadpool_limits(limits=1, user_api="blas"):
        topic_labels = cluster_topics(vectors, list(experts), topics)
        mean = vectors.mean(axis=0)
        projection = _discriminant_projection(vectors - mean, topic_labels, shrinkage)
        examples = _unit((vectors - mean) @ projection)
    return RoutingHead(
        experts=names,
        mean=mean.astype(np.float32),
        projection=projection.astype(np.float32),
        examples=examples.astype(np.float32),
        labels=labels,
        weights=None if weights is None else np.asarray(weights, dtype=np.float32),
        neighbours=neighbours,
        temperature=temperature,
    )


def cluster_topics(
    vectors: np.ndarray, experts: Sequence[str], topics: Sequence[str | None]
) -> np.ndarray:
    """A topic index per row: its topic where given, else a cluster of its expert's
    untopical rows (about `CLUSTER_SIZE` each, at most `MAX_CLUSTERS` per expert)."""
    keys: list[str] = [f"topic\0{t}" if t is not None else "" for t in topics]
    for expert in dict.fromkeys(experts):
        rows = [
            i
            for i, (owner, topic) in enumerate(zip(experts, topics, strict=True))
            if owner == expert and topic is None
        ]
        if not rows:
            continue
        count = max(1, min(MAX_CLUSTERS, len(rows) // CLUSTER_SIZE))
        seed = int.from_bytes(hashlib.sha256(expert.encode()).digest()[:4], "big")
        clusters = _spherical_kmeans(vectors[rows], count, seed)
        for row, cluster in zip(rows, clusters, strict=True):
            keys[row] = f"cluster\0{expert}\0{cluster}"
    index = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    return np.array([index[key] for key in keys])


def _spherical_kmeans(vectors: np.ndarray, count: int, seed: int, rounds: int = 30) -> np.ndarray:
    """Cluster index per row: k-means on the unit sphere (cosine), k-means++ seeding."""
    if count <= 1:
        return np.zeros(len(vectors), dtype=int)
    rng = np.random.default_rng(seed)
    centres = [vectors[rng.integers(len(vectors))]]
    for _ in range(count - 1):
        distance = np.clip(1 - np.max(vectors @ np.array(centres).T, axis=1), 0, None) ** 2
        total = distance.sum()
        pick = rng.choice(len(vectors), p=distance / total) if total > 0 else 0
        centres.append(vectors[pick])
    centre = np.array(centres)
    assigned = np.zeros(len(vectors), dtype=int)
    for _ in range(rounds):
        assigned = np.argmax(vectors @ centre.T, axis=1)
        moved = _unit(np.array([vectors[assigned == c].sum(axis=0) for c in range(count)]))
        empty = ~np.array([(assigned == c).any() for c in range(count)])
        moved[empty] = centre[empty]
        if np.allclose(moved, centre):
            break
        centre = moved
    return assigned


def _discriminant_projection(
    centred: np.ndarray, topics: np.ndarray, shrinkage: float
) -> np.ndarray:
    """LDA directions (dimensions, topics - 1): the generalised eigenvectors of the
    between-topic scatter against the shrunk within-topic scatter, by whitening."""
    dimensions = centred.shape[1]
    within = np.zeros((dimensions, dimensions))
    between = np.zeros((dimensions, dimensions))
    present = np.unique(topics)
    for topic in present:
        rows = centred[topics == topic]
        centre = rows.mean(axis=0)
        within += (rows - centre).T @ (rows - centre)
        between += len(rows) * np.outer(centre, centre)
    within /= len(centred)
    between /= len(centred)
    within = (1 - shrinkage) * within + shrinkage * np.trace(within) / dimensions * np.eye(
        dimensions
    )
    values, vectors = np.linalg.eigh(within)
    whiten = vectors / np.sqrt(np.clip(values, 1e-12, None))
    spread, directions = np.linalg.eigh(whiten.T @ between @ whiten)
    components = max(1, min(len(present) - 1, dimensions))
    order = np.argsort(spread)[::-1][:components]
    result: np.ndarray = whiten @ directions[:, order]
    return result


def route_with_thresholds(
    probabilities: np.ndarray,
    experts: Sequence[str],
    thresholds: Mapping[str, float],
    generalist: str,
) -> list[str]:
    """The most probable expert of each row, or the generalist where that expert's
    probability is under its threshold."""
    best = probabilities.argmax(axis=1)
    return [
        experts[b] if row[b] >= thresholds.get(experts[b], 0.0) else generalist
        for row, b in zip(probabilities, best, strict=True)
    ]


def fit_thresholds(
    probabilities: np.ndarray,
    experts: Sequence[str],
    gold: Sequence[str],
    generalist: str,
    *,
    grid: Sequence[float] = THRESHOLD_GRID,
    sweeps: int = 3,
) -> dict[str, float]:
    """Per-expert thresholds that maximise routing accuracy on `probabilities` (which must
    not come from a head that saw these questions), by coordinate ascent over `grid` from
    all-zero, as semantic-router's `fit` searches route thresholds; ties keep the lower
    threshold, so a threshold that does not help stays 0."""
    thresholds = dict.fromkeys(experts, 0.0)
    gold_list = list(gold)

    def accuracy(candidate: Mapping[str, float]) -> int:
        routed = route_with_thresholds(probabilities, experts, candidate, generalist)
        return sum(r == g for r, g in zip(routed, gold_list, strict=True))

    best = accuracy(thresholds)
    for _ in range(sweeps):
        changed = False
        for expert in experts:
            if expert == generalist:
                continue
            for value in grid:
                trial = {**thresholds, expert: value}
                score = accuracy(trial)
                if score > best or (score == best and value < thresholds[expert]):
                    changed = changed or value != thresholds[expert]
                    best, thresholds = score, trial
        if not changed:
            break
    return thresholds


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    result: np.ndarray = vectors / np.where(norms == 0, 1.0, norms)
    return result

"""Expert router: sends each sub-query to the expert whose profile it is most similar to.

An expert's profile is its description plus its example questions. Each profile text is
embedded once per (registry, embedding model) and cached, in memory and, when the router is
given the embedding model's id, on disk (a fitted registry has thousands of examples). An
expert's score for a sub-query is the mean cosine similarity of the sub-query to the expert's
`top_k` most similar profile texts: nearest examples separate domains better than a single
centroid, and averaging a few keeps one odd example from winning alone. Below the threshold,
the generalist answers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from langchain_core.embeddings import Embeddings

from compllm.errors import RegistryError
from compllm.models import cache_dir
from compllm.plan import Plan
from compllm.registry import Registry

__all__ = ["ExpertRouter", "Route", "route_plan", "routing_texts"]


log = logging.getLogger(__name__)
_PROGRESS_CHUNK = 512  # texts per embedding call when reporting progress


class Route(NamedTuple):
    expert: str
    scores: dict[str, float]


class ExpertRouter:
    """Routes questions to a registry's experts by embedding similarity."""

    def __init__(
        self,
        registry: Registry,
        embeddings: Embeddings,
        *,
        top_k: int = 3,
        embedding_model: str | None = None,
        on_progress: Callable[[str], None] | None = None,
    ) -> None:
        """embedding_model: the id of `embeddings`; when given, profile vectors are cached
        on disk under the model id and the registry's fingerprint. on_progress: receives
        one-line progress messages while many profile texts are embedded."""
        self.registry = registry
        self.embeddings = embeddings
        self.top_k = top_k
        self.embedding_model = embedding_model
        self.on_progress = on_progress
        self._profiles: tuple[np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()

    def _profile_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(unit vectors of all profile texts, the expert index of each row); computed once."""
        with self._lock:
            if self._profiles is None:
                texts, owners = [], []
                for index, expert in enumerate(self.registry.experts):
                    texts.extend(expert.profile_texts)
                    owners.extend([index] * len(expert.profile_texts))
                self._profiles = (self._embed_profiles(texts), np.asarray(owners))
            return self._profiles

    def _embed_profiles(self, texts: list[str]) -> np.ndarray:
        cached = self._cache_file()
        if cached is not None and cached.is_file():
            vectors: np.ndarray = np.load(cached)
            if vectors.shape[0] == len(texts):
                return vectors
        vectors = _unit(self._embed_in_chunks(texts))
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(partial, vectors)
            partial.replace(cached)  # atomic: concurrent processes never read half a file
        return vectors

    def _embed_in_chunks(self, texts: list[str]) -> np.ndarray:
        """Embed many texts a chunk at a time, saying how far it got (a fitted registry
        has thousands of examples: minutes on a small CPU, once)."""
        if len(texts) <= _PROGRESS_CHUNK:
            return np.asarray(self.embeddings.embed_documents(texts), dtype=np.float32)
        say = self.on_progress or log.info
        say(f"embedding {len(texts):,} routing examples (once; cached on disk) ...")
        started, chunks = time.perf_counter(), []
        for start in range(0, len(texts), _PROGRESS_CHUNK):
            chunk = texts[start : start + _PROGRESS_CHUNK]
            chunks.append(np.asarray(self.embeddings.embed_documents(chunk), dtype=np.float32))
            done = start + len(chunk)
            elapsed = time.perf_counter() - started
            left = elapsed / done * (len(texts) - done)
            say(
                f"embedded {done:,}/{len(texts):,} routing examples ({elapsed:.0f} s, "
                f"~{left:.0f} s left)"
            )
        return np.concatenate(chunks)

    def _cache_file(self) -> Path | None:
        if self.embedding_model is None:
            return None
        # The class is in the key too: a test double registered under a real model's id must
        # never leave vectors that the real model would then read. (Not the model's path: it
        # changes with every virtual environment.)
        kind = type(self.embeddings)
        parts = [self.embedding_model, f"{kind.__module__}.{kind.__qualname__}"]
        key = "\0".join([*parts, self.registry.fingerprint()]).encode()
        return cache_dir() / "routing" / f"{hashlib.sha256(key).hexdigest()[:24]}.npy"

    def scores(self, questions: Sequence[str]) -> list[dict[str, float]]:
        """Per question, each expert's score in [-1, 1]."""
        if not questions:
            return []
        profiles, owners = self._profile_matrix()
        queries = _unit(
            np.asarray(self.embeddings.embed_documents(list(questions)), dtype=np.float32)
        )
        similarity = queries @ profiles.T
        # Each expert's rows are contiguous: its score is the mean of its top_k similarities,
        # found by partial sorting (every row's experts at once, not one mask per expert).
        bounds = np.flatnonzero(np.diff(owners)) + 1
        columns = []
        for block in np.split(similarity, bounds, axis=1):
            k = min(self.top_k, block.shape[1])
            top = np.partition(block, block.shape[1] - k, axis=1)[:, block.shape[1] - k :]
            columns.append(top.mean(axis=1))
        table = np.round(np.stack(columns, axis=1), 4)
        names = self.registry.names
        return [dict(zip(names, map(float, row), strict=True)) for row in table]

    def route(self, questions: Sequence[str], *, threshold: float | None = None) -> list[Route]:
        """The chosen expert and all scores for each question."""
        limit = self.registry.threshold if threshold is None else threshold
        checked = [e for e in self.registry.experts if e.accepts is not None]
        routes = []
        for question, scores in zip(questions, self.scores(questions), strict=True):
            # An expert with an applicability check takes what it accepts and nothing else.
            claimed = next((e.name for e in checked if e.accepts and e.accepts(question)), None)
            if claimed is not None:
                routes.append(Route(claimed, scores))
                continue
            eligible = {n: s for n, s in scores.items() if n not in {e.name for e in checked}}
            best = max(eligible, key=lambda name: eligible[name], default=None)
            if best is None or eligible[best] < limit:
                best = self.registry.generalist
            routes.append(Route(best, scores))
        return routes


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


def route_plan(plan: Plan, router: ExpertRouter, *, threshold: float | None = None) -> Plan:
    """`plan` with `scores` on every sub-query, and `expert` on those that do not name one
    yet (a given or edited plan may fix its experts, e.g. a gold routing)."""
    unknown = [
        f"{s.id} ({s.expert!r})"
        for s in plan.subqueries
        if s.expert and s.expert not in router.registry.names
    ]
    if unknown:
        raise RegistryError(
            f"{router.registry.source}: the plan assigns unknown experts to "
            f"{', '.join(unknown)} (experts: {', '.join(router.registry.names)})"
        )
    routes = router.route(routing_texts(plan), threshold=threshold)
    # An applicability check (the calculator's) reads the sub-query's own words: "Add 9 to
    # that." is arithmetic whatever its parent asked.
    checked = [e for e in router.registry.experts if e.accepts is not None]
    claims = {
        s.id: next((e.name for e in checked if e.accepts and e.accepts(s.question)), None)
        for s in plan.subqueries
        if s.depends_on
    }
    return plan.with_routes(
        {
            s.id: Route(s.expert or claims.get(s.id) or route.expert, route.scores)
            for s, route in zip(plan.subqueries, routes, strict=True)
        }
    )


def routing_texts(plan: Plan) -> list[str]:
    """What each sub-query is routed by: its question, preceded, when it depends on others,
    by its parents' questions. A follow-up such as "When was he born?" has no topic of its
    own; "Who painted The Night Watch? When was he born?" has (measured in
    benchmarks/planner.py: routing of dependent parts)."""
    texts = []
    for sub in plan.subqueries:
        parents = [plan.get(p).question for p in sub.depends_on]
        texts.append(" ".join([*parents, sub.question]))
    return texts

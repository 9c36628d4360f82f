"""Expert router: sends each sub-query to the expert that should answer it.

Two ways to score the experts, the better one by default:

- **Learned** (`compllm.routing_head`): when the registry names a head that `compllm fit`
  wrote for exactly its profiles and this embedding model, each expert's score is the
  probability the head gives it (a similarity-weighted vote of the nearest labelled questions
  in a learned discriminant projection), and each expert has its own threshold. The shipped
  registry has one (measured against similarity and kNN in benchmarks/routing_accuracy.py).
- **Similarity** (otherwise, or with `learned=False`): an expert's profile is its description
  plus its example questions; its score is the mean cosine similarity of the sub-query to the
  expert's `top_k` most similar profile texts (nearest examples separate domains better than a
  single centroid, and averaging a few keeps one odd example from winning alone). Profile
  texts are embedded once per (registry, embedding model) and cached, in memory and, when the
  router is given the embedding model's id, on disk. One threshold for all experts.

Below the threshold, the generalist answers. An expert with an applicability check (the
calculator) takes exactly what it accepts, before any score. When the registry names a
competence profile (`compllm fit --profile`, `compllm.competence`), an expert measurably
better on the sub-query's topic then replaces the chosen one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from langchain_core.embeddings import Embeddings

from compllm.errors import RegistryError
from compllm.models import cache_dir
from compllm.plan import Plan
from compllm.registry import Registry
from compllm.routing_head import RoutingHead

if TYPE_CHECKING:
    from compllm.competence import CompetenceProfile

__all__ = ["ExpertRouter", "Route", "route_plan", "routing_texts", "similarity_table"]


log = logging.getLogger(__name__)
_PROGRESS_CHUNK = 512  # texts per embedding call when reporting progress
# A head fitted under another embedding model would route at random: the experts'
# descriptions must embed as they did at fitting time (float noise is ~1e-6).
_PROBE_AGREEMENT = 0.99


class Route(NamedTuple):
    expert: str
    scores: dict[str, float]


class ExpertRouter:
    """Routes questions to a registry's experts (see the module doc)."""

    def __init__(
        self,
        registry: Registry,
        embeddings: Embeddings,
        *,
        top_k: int = 3,
        embedding_model: str | None = None,
        on_progress: Callable[[str], None] | None = None,
        learned: bool = True,
        competence: bool = True,
        head: RoutingHead | None = None,
        competence_profile: CompetenceProfile | None = None,
    ) -> None:
        """embedding_model: the id of `embeddings`; when given, profile vectors are cached
        on disk under the model id and the registry's fingerprint. on_progress: receives
        one-line progress messages while many profile texts are embedded. learned /
        competence: use the registry's learned head / competence profile when it has one
        (False: similarity routing / no competence step). head: a head to use instead of the
        registry's, unchecked (`compllm fit` measures the one it is fitting).
        competence_profile: a profile to use instead of the registry's."""
        self.registry = registry
        self.embeddings = embeddings
        self.top_k = top_k
        self.embedding_model = embedding_model
        self.on_progress = on_progress
        self.learned = learned
        self.competence = competence
        self._profiles: tuple[np.ndarray, np.ndarray] | None = None
        self._head: RoutingHead | None = head
        self._head_checked = head is not None
        self._topics: tuple[CompetenceProfile, np.ndarray, list[str]] | None = None
        self._topics_checked = False
        self._given_profile = competence_profile
        self._lock = threading.Lock()

    @property
    def method(self) -> str:
        """ "learned" when the registry's head is in use, else "similarity"."""
        return "learned" if self.head() is not None else "similarity"

    def head(self) -> RoutingHead | None:
        """The registry's learned head, when it has one that fits this registry and this
        embedding model (checked once; a mismatch is logged and similarity routing used)."""
        with self._lock:
            if not self._head_checked:
                self._head = self._load_head() if self.learned else None
                self._head_checked = True
            return self._head

    def _load_head(self) -> RoutingHead | None:
        path = self.registry.routing_head
        if path is None:
            return None
        try:
            head = RoutingHead.load(Path(path))
        except (OSError, ValueError) as exc:
            log.warning(
                "%s: routing head %s unreadable (%s): similarity routing",
                self.registry.source,
                path,
                exc,
            )
            return None
        scored = [e.name for e in self.registry.experts if e.accepts is None]
        problem = None
        if head.registry_fingerprint != self.registry.fingerprint():
            problem = "it was fitted for other routing profiles"
        elif sorted(head.experts) != sorted(scored):
            problem = f"it routes to {', '.join(head.experts)}, not {', '.join(scored)}"
        elif head.probe is not None:
            descriptions = [e.description for e in self.registry.experts]
            probe = _unit(np.asarray(self.embeddings.embed_documents(descriptions), np.float32))
            fitted = _unit(head.probe)
            if (
                probe.shape != fitted.shape
                or float(np.min(np.sum(probe * fitted, axis=1))) < _PROBE_AGREEMENT
            ):
                problem = "it was fitted under another embedding model"
        if problem is not None:
            log.warning(
                "%s: not using the routing head (%s; run `compllm fit` again): similarity routing",
                self.registry.source,
                problem,
            )
            return None
        return head

    def _competence_topics(self) -> tuple[CompetenceProfile, np.ndarray, list[str]] | None:
        """The competence profile with its validation questions embedded (once)."""
        with self._lock:
            if not self._topics_checked:
                self._topics_checked = True
                path = self.registry.competence if self.competence else None
                profile = self._given_profile if self.competence else None
                if profile is None and path is not None:
                    from compllm.competence import CompetenceProfile

                    try:
                        profile = CompetenceProfile.load(Path(path))
                    except (OSError, ValueError, KeyError) as exc:
                        log.warning(
                            "%s: competence profile %s unreadable (%s)",
                            self.registry.source,
                            path,
                            exc,
                        )
                        return None
                if profile is not None:
                    texts = [t for texts in profile.topic_texts.values() for t in texts]
                    topics = [topic for topic, texts in profile.topic_texts.items() for _ in texts]
                    if texts:
                        vectors = _unit(self._embed_in_chunks(texts))
                        self._topics = (profile, vectors, topics)
            return self._topics

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

    def embed(self, questions: Sequence[str]) -> np.ndarray:
        """Unit vectors of `questions`."""
        return _unit(np.asarray(self.embeddings.embed_documents(list(questions)), np.float32))

    def scores(self, questions: Sequence[str]) -> list[dict[str, float]]:
        """Per question, each expert's score: with the learned head, the probability it
        gives the expert (0 for an expert with an applicability check, which the head does
        not score); else the similarity score in [-1, 1]."""
        if not questions:
            return []
        return self._score_rows(self.embed(questions))

    def similarity_scores(self, questions: Sequence[str]) -> list[dict[str, float]]:
        """Per question, each expert's similarity score in [-1, 1], with or without a head."""
        if not questions:
            return []
        return self._rows(self._similarity(self.embed(questions)))

    def _score_rows(self, vectors: np.ndarray) -> list[dict[str, float]]:
        head = self.head()
        if head is None:
            return self._rows(self._similarity(vectors))
        table = np.zeros((len(vectors), len(self.registry.experts)))
        columns = [self.registry.names.index(name) for name in head.experts]
        table[:, columns] = head.probabilities(vectors)
        return self._rows(table)

    def _similarity(self, vectors: np.ndarray) -> np.ndarray:
        profiles, owners = self._profile_matrix()
        return similarity_table(vectors, profiles, owners, self.top_k)

    def _rows(self, table: np.ndarray) -> list[dict[str, float]]:
        names = self.registry.names
        return [dict(zip(names, map(float, row), strict=True)) for row in np.round(table, 4)]

    def route(self, questions: Sequence[str], *, threshold: float | None = None) -> list[Route]:
        """The chosen expert and all scores for each question. `threshold` replaces the
        registry's (similarity) or the head's per-expert thresholds (learned) for this call."""
        if not questions:
            return []
        vectors = self.embed(questions)
        head = self.head()
        checked = [e for e in self.registry.experts if e.accepts is not None]
        checked_names = {e.name for e in checked}
        topics = self._competence_topics()
        nearest_topics: list[str | None] = [None] * len(questions)
        if topics is not None:
            profile, topic_vectors, topic_names = topics
            similarity = vectors @ topic_vectors.T
            k = min(_topic_neighbours(), similarity.shape[1])
            order = np.argsort(-similarity, axis=1)[:, :k]
            nearest_topics = [profile.topic_of([topic_names[i] for i in row]) for row in order]
        routes = []
        rows = self._score_rows(vectors)
        for question, scores, topic in zip(questions, rows, nearest_topics, strict=True):
            # An expert with an applicability check takes what it accepts and nothing else.
            claimed = next((e.name for e in checked if e.accepts and e.accepts(question)), None)
            if claimed is not None:
                routes.append(Route(claimed, scores))
                continue
            eligible = {n: s for n, s in scores.items() if n not in checked_names}
            best = max(eligible, key=lambda name: eligible[name], default=None)
            if threshold is not None:
                limit = threshold
            elif head is not None and best is not None:
                limit = head.thresholds.get(best, 0.0)
            else:
                limit = self.registry.threshold
            if best is None or eligible[best] < limit:
                best = self.registry.generalist
            if topics is not None and topic is not None:
                best = topics[0].better_expert(best, topic, eligible)
            routes.append(Route(best, scores))
        return routes


def similarity_table(
    queries: np.ndarray, profiles: np.ndarray, owners: np.ndarray, top_k: int
) -> np.ndarray:
    """(questions, experts): each expert's score is the mean of its `top_k` cosine
    similarities to the question; `owners` gives each profile row's expert index (rows of
    one expert contiguous, experts in order). Unit vectors in, scores in [-1, 1] out."""
    similarity = queries @ profiles.T
    # Each expert's rows are contiguous: its score is the mean of its top_k similarities,
    # found by partial sorting (every row's experts at once, not one mask per expert).
    bounds = np.flatnonzero(np.diff(owners)) + 1
    columns = []
    for block in np.split(similarity, bounds, axis=1):
        k = min(top_k, block.shape[1])
        top = np.partition(block, block.shape[1] - k, axis=1)[:, block.shape[1] - k :]
        columns.append(top.mean(axis=1))
    return np.stack(columns, axis=1)


def _topic_neighbours() -> int:
    from compllm.competence import TOPIC_NEIGHBOURS

    return TOPIC_NEIGHBOURS


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

"""What the nodes need besides state: models, the registry, the router, and any planner,
aggregator or router object the graph was built with. Built once, complete, by
`compllm.graph.create_compllm`; what it resolves from a run's `Context` (a registry file, a
router per embedding model) is cached, so each run of a graph reuses what earlier runs loaded.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from compllm.errors import ConfigError
from compllm.models import ModelProvider, default_hub
from compllm.pool import ExpertPool, parse_bytes
from compllm.registry import Registry, default_registry, load_registry
from compllm.router import ExpertRouter
from compllm.state import Context

__all__ = ["Services", "default_pool"]

_LATENCY_MEMORY = 0.3  # weight of the newest observation in an expert's mean latency


class Services:
    """Resolves models, registry and router for a run.

    provider / pool: where models come from and what runs them (default: the process-wide
        pool over the process-wide hub; a provider alone gets a pool of its own).
    registry: experts to use instead of `Context.registry_path`.
    expert_attempts: attempts the expert retry policy allows (a fallback expert answers
        after the last one).
    planner / aggregator / router: objects that replace the ones a `Context` names.
    """

    def __init__(
        self,
        provider: ModelProvider | None = None,
        registry: Registry | None = None,
        pool: ExpertPool | None = None,
        *,
        expert_attempts: int = 1,
        planner: Any = None,
        aggregator: Any = None,
        router: Any = None,
    ):
        if pool is not None and provider is not None and pool.provider is not provider:
            raise ValueError("the pool must load from the same provider")
        self._pool = pool or (ExpertPool(provider) if provider is not None else None)
        self._registry = registry
        self.expert_attempts = expert_attempts
        self.planner = planner
        self.aggregator = aggregator
        self._router = router
        self._registries: dict[tuple[str, float], Registry] = {}
        self._routers: dict[tuple[str, str], ExpertRouter] = {}
        self._latency: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def pool(self) -> ExpertPool:
        # The default pool is resolved on first use, so a bad $COMPLLM_MEMORY_BUDGET fails
        # a run with a clear error instead of failing `import compllm`.
        if self._pool is None:
            self._pool = default_pool()
        return self._pool

    @property
    def provider(self) -> ModelProvider:
        return self.pool.provider

    def registry(self, context: Context) -> Registry:
        if self._registry is not None:
            return self._registry
        if self._router is not None and isinstance(
            getattr(self._router, "registry", None), Registry
        ):
            return self._router.registry  # type: ignore[no-any-return]
        if not context.registry_path:
            return default_registry()
        path = Path(context.registry_path)
        key = (str(path.resolve()), path.stat().st_mtime if path.exists() else -1.0)
        with self._lock:  # re-read when the file changes (Studio users edit it live)
            if key not in self._registries:
                allow = os.environ.get("COMPLLM_ALLOW_PYTHON", "") in ("1", "true", "yes")
                self._registries[key] = load_registry(path, allow_python=allow)
            return self._registries[key]

    def router(self, context: Context) -> ExpertRouter:
        if self._router is not None:
            return self._router  # type: ignore[no-any-return]
        registry = self.registry(context)
        key = (registry.fingerprint(), context.embedding_model)
        embeddings = self.provider.embeddings(context.embedding_model)
        with self._lock:
            if key not in self._routers:
                self._routers[key] = ExpertRouter(
                    registry,
                    embeddings,
                    embedding_model=context.embedding_model,
                    on_progress=getattr(self.provider, "on_event", None),
                )
            return self._routers[key]

    def observe_latency(self, expert: str, seconds: float) -> None:
        """Record how long an expert call took (feeds the executor's critical-path ranks)."""
        with self._lock:
            old = self._latency.get(expert)
            self._latency[expert] = (
                seconds if old is None else old + _LATENCY_MEMORY * (seconds - old)
            )

    def expected_latency(self, expert: str) -> float:
        """The expert's recent mean latency; unseen experts count as the mean of the others
        (1 s when none is known), so ranks compare chains of sub-queries fairly."""
        with self._lock:
            if expert in self._latency:
                return self._latency[expert]
            known = list(self._latency.values())
        return sum(known) / len(known) if known else 1.0


# Kept across `importlib.reload` of this module, like the default hub.
_DEFAULT_POOL: ExpertPool | None = globals().get("_DEFAULT_POOL")
_DEFAULT_POOL_LOCK: threading.Lock = globals().get("_DEFAULT_POOL_LOCK") or threading.Lock()


def default_pool() -> ExpertPool:
    """The process-wide pool over the process-wide hub, so that rebuilt graphs share loaded
    models. Its budget comes from `$COMPLLM_MEMORY_BUDGET` (e.g. `6GB`, `512MiB`)."""
    global _DEFAULT_POOL
    with _DEFAULT_POOL_LOCK:
        if _DEFAULT_POOL is None:
            _DEFAULT_POOL = ExpertPool(default_hub(), memory_budget_bytes=_env_budget())
        return _DEFAULT_POOL


def _env_budget() -> int | None:
    text = os.environ.get("COMPLLM_MEMORY_BUDGET", "").strip()
    try:
        return parse_bytes(text) if text else None
    except ValueError as exc:
        raise ConfigError(f"$COMPLLM_MEMORY_BUDGET: {exc}") from None

"""What the nodes need besides state: models, the registry and the router, resolved from the
run's `Context` and cached, so each run of a graph reuses what earlier runs loaded."""

from __future__ import annotations

import threading
from pathlib import Path

from langchain_core.language_models import BaseChatModel

from compllm.models import ModelProvider, default_hub
from compllm.registry import Registry, default_registry, load_registry
from compllm.router import ExpertRouter
from compllm.state import Context

__all__ = ["Services"]


class Services:
    """Resolves models, registry and router for a run.

    `registry`, when given, overrides `Context.registry_path` (used by the library API and
    tests that build a registry in memory).
    """

    def __init__(self, provider: ModelProvider | None = None, registry: Registry | None = None):
        self.provider: ModelProvider = provider or default_hub()
        self._registry = registry
        self._registries: dict[tuple[str, float], Registry] = {}
        self._routers: dict[tuple[str, str], ExpertRouter] = {}
        self._slots: dict[int, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def registry(self, context: Context) -> Registry:
        if self._registry is not None:
            return self._registry
        if not context.registry_path:
            return default_registry()
        path = Path(context.registry_path)
        key = (str(path.resolve()), path.stat().st_mtime if path.exists() else -1.0)
        with self._lock:  # re-read when the file changes (Studio users edit it live)
            if key not in self._registries:
                self._registries[key] = load_registry(path)
            return self._registries[key]

    def router(self, context: Context) -> ExpertRouter:
        registry = self.registry(context)
        key = (registry.fingerprint(), context.embedding_model)
        embeddings = self.provider.embeddings(context.embedding_model)
        with self._lock:
            if key not in self._routers:
                self._routers[key] = ExpertRouter(registry, embeddings)
            return self._routers[key]

    def chat_model(self, ref: str, *, trust_remote_code: bool = False) -> BaseChatModel:
        return self.provider.chat_model(ref, trust_remote_code=trust_remote_code)

    def expert_slots(self, limit: int) -> threading.BoundedSemaphore:
        """The semaphore that bounds concurrent expert calls to `limit`, shared by all runs
        of this graph (LangGraph's `max_concurrency` is per run and also bounds the other
        nodes)."""
        with self._lock:
            if limit not in self._slots:
                self._slots[limit] = threading.BoundedSemaphore(max(1, limit))
            return self._slots[limit]

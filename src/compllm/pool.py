"""The expert pool: every model call of a run goes through it, within the machine's limits.

- Memory: models load lazily, on their first call. The weights kept loaded stay under
  `memory_budget_bytes`. The budget is checked *before* a load, with the provider's
  estimate. To make room, the pool evicts the least recently used idle model; a model with
  queued, running or leased work is never evicted. A model larger than the whole budget
  fails its calls with `ModelBudgetError` instead of waiting for room that can never come.
- Sharing: models are keyed by reference, so experts that name the same weights share one
  loaded copy (and one batch queue).
- Batching: a model that can generate several prompts at once (`generate_batch`) takes the
  calls queued for it with the same settings in one batch of up to `max_batch_size`. Other
  models (fakes, remote endpoints) run their calls concurrently, one per thread.
- Priority: queued calls leave in priority order. The executor passes each sub-query's
  remaining critical path, so when capacity is scarce the critical path goes first.
- Tracing: each call carries the run's config. A call made alone is `model.invoke(messages,
  config)`, so callbacks, LangSmith and LangGraph's `stream_mode="messages"` see its tokens.
  A batched call is one `generate_batch` for several sub-queries; each of them is still
  reported to its own run's callbacks as one chat-model run, with its whole message at the
  end (batched sequences do not stream token by token).

The budget counts model weights (parameters and buffers, measured after load), not
activations or KV caches: leave headroom for those.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import heapq
import itertools
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from langchain_core.callbacks import CallbackManager
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.runnables import RunnableConfig, ensure_config

from compllm.errors import ModelBudgetError
from compllm.models import ModelProvider

__all__ = [
    "ExpertPool",
    "MemoryAwareProvider",
    "ModelBudgetError",
    "PoolStats",
    "model_memory_bytes",
    "parse_bytes",
]

log = logging.getLogger(__name__)

ModelKey = tuple[str, bool]  # (reference, trust_remote_code)
_Result = TypeVar("_Result")


@runtime_checkable
class MemoryAwareProvider(Protocol):
    """A provider that can estimate a model's size before loading it and free it after."""

    def estimate_chat_model_bytes(self, ref: str, *, trust_remote_code: bool = False) -> int: ...

    def release_chat_model(self, ref: str, *, trust_remote_code: bool = False) -> None: ...


def model_memory_bytes(model: object) -> int:
    """What a loaded model occupies: its `memory_bytes()` when it reports one (transformers
    models measure their tensors), else 0 (remote endpoints hold no local weights)."""
    measure = getattr(model, "memory_bytes", None)
    return int(measure()) if callable(measure) else 0


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of the pool: what is loaded, what it used at most, what it did."""

    budget_bytes: int | None
    used_bytes: int
    peak_bytes: int
    loaded: dict[str, int]
    queued: dict[str, int]
    loads: int
    evictions: int
    batch_sizes: list[int]  # of the most recent 10,000 batches


@dataclass(order=True)
class _Request:
    sort_key: tuple[float, int]
    messages: Sequence[BaseMessage] = field(compare=False)
    settings: dict[str, Any] = field(compare=False)
    max_batch: int = field(compare=False)
    future: concurrent.futures.Future[AIMessage] = field(compare=False)
    config: RunnableConfig | None = field(default=None, compare=False)

    @property
    def batch_key(self) -> tuple[tuple[str, Any], ...]:
        return tuple(sorted((k, repr(v)) for k, v in self.settings.items()))


@dataclass
class _Lane:
    """One model: its queue of calls and what holds it in memory."""

    key: ModelKey
    model: BaseChatModel | None = None
    memory_bytes: int = 0
    loading: bool = False
    queue: list[_Request] = field(default_factory=list)
    running: int = 0
    leases: int = 0
    workers: int = 0
    last_used: float = 0.0

    @property
    def busy(self) -> bool:
        return self.loading or bool(self.queue) or self.running > 0 or self.leases > 0


class ExpertPool:
    """Runs chat-model calls lazily loaded, batched, prioritised and within a memory budget.

    memory_budget_bytes: most bytes of weights loaded at once (None: no limit).
    max_batch_size: most prompts in one batched generation (calls may ask for fewer).
    batch_window_s: how long a batching model waits for siblings before its first batch.
    max_workers: threads that run model calls, across all models.
    on_event: receives one-line messages about memory (a model unloaded to make room, a
    load waiting for room), also logged.
    """

    def __init__(
        self,
        provider: ModelProvider,
        *,
        memory_budget_bytes: int | None = None,
        max_batch_size: int = 8,
        batch_window_s: float = 0.005,
        max_workers: int = 64,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        if memory_budget_bytes is not None and memory_budget_bytes <= 0:
            raise ValueError("memory_budget_bytes must be positive")
        self.provider = provider
        self.memory_budget_bytes = memory_budget_bytes
        self.max_batch_size = max(1, max_batch_size)
        self.batch_window_s = batch_window_s
        self.on_event = on_event
        self._threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="compllm-pool"
        )
        self._max_workers = max_workers
        self._lanes: dict[ModelKey, _Lane] = {}
        self._estimates: dict[ModelKey, int] = {}
        self._cond = threading.Condition()
        self._sequence = itertools.count()
        self._used = self._peak = self._loads = self._evictions = 0
        # Recent batch sizes only: a long-running server makes millions of calls.
        self._batch_sizes: collections.deque[int] = collections.deque(maxlen=10_000)

    # -- public ----------------------------------------------------------------------------

    def call(
        self,
        ref: str,
        messages: Sequence[BaseMessage],
        settings: dict[str, Any] | None = None,
        *,
        trust_remote_code: bool = False,
        priority: float = 0.0,
        max_batch_size: int | None = None,
        config: RunnableConfig | None = None,
    ) -> concurrent.futures.Future[AIMessage]:
        """Queue one call; the future holds the model's message. Cancelling a future that
        has not started removes the call from the queue. `config` is the run's config
        (callbacks, tags, metadata) for this call."""
        request = _Request(
            sort_key=(-priority, next(self._sequence)),
            messages=messages,
            settings=dict(settings or {}),
            max_batch=max(1, min(max_batch_size or self.max_batch_size, self.max_batch_size)),
            future=concurrent.futures.Future(),
            config=config,
        )
        with self._cond:
            lane = self._lane((ref, trust_remote_code))
            heapq.heappush(lane.queue, request)
            batching = lane.model is not None and _can_batch(lane.model)
            if lane.workers < (1 if batching else self._max_workers):
                lane.workers += 1
                self._threads.submit(self._work, lane)
        return request.future

    async def acall(
        self,
        ref: str,
        messages: Sequence[BaseMessage],
        settings: dict[str, Any] | None = None,
        *,
        trust_remote_code: bool = False,
        priority: float = 0.0,
        max_batch_size: int | None = None,
        config: RunnableConfig | None = None,
    ) -> AIMessage:
        """`call` for async code (the same parameters: the pool's sync and async entry
        points, spelled out for type checkers and readers). A loaded model with a native
        async implementation that does not batch (a remote endpoint) is awaited right here,
        on the event loop, so a cancelled wait cancels the request; everything else runs on
        the pool's threads."""
        key = (ref, trust_remote_code)
        with self._cond:
            lane = self._lane(key)
            direct = lane.model is not None and _awaitable_directly(lane.model)
            if direct:
                lane.running += 1  # pinned: it cannot be evicted while the call runs
        if not direct:
            return await asyncio.wrap_future(
                self.call(
                    ref,
                    messages,
                    settings,
                    trust_remote_code=trust_remote_code,
                    priority=priority,
                    max_batch_size=max_batch_size,
                    config=config,
                )
            )
        try:
            assert lane.model is not None
            return await lane.model.ainvoke(list(messages), config, **(settings or {}))
        finally:
            with self._cond:
                lane.running -= 1
                lane.last_used = time.monotonic()
                self._cond.notify_all()

    @contextmanager
    def lease(self, ref: str, *, trust_remote_code: bool = False) -> Iterator[BaseChatModel]:
        """The loaded model, pinned in memory while the block runs (planner, aggregator)."""
        with self._cond:
            lane = self._lane((ref, trust_remote_code))
            lane.leases += 1
        try:
            yield self._resident(lane)
        finally:
            with self._cond:
                lane.leases -= 1
                lane.last_used = time.monotonic()
                self._cond.notify_all()

    def submit(
        self, function: Callable[..., _Result], /, *args: Any
    ) -> concurrent.futures.Future[_Result]:
        """Run `function(*args)` on the pool's threads: calls to model objects the pool does
        not manage (a user's chat model, agent or function), so a sync run can stop waiting
        for them at their timeout."""
        return self._threads.submit(function, *args)

    def close(self) -> None:
        """Stop the pool's threads (after the calls already running) and free every model."""
        self._threads.shutdown(wait=True, cancel_futures=True)
        self.unload_all()

    def stats(self) -> PoolStats:
        with self._cond:
            return PoolStats(
                budget_bytes=self.memory_budget_bytes,
                used_bytes=self._used,
                peak_bytes=self._peak,
                loaded={k[0]: lane.memory_bytes for k, lane in self._lanes.items() if lane.model},
                queued={k[0]: len(lane.queue) for k, lane in self._lanes.items() if lane.queue},
                loads=self._loads,
                evictions=self._evictions,
                batch_sizes=list(self._batch_sizes),
            )

    def unload_all(self) -> None:
        """Free every idle model (busy ones stay)."""
        with self._cond:
            for lane in list(self._lanes.values()):
                if lane.model is not None and not lane.busy:
                    self._evict(lane)

    # -- workers ---------------------------------------------------------------------------

    def _work(self, lane: _Lane) -> None:
        try:
            while True:
                with self._cond:
                    if not lane.queue:
                        return
                model = self._resident(lane)
                if _can_batch(model):
                    with self._cond:
                        if lane.workers > 1:  # started before the model was known to batch
                            return  # one worker per batching model: batches, not races
                if _can_batch(model) and 0 < len(lane.queue) < self.max_batch_size:
                    time.sleep(self.batch_window_s)  # let siblings sent together arrive
                batch = self._take(lane, batching=_can_batch(model))
                if batch:
                    self._run(lane, model, batch)
        except BaseException as exc:  # a load that failed: every queued call fails with it
            with self._cond:
                failed, lane.queue = lane.queue, []
            for request in failed:
                if request.future.set_running_or_notify_cancel():
                    request.future.set_exception(exc)
        finally:
            with self._cond:
                lane.workers -= 1
                if lane.queue and lane.workers == 0:  # a call arrived as this worker left
                    lane.workers += 1
                    self._threads.submit(self._work, lane)
                self._cond.notify_all()

    def _take(self, lane: _Lane, *, batching: bool) -> list[_Request]:
        """The next call and, when batching, the queued calls that can share its batch."""
        with self._cond:
            taken: list[_Request] = []
            deferred: list[_Request] = []
            while lane.queue:
                request = heapq.heappop(lane.queue)
                if taken and (
                    request.batch_key != taken[0].batch_key or len(taken) >= taken[0].max_batch
                ):
                    deferred.append(request)
                    if len(taken) >= taken[0].max_batch:
                        break
                    continue
                if request.future.set_running_or_notify_cancel():
                    taken.append(request)
                if not batching and taken:
                    break
            for request in deferred:
                heapq.heappush(lane.queue, request)
            lane.running += len(taken)
            return taken

    def _run(self, lane: _Lane, model: BaseChatModel, batch: list[_Request]) -> None:
        try:
            if len(batch) > 1:
                messages = _traced_batch(model, batch)
            else:
                request = batch[0]
                messages = [
                    model.invoke(list(request.messages), request.config, **request.settings)
                ]
        except BaseException as exc:  # not only Exception: an unresolved future waits forever
            for request in batch:
                request.future.set_exception(exc)
        else:
            for request, message in zip(batch, messages, strict=True):
                request.future.set_result(message)
        finally:
            with self._cond:
                lane.running -= len(batch)
                lane.last_used = time.monotonic()
                self._batch_sizes.append(len(batch))
                self._cond.notify_all()

    # -- memory ----------------------------------------------------------------------------

    def _lane(self, key: ModelKey) -> _Lane:
        if key not in self._lanes:
            self._lanes[key] = _Lane(key)
        return self._lanes[key]

    def _resident(self, lane: _Lane) -> BaseChatModel:
        """The lane's model, loaded first (making room) if needed."""
        need = self._estimate(lane.key)
        waiting = False
        with self._cond:
            while True:
                if lane.model is not None:
                    lane.last_used = time.monotonic()
                    return lane.model
                if lane.loading:
                    self._cond.wait()
                    continue
                budget = self.memory_budget_bytes
                if budget is not None and need > budget:
                    raise ModelBudgetError(
                        f"model '{lane.key[0]}' needs {_gib(need)} but the memory budget is "
                        f"{_gib(budget)}: raise the budget or use a smaller model"
                    )
                if budget is None or self._used + need <= budget:
                    break
                victim = self._least_recently_used_idle(exclude=lane)
                if victim is not None:
                    self._evict(victim)
                else:  # every loaded model is working: wait for one to idle
                    if not waiting:
                        waiting = True
                        self._tell(f"{lane.key[0]} waits for room: every loaded model is working")
                    self._cond.wait()
            lane.loading = True
            self._used += need
            self._peak = max(self._peak, self._used)
        try:
            model = self.provider.chat_model(lane.key[0], trust_remote_code=lane.key[1])
            actual = model_memory_bytes(model) or need
        except BaseException:
            with self._cond:
                lane.loading = False
                self._used -= need
                self._cond.notify_all()
            raise
        with self._cond:
            self._estimates[lane.key] = actual
            lane.model, lane.memory_bytes, lane.loading = model, actual, False
            self._used += actual - need
            self._peak = max(self._peak, self._used)
            self._loads += 1
            lane.last_used = time.monotonic()
            self._cond.notify_all()
            return model

    def _estimate(self, key: ModelKey) -> int:
        if key not in self._estimates and isinstance(self.provider, MemoryAwareProvider):
            self._estimates[key] = self.provider.estimate_chat_model_bytes(
                key[0], trust_remote_code=key[1]
            )
        return self._estimates.get(key, 0)

    def _least_recently_used_idle(self, exclude: _Lane) -> _Lane | None:
        idle = [
            lane
            for lane in self._lanes.values()
            if lane is not exclude and lane.model is not None and not lane.busy
        ]
        return min(idle, key=lambda lane: lane.last_used, default=None)

    def _evict(self, lane: _Lane) -> None:
        """Called with the lock held, on an idle lane."""
        ref, trust = lane.key
        self._used -= lane.memory_bytes
        lane.model, lane.memory_bytes = None, 0
        self._evictions += 1
        if isinstance(self.provider, MemoryAwareProvider):
            self.provider.release_chat_model(ref, trust_remote_code=trust)
        self._tell(f"unloaded {ref} to stay within the memory budget")

    def _tell(self, message: str) -> None:
        """Log what the pool did about memory, and pass it to `on_event`."""
        log.info(message)
        if self.on_event is not None:
            self.on_event(message)


_UNITS = {"": 1, "B": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_BINARY_UNITS = {"KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}


def parse_bytes(text: str) -> int:
    """`"6GB"`, `"1.5G"`, `"512MiB"` or `"1000000"` as a number of bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]I?)?B?\s*", text.upper())
    if not match:
        raise ValueError(f"not a memory size: {text!r} (examples: 6GB, 512MiB, 1.5G)")
    unit = match.group(2) or ""
    return int(float(match.group(1)) * {**_UNITS, **_BINARY_UNITS}[unit])


def _traced_batch(model: BaseChatModel, batch: list[_Request]) -> list[AIMessage]:
    """One `generate_batch` for the batch, reported to each request's callbacks as a chat
    model run of its own (start, then the whole message or the error)."""
    runs = []
    for request in batch:
        config = ensure_config(request.config)
        manager = CallbackManager.configure(
            inheritable_callbacks=config.get("callbacks"),
            inheritable_tags=config.get("tags"),
            inheritable_metadata=config.get("metadata"),
        )
        runs.append(
            manager.on_chat_model_start(
                {"name": type(model).__name__},
                [list(request.messages)],
                name=config.get("run_name"),
                invocation_params=request.settings,
            )[0]
        )
    try:
        messages: list[AIMessage] = model.generate_batch(  # type: ignore[attr-defined]
            [list(r.messages) for r in batch], **batch[0].settings
        )
    except BaseException as exc:
        for run in runs:
            run.on_llm_error(exc)
        raise
    for run, message in zip(runs, messages, strict=True):
        run.on_llm_end(LLMResult(generations=[[ChatGeneration(message=message)]]))
    return messages


def _can_batch(model: object) -> bool:
    return callable(getattr(model, "generate_batch", None))


def _awaitable_directly(model: BaseChatModel) -> bool:
    # BaseChatModel's default `_agenerate` runs the sync code on the event loop's small
    # default executor; only models that override it are truly async.
    return not _can_batch(model) and type(model)._agenerate is not BaseChatModel._agenerate


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"

"""When expert calls start: which sub-queries are ready, in which order, within which slots,
and what happens to the others (skipped after a failed parent, failed when the run is out of
time). Pure logic: no LangGraph, no models. `compllm.experts` holds how one call happens; the
executor nodes (`compllm.nodes.execute`, `compllm.nodes.waves`) drive both.

When fewer slots than ready sub-queries are free, those with the longest remaining chain
(weighted by each expert's recent latency) go first, so the critical path is not starved
(`Gate` says the one case where a less urgent call can start first).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from compllm.plan import Plan, SubQuery
from compllm.registry import Registry
from compllm.state import Context, ExpertTask, ParentAnswer, SubAnswer

__all__ = [
    "Gate",
    "Turn",
    "chain_first_order",
    "expert_task",
    "expired_answers",
    "priority_order",
    "ready_subqueries",
    "remaining_ranks",
    "skipped_answers",
    "startable",
]


def skipped_answers(plan: Plan, answers: Mapping[str, SubAnswer]) -> dict[str, SubAnswer]:
    """Sub-queries that can never run because a parent (or its parent) has no answer."""
    known, skipped = dict(answers), {}
    for sid in plan.topological_order():
        if sid in known:
            continue
        sub = plan.get(sid)
        missing = [d for d in sub.depends_on if d in known and known[d].status != "ok"]
        if missing:
            known[sid] = skipped[sid] = SubAnswer(
                id=sid,
                question=sub.question,
                expert=sub.expert or "",
                status="skipped",
                error=f"not run: it needs {', '.join(missing)}, which has no answer",
            )
    return skipped


def expired_answers(
    plan: Plan, answers: Mapping[str, SubAnswer], limit_s: float
) -> dict[str, SubAnswer]:
    """The sub-queries still without an answer when the run's time is up, failed with why."""
    return {
        sub.id: SubAnswer(
            id=sub.id,
            question=sub.question,
            expert=sub.expert or "",
            status="failed",
            error=f"not answered: the run reached its time limit ({limit_s:g} s, "
            "Context.max_run_s)",
            finished_at=time.time(),
        )
        for sub in plan.subqueries
        if sub.id not in answers
    }


def remaining_ranks(plan: Plan, expected_latency: Callable[[str], float]) -> dict[str, float]:
    """For each sub-query, the expected length of the longest chain from it to the end of
    the plan (itself included): the sub-query with the highest rank is on the critical path."""
    rank: dict[str, float] = {}
    for sid in reversed(plan.topological_order()):
        own = expected_latency(plan.get(sid).expert or "")
        rank[sid] = own + max((rank[c] for c in plan.children(sid)), default=0.0)
    return rank


def chain_first_order(plan: Plan) -> list[str]:
    """A topological order that takes, of the sub-queries whose parents come before, the
    one with the longest chain below it (counted in sub-queries), then plan order. It
    depends on the plan alone, not on measured latencies: a resumed run must call the same
    tasks in the same order."""
    ranks = remaining_ranks(plan, lambda expert: 1.0)
    index = {sub.id: i for i, sub in enumerate(plan.subqueries)}
    parents_left = {sub.id: len(set(sub.depends_on)) for sub in plan.subqueries}
    available = [(-ranks[sid], index[sid], sid) for sid, left in parents_left.items() if not left]
    heapq.heapify(available)
    order = []
    while available:
        sid = heapq.heappop(available)[2]
        order.append(sid)
        for child in plan.children(sid):
            parents_left[child] -= 1
            if not parents_left[child]:
                heapq.heappush(available, (-ranks[child], index[child], child))
    return order


def ready_subqueries(plan: Plan, answers: Mapping[str, SubAnswer]) -> list[SubQuery]:
    """Sub-queries not yet answered whose parents all have answers."""
    return [
        sub
        for sub in plan.subqueries
        if sub.id not in answers
        and all(d in answers and answers[d].status == "ok" for d in sub.depends_on)
    ]


def priority_order(plan: Plan, ranks: Mapping[str, float]) -> dict[str, tuple[float, int]]:
    """Sort key per sub-query: the longest remaining chain first, then plan order."""
    return {sub.id: (-ranks.get(sub.id, 0.0), i) for i, sub in enumerate(plan.subqueries)}


def startable(
    ready: Iterable[SubQuery],
    running: Mapping[str, str],
    *,
    context: Context,
    registry: Registry,
) -> list[SubQuery]:
    """Of `ready` (in priority order), those that free slots allow now: the run's slots
    (`Context.max_parallel_experts`) and each expert's own (`max_concurrency`). `running`
    maps the sub-queries in flight to their experts."""
    free = max(0, context.max_parallel_experts - len(running))
    per_expert = Counter(running.values())
    chosen: list[SubQuery] = []
    for sub in ready:
        if len(chosen) == free:
            break
        expert = sub.expert or ""
        limit = registry.expert(expert).max_concurrency if expert in registry.names else None
        if limit is not None and per_expert[expert] >= limit:
            continue
        per_expert[expert] += 1
        chosen.append(sub)
    return chosen


def expert_task(
    sub: SubQuery, answers: Mapping[str, SubAnswer], priority: float, query: str
) -> ExpertTask:
    """The input of one expert call: the sub-query, its parents' answers, its priority."""
    parents = [
        ParentAnswer(id=d, question=answers[d].question, answer=answers[d].answer)
        for d in sub.depends_on
    ]
    return ExpertTask(
        id=sub.id,
        question=sub.question,
        expert=sub.expert or "",
        parents=parents,
        priority=priority,
        query=query,
    )


@dataclass(frozen=True)
class Turn:
    """What a called expert task is told when its turn comes: call the expert with these
    parents' answers, or return `answer` without calling (skipped, or out of time)."""

    parents: list[ParentAnswer] = field(default_factory=list)
    answer: SubAnswer | None = None
    # When the turn was granted: the call's start (a retry keeps it). The task itself may
    # have started long before, waiting here for its parents.
    granted_at: float | None = None


Wake = Callable[[Turn], None]


class Gate:
    """Grants the expert tasks of one plan their turn to call their expert.

    The free slots go to the ready sub-queries (parents answered) by priority, the longest
    remaining chain first, whether their tasks have arrived here or not: which call starts
    first does not depend on which thread happened to start first. The executor calls the
    tasks in a fixed order (`call_order`, longest chain first: LangGraph knows a node's
    tasks by the order they were called, so a resumed run finds each finished call's saved
    answer under the same sub-query), up to the last one the slots go to now (`to_call`);
    those before it in the order are called too, and wait here if their turn has not come.
    Thread-safe: sync runs wait on threads, async runs on the event loop.

    - `arrive(sid, wake)`: a task asks for its turn; the `Turn` now, or later through `wake`.
    - `finish(sid, answer)`: the executor reports a task's outcome (also for tasks a resumed
      run took from the checkpoint, which never arrive).
    - `expire()`: the run is out of time; tasks still waiting are told so.

    No grant is made before `start()`. When the run's threads (`capacity`) are all taken by
    its tasks, a chosen task not yet here could not start: the slots then go to those here,
    by priority (a plan that makes more tasks wait than the run has threads can start a
    less urgent call first).
    """

    def __init__(
        self,
        plan: Plan,
        query: str,
        context: Context,
        registry: Registry,
        expected_latency: Callable[[str], float],
        answers: Mapping[str, SubAnswer],
        capacity: int | None = None,
        out_of_time: Callable[[], bool] = lambda: False,
    ) -> None:
        self.plan, self.query, self.context, self.registry = plan, query, context, registry
        self.capacity, self.out_of_time = capacity, out_of_time
        self.answers: dict[str, SubAnswer] = dict(answers)
        self.new: dict[str, SubAnswer] = {}
        self._latency = expected_latency
        self.order = priority_order(plan, remaining_ranks(plan, expected_latency))
        self._waiting: dict[str, Wake] = {}
        self._granted: dict[str, Turn] = {}
        self._running: dict[str, str] = {}  # sub-query id -> expert, while it holds a slot
        # Not answered, not running, every parent answered ok: kept as answers come in, so a
        # grant looks at these only (not at every task of a plan of hundreds).
        self._ready: set[str] = {s.id for s in ready_subqueries(plan, answers)}
        self._by_priority: list[tuple[tuple[float, int], str]] = []  # heap of `_ready`
        self._order_ready()
        self._started = False
        self._expired = False
        self._lock = threading.Lock()
        self._record(skipped_answers(plan, self.answers))  # a resumed run may have some

    def call_order(self) -> list[str]:
        """The sub-queries still to answer, in the order their tasks are called."""
        return [sid for sid in chain_first_order(self.plan) if sid not in self.answers]

    def task_input(self, sid: str) -> ExpertTask:
        """A task's input: the sub-query (its parents' answers come with its turn)."""
        sub = self.plan.get(sid)
        return ExpertTask(
            id=sid,
            question=sub.question,
            expert=sub.expert or "",
            parents=[],
            priority=-self.order[sid][0],
            query=self.query,
        )

    def to_call(self) -> list[str]:
        """The ready sub-queries the free slots go to now, by priority, whether their tasks
        have arrived or not: their tasks, and those before them in `call_order`, must be
        called (if they have not been)."""
        with self._lock:
            return [sub.id for sub in self._chosen()] if self._may_grant() else []

    def start(self) -> None:
        """Grants may begin (none is made before)."""
        with self._lock:
            self._started = True
            wakes = self._grant()
        _deliver(wakes)

    def arrive(self, sid: str, wake: Wake) -> Turn | None:
        with self._lock:
            if sid in self._granted:  # a retry: the turn is still this task's
                return self._granted[sid]
            turn = self._turn_without_call(sid)
            if turn is not None:
                return turn
            self._waiting[sid] = wake
            wakes = self._grant()
        _deliver(wakes)
        return None

    def finish(self, sid: str, answer: SubAnswer) -> None:
        with self._lock:
            self._running.pop(sid, None)
            self._granted.pop(sid, None)
            self._waiting.pop(sid, None)
            self._record({sid: answer})
            if answer.status != "ok":
                self._record(skipped_answers(self.plan, self.answers))
            wakes = self._release_decided() + self._grant()
        _deliver(wakes)

    def expire(self) -> dict[str, SubAnswer]:
        """Every sub-query without an answer fails with the reason; waiting tasks are told,
        running calls are abandoned. Returns the failed answers."""
        assert self.context.max_run_s is not None
        with self._lock:
            self._expired = True
            expired = expired_answers(self.plan, self.answers, self.context.max_run_s)
            self._record(expired)
            wakes = self._release_decided()
        _deliver(wakes)
        return expired

    def extend(self, sub: SubQuery, *, max_subqueries: int) -> None:
        """A sub-query the planner has just written joins the plan (its parents are in it
        already); `PlanError` when the plan would break (a duplicate id, the size limit)."""
        with self._lock:
            self.plan = Plan.build([*self.plan.subqueries, sub], max_subqueries=max_subqueries)
            self.order = priority_order(self.plan, remaining_ranks(self.plan, self._latency))
            if self._parents_answered(sub.id):
                self._ready.add(sub.id)
            self._order_ready()  # the priorities have changed
            # A parent may have failed, or time run out, before this one was written.
            self._record(skipped_answers(self.plan, self.answers))
            if self._expired:
                assert self.context.max_run_s is not None
                self._record(expired_answers(self.plan, self.answers, self.context.max_run_s))

    def drop(
        self, sids: Iterable[str], reason: str = "dropped: the final plan does not have it"
    ) -> None:
        """Sub-queries the final plan does not have (or all, when the executor fails): tasks
        still waiting are told to end without calling (calls already running finish, and
        their answers are left out)."""
        with self._lock:
            self._record(
                {
                    sid: SubAnswer(
                        id=sid,
                        question=self.plan.get(sid).question,
                        expert=self.plan.get(sid).expert or "",
                        status="skipped",
                        error=reason,
                    )
                    for sid in sids
                    if sid not in self.answers
                }
            )
            wakes = self._release_decided() + self._grant()
        _deliver(wakes)

    @property
    def done(self) -> bool:
        return len(self.answers) >= len(self.plan)

    # -- internals (with the lock held) ------------------------------------------------------

    def _turn_without_call(self, sid: str) -> Turn | None:
        """The answer a task returns without calling: decided (skipped, expired) already."""
        if sid in self.answers:
            return Turn(answer=self.answers[sid])
        return None

    def _release_decided(self) -> list[tuple[Wake, Turn]]:
        decided = [sid for sid in self._waiting if sid in self.answers]
        return [(self._waiting.pop(sid), Turn(answer=self.answers[sid])) for sid in decided]

    def _may_grant(self) -> bool:
        # (Out of time: no call starts; the executor fails what is left.)
        return self._started and not self._expired and not self.out_of_time()

    def _grant(self) -> list[tuple[Wake, Turn]]:
        if not self._may_grant():
            return []
        taken = len(self._waiting) + len(self._running)  # threads held by this run's tasks
        if self.capacity is not None and taken >= self.capacity:
            # (At most `capacity` tasks wait: sorting them is cheaper than walking the heap.)
            here = sorted(
                (self.plan.get(sid) for sid in self._waiting if sid in self._ready),
                key=lambda sub: self.order[sub.id],
            )
            chosen = startable(here, self._running, context=self.context, registry=self.registry)
        else:
            chosen = [sub for sub in self._chosen() if sub.id in self._waiting]
        wakes = []
        now = time.time()
        for sub in chosen:
            self._running[sub.id] = sub.expert or ""
            self._ready.discard(sub.id)
            turn = Turn(parents=[_parent(self.answers[d]) for d in sub.depends_on], granted_at=now)
            self._granted[sub.id] = turn
            wakes.append((self._waiting.pop(sub.id), turn))
        return wakes

    def _chosen(self) -> list[SubQuery]:
        """The ready sub-queries the free slots go to, by priority."""
        taken: list[tuple[tuple[float, int], str]] = []
        try:
            return startable(
                self._ready_by_priority(taken),
                self._running,
                context=self.context,
                registry=self.registry,
            )
        finally:
            for item in taken:  # the heap keeps the ready sub-queries not started
                heapq.heappush(self._by_priority, item)

    def _ready_by_priority(self, taken: list[tuple[tuple[float, int], str]]) -> Iterator[SubQuery]:
        # Lazily, so that a grant looks at about as many sub-queries as there are free
        # slots, not at every ready one of a plan of hundreds. Entries of sub-queries no
        # longer ready are dropped here; `taken` gets the others back to the caller.
        seen: set[str] = set()
        while self._by_priority:
            item = heapq.heappop(self._by_priority)
            sid = item[1]
            if sid not in self._ready or sid in seen:
                continue
            seen.add(sid)
            taken.append(item)
            yield self.plan.get(sid)

    def _order_ready(self) -> None:
        self._by_priority = [(self.order[sid], sid) for sid in self._ready]
        heapq.heapify(self._by_priority)

    def _parents_answered(self, sid: str) -> bool:
        return all(
            d in self.answers and self.answers[d].status == "ok"
            for d in self.plan.get(sid).depends_on
        )

    def _record(self, answers: Mapping[str, SubAnswer]) -> None:
        fresh = {sid: a for sid, a in answers.items() if sid not in self.answers}
        self.answers.update(fresh)
        self.new.update(fresh)
        self._ready.difference_update(fresh)
        for sid, answer in fresh.items():
            if answer.status != "ok":
                continue
            for child in self.plan.children(sid):
                if child not in self.answers and self._parents_answered(child):
                    self._ready.add(child)
                    heapq.heappush(self._by_priority, (self.order[child], child))


def _parent(answer: SubAnswer) -> ParentAnswer:
    return ParentAnswer(id=answer.id, question=answer.question, answer=answer.answer)


def _deliver(wakes: list[tuple[Wake, Turn]]) -> None:
    # Outside the lock: a wake may run the woken task's code on this thread (async).
    for wake, turn in wakes:
        wake(turn)

"""The systems compared, each answering one composite item and saying what it produced.

- `monolithic`: one model answers the whole composite query in one reply;
- `comp-llm`: the full pipeline (planner, router, parallel experts, aggregator);
- `sequential`: comp-llm's own plan and routes for the item, run one sub-query at a time
  (`max_parallel_experts=1`, no batching); its latency adds comp-llm's planning time, so the
  two differ only in how the plan is executed;
- `oracle-plan`: the gold decomposition and gold routing, run by the pipeline, to separate
  planner and router errors from expert errors.

Parts are scored on the answer each system gave to that part: an expert's answer to the
sub-query that matches the gold part, or the monolithic reply's section for it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, ConfigDict

from compllm.api import CompLLM, CompLLMResult
from compllm.baselines import MONOLITHIC_SYSTEM_PROMPT
from compllm.bench.extract import extract_choice, extract_number
from compllm.bench.suite import CompositeItem, Part
from compllm.plan import Plan
from compllm.pool import ExpertPool

__all__ = ["SYSTEMS", "PartOutcome", "SystemRun", "match_parts", "run_system", "score_part"]

SystemName = Literal["monolithic", "sequential", "comp-llm", "oracle-plan"]
SYSTEMS: tuple[SystemName, ...] = ("monolithic", "comp-llm", "sequential", "oracle-plan")


class PartOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    part_id: str
    domain: str
    predicted: str | None  # the option letter or number read from the answer
    correct: bool
    routed_to: str | None = None  # the expert that answered it (pipelines only)
    answer_text: str = ""


def _outcome(part: Part, text: str, routed_to: str | None = None) -> PartOutcome:
    predicted, correct = score_part(part, text)
    return PartOutcome(
        part_id=part.id,
        domain=part.domain,
        predicted=predicted,
        correct=correct,
        routed_to=routed_to,
        answer_text=text,
    )


class SystemRun(BaseModel):
    """One system on one item: outcomes per gold part, cost and what was loaded."""

    model_config = ConfigDict(frozen=True)

    system: SystemName
    item_id: str
    item_kind: str
    parts: list[PartOutcome]
    latency_s: float
    output_tokens: int
    models: list[str]  # chat models used, each once
    embedding_model: str | None = None
    plan_size: int = 0
    parts_found: int = 0  # gold parts some sub-query matched
    plan: Plan | None = None  # the routed plan the pipeline ran
    plan_s: float = 0.0  # time spent planning
    timings: dict[str, float] = {}  # the pipeline's stages (plan, route, execute, aggregate)
    error: str | None = None

    @classmethod
    def empty(
        cls, system: SystemName, item: CompositeItem, *, error: str | None = None
    ) -> SystemRun:
        """A run with no parts: what a failed run leaves (with its error)."""
        return cls(
            system=system,
            item_id=item.id,
            item_kind=item.kind,
            parts=[],
            latency_s=0.0,
            output_tokens=0,
            models=[],
            error=error,
        )

    @property
    def all_correct(self) -> bool:
        return bool(self.parts) and all(p.correct for p in self.parts)


def score_part(part: Part, text: str) -> tuple[str | None, bool]:
    """(what the text answers, whether that is right)."""
    if part.kind == "choice":
        index = extract_choice(text, part.choices)
        predicted = None if index is None else "ABCDEFGHIJ"[index]
        return predicted, predicted == part.answer
    number = extract_number(text)
    if number is None:
        return None, False
    predicted = f"{number:g}"
    return predicted, abs(number - float(part.answer)) < 1e-6


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def match_parts(plan: Plan, parts: Sequence[Part]) -> dict[str, str]:
    """Gold part id -> the sub-query id that asks it: the best word overlap (share of the
    gold part's words), at least half, each sub-query used once."""
    pairs = []
    for part in parts:
        gold = _words(part.question)
        for sub in plan.subqueries:
            overlap = len(gold & _words(sub.question)) / max(len(gold), 1)
            pairs.append((overlap, part.id, sub.id))
    matched: dict[str, str] = {}
    used: set[str] = set()
    for overlap, part_id, sub_id in sorted(pairs, reverse=True):
        if overlap >= 0.5 and part_id not in matched and sub_id not in used:
            matched[part_id] = sub_id
            used.add(sub_id)
    return matched


def _pipeline_run(
    system: SystemName,
    item: CompositeItem,
    result: CompLLMResult,
    latency_s: float,
    app: CompLLM,
    planning_models: list[str],
) -> SystemRun:
    answers = {a.id: a for a in result.answers}
    matched = match_parts(result.plan, item.parts)
    outcomes = []
    for part in item.parts:
        sub_id = matched.get(part.id)
        answer = answers.get(sub_id) if sub_id else None
        text = answer.answer if answer is not None and answer.status == "ok" else ""
        outcomes.append(_outcome(part, text, result.plan.get(sub_id).expert if sub_id else None))
    registry = app.registry
    assert registry is not None
    expert_models = [registry.expert(s.expert).model for s in result.plan.subqueries if s.expert]
    return SystemRun(
        system=system,
        item_id=item.id,
        item_kind=item.kind,
        parts=outcomes,
        latency_s=latency_s,
        output_tokens=sum(a.output_tokens or 0 for a in result.answers),
        models=list(dict.fromkeys([*planning_models, *expert_models])),
        embedding_model=app.context.embedding_model,
        plan_size=len(result.plan),
        parts_found=len(matched),
        plan=result.plan,
        plan_s=result.timings.get("plan", 0.0),
        timings=result.timings,
    )


def run_system(
    system: SystemName,
    item: CompositeItem,
    app: CompLLM,
    pool: ExpertPool,
    *,
    monolithic_model: str,
    max_new_tokens: int,
    reference: SystemRun | None = None,
    **context: Any,
) -> SystemRun:
    """Run one system on one item. `sequential` needs comp-llm's run of the same item
    (`reference`): it executes that run's plan."""
    ctx = app.context
    # The planner model counts only when it plans; the aggregator writes every final answer.
    planning = [ctx.aggregator_model]
    if ctx.planner_mode != "rules":
        planning.insert(0, ctx.planner_model)
    budget = {"aggregator_max_new_tokens": max_new_tokens * len(item.parts), **context}
    started = time.perf_counter()
    if system == "monolithic":
        return _monolithic(item, pool, monolithic_model, max_new_tokens)
    if system == "comp-llm":
        result = app.invoke(item.query, **budget)
        return _pipeline_run(system, item, result, time.perf_counter() - started, app, planning)
    if system == "oracle-plan":
        result = app.invoke(item.query, plan=item.gold_plan(), **budget)
        elapsed = time.perf_counter() - started
        return _pipeline_run(system, item, result, elapsed, app, [ctx.aggregator_model])
    if reference is None or reference.plan is None:
        raise ValueError("sequential runs comp-llm's plan: run comp-llm on the item first")
    result = app.invoke(
        item.query,
        plan=reference.plan,
        max_parallel_experts=1,
        max_batch_size=1,
        **budget,
    )
    elapsed = time.perf_counter() - started + reference.plan_s
    return _pipeline_run(system, item, result, elapsed, app, planning)


def _monolithic(
    item: CompositeItem, pool: ExpertPool, model: str, max_new_tokens: int
) -> SystemRun:
    started = time.perf_counter()
    settings = {"max_new_tokens": max_new_tokens * len(item.parts), "temperature": 0.0}
    messages = [SystemMessage(MONOLITHIC_SYSTEM_PROMPT), HumanMessage(item.query)]
    message = pool.call(model, messages, settings).result()
    latency = time.perf_counter() - started
    text = message.text
    sections = _sections(text, len(item.parts))
    outcomes = [_outcome(p, s) for p, s in zip(item.parts, sections, strict=True)]
    usage = message.usage_metadata
    return SystemRun(
        system="monolithic",
        item_id=item.id,
        item_kind=item.kind,
        parts=outcomes,
        latency_s=latency,
        output_tokens=usage["output_tokens"] if usage else 0,
        models=[model],
        plan_size=1,
        parts_found=0,
    )


_SECTION = re.compile(r"(?:^|\n)\W*(?:part|question|q)?\s*(\d{1,2})\s*[:.)]", re.IGNORECASE)


def _sections(text: str, count: int) -> list[str]:
    """The reply cut at "Part N:" / "N." markers; a part without its marker gets ''."""
    found: dict[int, str] = {}
    marks = [m for m in _SECTION.finditer(text) if 1 <= int(m.group(1)) <= count]
    ends = [m.start() for m in marks[1:]] + [len(text)] if marks else []
    for mark, end in zip(marks, ends, strict=True):
        found.setdefault(int(mark.group(1)), text[mark.end() : end])
    if not found and count == 1:
        return [text]
    return [found.get(n, "").strip() for n in range(1, count + 1)]

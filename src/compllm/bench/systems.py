"""The systems compared, each answering one composite item by generating text, and how each
answer is scored.

- `monolithic`: one model answers the whole composite query in one reply;
- `comp-llm`: the full pipeline (planner, router, parallel experts, aggregator);
- `sequential`: comp-llm's own plan and routes for the item, run one sub-query at a time
  (`max_parallel_experts=1`, no batching); its latency adds comp-llm's planning time, so the
  two differ only in how the plan is executed;
- `oracle-plan`: the gold decomposition and gold routing, run by the pipeline, to separate
  planner and router errors from expert errors.

Every part is scored twice:
- on the **final answer**, what the user reads: the monolithic reply or the pipeline's
  aggregated answer, cut into parts by `compllm.bench.sections` (the same cutter for every
  system);
- on its **per-part answer**: the expert's answer to the one sub-query that asks that part
  (`compllm.bench.matching`; a part no sub-query asks has no answer). The monolithic system
  has no per-part answers apart from its reply: its per-part score is its final-answer score.
Answers are read by `compllm.bench.extract` (strict: the last explicit statement).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Literal

from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, ConfigDict

from compllm.api import CompLLM, CompLLMResult
from compllm.baselines import MONOLITHIC_SYSTEM_PROMPT
from compllm.bench.extract import LETTERS, extract_choice, extract_number
from compllm.bench.matching import match_parts
from compllm.bench.sections import split_sections
from compllm.bench.suite import CompositeItem, Part
from compllm.models import is_learned_planner
from compllm.plan import Plan
from compllm.pool import ExpertPool

__all__ = [
    "SYSTEMS",
    "Mode",
    "PartOutcome",
    "SystemName",
    "SystemRun",
    "is_chat_model_with_weights",
    "is_local_model",
    "model_name",
    "outcome",
    "rescore",
    "run_system",
    "score_answer",
]

SystemName = Literal["monolithic", "sequential", "comp-llm", "oracle-plan"]
SYSTEMS: tuple[SystemName, ...] = ("monolithic", "comp-llm", "sequential", "oracle-plan")
Mode = Literal["generate", "loglik"]


class PartOutcome(BaseModel):
    """One gold part as one system answered it."""

    model_config = ConfigDict(frozen=True)

    part_id: str
    domain: str
    kind: Literal["choice", "number"] = "choice"
    gold: str = ""  # the option letter or the number
    options: int = 0  # how many options (multiple choice)
    predicted: str | None  # read from the part's own answer (see the module doc)
    correct: bool
    answer_text: str = ""
    final_predicted: str | None = None  # read from the final answer's section for the part
    final_correct: bool | None = None  # None: not scored on a final answer (log-likelihood)
    located: str = ""  # how the final answer's section was found (see compllm.bench.sections)
    routed_to: str | None = None  # the expert that answered it (pipelines only)
    option_scores: list[float] = []  # log-likelihood mode: each option's normalised score


class SystemRun(BaseModel):
    """One system on one item in one mode: outcomes per gold part, cost and what was used."""

    model_config = ConfigDict(frozen=True)

    system: SystemName
    mode: Mode = "generate"
    item_id: str
    item_kind: str
    style: str = ""
    parts: list[PartOutcome]
    latency_s: float
    output_tokens: int
    models: list[str]  # chat models used, each once
    embedding_model: str | None = None
    plan_size: int = 0
    parts_found: int = 0  # gold parts that exactly one sub-query asks (strict matching)
    plan: Plan | None = None  # the routed plan the pipeline ran
    plan_s: float = 0.0  # time spent planning
    timings: dict[str, float] = {}  # the pipeline's stages (plan, route, execute, aggregate)
    final_answer: str = ""
    aggregation: str = ""
    error: str | None = None

    @classmethod
    def empty(
        cls,
        system: SystemName,
        item: CompositeItem,
        *,
        mode: Mode = "generate",
        error: str | None = None,
    ) -> SystemRun:
        """A run with no parts: what a failed run leaves (with its error)."""
        return cls(
            system=system,
            mode=mode,
            item_id=item.id,
            item_kind=item.kind,
            style=item.style,
            parts=[],
            latency_s=0.0,
            output_tokens=0,
            models=[],
            error=error,
        )

    @property
    def all_correct(self) -> bool:
        """Every part right on what the user reads (the final answer; in log-likelihood
        mode, the scored parts)."""
        if not self.parts:
            return False
        if self.mode == "loglik":
            return all(p.correct for p in self.parts)
        return all(bool(p.final_correct) for p in self.parts)


def score_answer(part: Part, text: str) -> tuple[str | None, bool]:
    """(what the text answers, whether that is right)."""
    if part.kind == "choice":
        index = extract_choice(text, part.choices)
        predicted = None if index is None else LETTERS[index]
        return predicted, predicted == part.answer
    number = extract_number(text)
    if number is None:
        return None, False
    return f"{number:g}", abs(number - float(part.answer)) < 1e-6


def outcome(
    part: Part,
    part_text: str,
    final_text: str | None,
    *,
    located: str = "",
    routed_to: str | None = None,
) -> PartOutcome:
    """Score `part` on its own answer and, unless None, on its final-answer section."""
    predicted, correct = score_answer(part, part_text)
    final_predicted, final_correct = (
        score_answer(part, final_text) if final_text is not None else (None, None)
    )
    return PartOutcome(
        part_id=part.id,
        domain=part.domain,
        kind=part.kind,
        gold=part.answer,
        options=len(part.choices),
        predicted=predicted,
        correct=correct,
        answer_text=part_text,
        final_predicted=final_predicted,
        final_correct=final_correct,
        located=located,
        routed_to=routed_to,
    )


def is_local_model(model: object) -> bool:
    """Whether an expert's model is a reference to weights this machine can load: a hub id,
    a folder or `embedded:*` (not a remote endpoint, a built-in tool or a Python object)."""
    if not isinstance(model, str):
        return False
    if model.startswith("embedded:"):
        return True
    if ":" in model:  # openai:..., builtin:..., python:...
        return False
    return Path(model).exists() or re.fullmatch(r"[\w.-]+(/[\w.-]+)?", model) is not None


def is_chat_model_with_weights(model: object) -> bool:
    """Whether a system's model is a chat model whose parameters can be counted: local
    weights (`is_local_model`) and not a learned planner, which is an encoder and a tagger
    (so a report never loads it as a chat model)."""
    return is_local_model(model) and not is_learned_planner(str(model))


def model_name(model: object) -> str:
    """A model reference as it is, or what kind of object an expert runs ("Calculator
    (object)", never taken for a hub id)."""
    return model if isinstance(model, str) else f"{type(model).__name__} (object)"


def final_sections(item: CompositeItem, text: str) -> tuple[list[str], list[str]]:
    """(section per part, how each was found) of a final answer to `item`."""
    sections = split_sections(
        text,
        len(item.parts),
        questions=[p.question for p in item.parts],
        lettered=item.lettered,
    )
    return sections.texts, sections.how


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
    texts, how = final_sections(item, result.answer)
    outcomes = []
    for part, final_text, located in zip(item.parts, texts, how, strict=True):
        sub_id = matched.get(part.id)
        answer = answers.get(sub_id) if sub_id else None
        text = answer.answer if answer is not None and answer.status == "ok" else ""
        routed = result.plan.get(sub_id).expert if sub_id else None
        outcomes.append(outcome(part, text, final_text, located=located, routed_to=routed))
    registry = app.registry
    assert registry is not None
    expert_models = [
        model_name(registry.expert(s.expert).model) for s in result.plan.subqueries if s.expert
    ]
    return SystemRun(
        system=system,
        item_id=item.id,
        item_kind=item.kind,
        style=item.style,
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
        final_answer=result.answer,
        aggregation=result.aggregation,
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
    texts, how = final_sections(item, message.text)
    # One reply: each part's own answer is its section of it.
    outcomes = [
        outcome(part, text, text, located=located)
        for part, text, located in zip(item.parts, texts, how, strict=True)
    ]
    usage = message.usage_metadata
    return SystemRun(
        system="monolithic",
        item_id=item.id,
        item_kind=item.kind,
        style=item.style,
        parts=outcomes,
        latency_s=latency,
        output_tokens=usage["output_tokens"] if usage else 0,
        models=[model],
        plan_size=1,
        final_answer=message.text,
    )


def rescore(run: SystemRun, item: CompositeItem) -> SystemRun:
    """`run` scored again from the texts it kept (each part's answer and the final answer),
    with the current extraction and section rules: no model runs again. Log-likelihood runs
    and failed runs keep their outcomes."""
    if run.mode != "generate" or run.error is not None or not run.parts:
        return run
    texts, how = final_sections(item, run.final_answer)
    kept = {p.part_id: p for p in run.parts}
    parts = []
    for part, final_text, located in zip(item.parts, texts, how, strict=True):
        old = kept.get(part.id)
        own = final_text if run.system == "monolithic" else (old.answer_text if old else "")
        routed = old.routed_to if old else None
        parts.append(outcome(part, own, final_text, located=located, routed_to=routed))
    return run.model_copy(update={"parts": parts})

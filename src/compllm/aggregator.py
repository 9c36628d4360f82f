"""Response aggregator: composes one final answer from every (sub-query, expert, answer).

One-part plans pass the expert's answer through. Otherwise the aggregator LLM writes the
answer; parts without an answer are always listed after it by the code, not left to the model,
so a missing part can never be glossed over.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from compllm.errors import CompLLMError
from compllm.prompts import render_prompt
from compllm.state import (
    Context,
    NodeFunction,
    State,
    SubAnswer,
    state_answers,
    state_plan,
    time_left,
)

if TYPE_CHECKING:
    from compllm.services import Services

__all__ = ["compose_fallback", "make_aggregate_node", "missing_note", "uncovered_parts"]


def missing_note(parts: list[SubAnswer]) -> str:
    """One line per part that has no answer, or '' when every part was answered."""
    lines = [
        f"- part {index} ({part.question!r}, expert {part.expert}): {part.error or part.status}"
        for index, part in enumerate(parts, start=1)
        if part.status != "ok"
    ]
    return "Missing parts:\n" + "\n".join(lines) if lines else ""


def compose_fallback(parts: list[SubAnswer]) -> str:
    """Every answered part in plan order: used when the aggregator model fails or leaves
    parts out."""
    return "\n\n".join(
        f"{index}. {part.question} ({part.expert})\n{part.answer}"
        for index, part in enumerate(parts, start=1)
        if part.status == "ok"
    )


def uncovered_parts(final: str, parts: list[SubAnswer], *, min_overlap: float = 0.25) -> list[str]:
    """Ids of answered parts the final answer leaves out: fewer than `min_overlap` of the
    distinctive words of the part's answer appear in it. Small models often answer only the
    first or last part; this catches it without asking a model."""
    final_words = _words(final)
    missing = []
    for part in parts:
        if part.status != "ok":
            continue
        distinctive = _words(part.answer) - _words(
            " ".join(p.answer for p in parts if p is not part)
        )
        if distinctive and len(distinctive & final_words) < min_overlap * len(distinctive):
            missing.append(part.id)
    return missing


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]{4,}", text.lower()))


def make_aggregate_node(services: Services) -> NodeFunction[State]:
    """The reducer node: writes `final_answer` and how it was made (`aggregation`)."""

    def aggregate(state: State, *, runtime: Runtime[Context]) -> dict[str, Any]:
        context = runtime.context or Context()
        started = time.perf_counter()
        answers = state_answers(state)
        parts = [answers[s.id] for s in state_plan(state).subqueries if s.id in answers]
        answered = [p for p in parts if p.status == "ok"]
        if not answered:
            body, how = "No expert produced an answer.", "none"
        elif len(parts) == 1 and context.passthrough_single:
            body, how = answered[0].answer, "passthrough"
        elif (left := time_left(state, context)) is not None and left <= 0:
            body, how = compose_fallback(parts), "concatenated"  # no time left to compose
        else:
            body, how = _llm_answer(services, context, state["query"], parts), "llm"
            if not body or uncovered_parts(body, parts):
                body, how = compose_fallback(parts), "concatenated"
        note = missing_note(parts)
        return {
            "final_answer": f"{body}\n\n{note}" if note else body,
            "aggregation": how,
            "timings": {"aggregate": time.perf_counter() - started},
        }

    return aggregate


def _llm_answer(services: Services, context: Context, query: str, parts: list[SubAnswer]) -> str:
    messages = [
        SystemMessage(render_prompt("aggregator.system")),
        HumanMessage(render_prompt("aggregator.user", query=query, parts=parts)),
    ]
    with services.pool.lease(context.aggregator_model) as llm:
        try:
            limit = context.aggregator_max_new_tokens
            return llm.invoke(messages, max_new_tokens=limit).text.strip()
        except CompLLMError:
            raise
        except Exception:  # the experts' answers still reach the user, concatenated
            return ""

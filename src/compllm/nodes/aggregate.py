"""The `aggregate` node: writes `final_answer` and how it was made (`aggregation`), and
`aggregation_error` when the aggregator model's answer could not be used."""

from __future__ import annotations

import time
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from compllm.aggregator import (
    aggregation_messages,
    compose_fallback,
    missing_note,
    uncovered_parts,
)
from compllm.errors import CompLLMError
from compllm.experts import answer_text, invoke_model
from compllm.services import Services
from compllm.state import (
    Context,
    State,
    SubAnswer,
    run_context,
    state_answers,
    state_plan,
    time_left,
)

__all__ = ["make_aggregate_node"]


def make_aggregate_node(services: Services) -> Any:
    def aggregate(
        state: State, config: RunnableConfig, *, runtime: Runtime[Context]
    ) -> dict[str, Any]:
        context = run_context(runtime.context)
        started = time.perf_counter()
        answers = state_answers(state)
        parts = [answers[s.id] for s in state_plan(state).subqueries if s.id in answers]
        answered = [p for p in parts if p.status == "ok"]
        error = None
        if not answered:
            body, how = "No expert produced an answer.", "none"
        elif len(parts) == 1 and context.passthrough_single:
            body, how = answered[0].answer, "passthrough"
        elif (left := time_left(state, context)) is not None and left <= 0:
            body, how = compose_fallback(parts), "concatenated"
            error = "no time left to compose (Context.max_run_s)"
        else:
            body, error = _model_answer(services, context, state["query"], parts, config)
            how = "llm"
            if error is None and (left_out := uncovered_parts(body, parts)):
                error = f"the aggregator's answer leaves out {', '.join(left_out)}"
            if error is not None:
                body, how = compose_fallback(parts), "concatenated"
        note = missing_note(parts)
        update: dict[str, Any] = {
            "final_answer": f"{body}\n\n{note}" if note else body,
            "aggregation": how,
            "timings": {"aggregate": time.perf_counter() - started},
        }
        if error is not None:
            update["aggregation_error"] = error
        return update

    return aggregate


def _model_answer(
    services: Services,
    context: Context,
    query: str,
    parts: list[SubAnswer],
    config: RunnableConfig,
) -> tuple[str, str | None]:
    """(the aggregator model's answer, None) or ("", why it could not be used)."""
    model = services.aggregator if services.aggregator is not None else context.aggregator_model
    messages = aggregation_messages(query, parts)
    payload = {
        "query": query,
        "parts": [p.model_dump(mode="json") for p in parts],
        "messages": messages,
    }
    try:
        output = invoke_model(
            services.pool,
            model,
            messages,
            settings={"max_new_tokens": context.aggregator_max_new_tokens},
            payload=payload,
            config=config,
        )
        text = answer_text(output).strip()
    except CompLLMError:
        raise  # a model that cannot load is a configuration error: fail loudly
    except Exception as exc:  # the experts' answers still reach the user, concatenated
        return "", f"{type(exc).__name__}: {exc}"
    return (text, None) if text else ("", "the aggregator returned an empty answer")

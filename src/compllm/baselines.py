"""The monolithic baseline as a graph: one model answers the whole query in one reply.

Served next to the Comp-LLM graph (`langgraph.json`), so Studio users can send the same query
to both and compare answers, latency and tokens. It runs through the same process-wide
model pool, so a model both graphs use is loaded once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.config import get_config
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from compllm.models import EMBEDDED_CHAT_MODEL, ModelProvider
from compllm.services import Services

__all__ = [
    "MONOLITHIC_SYSTEM_PROMPT",
    "MonolithicContext",
    "MonolithicState",
    "build_monolithic_graph",
]

MONOLITHIC_SYSTEM_PROMPT = (
    "Answer every numbered part of the user's request in order. For each part write one line "
    "'Part N: ' followed by the answer: the option letter for multiple-choice questions, the "
    "number for calculations."
)


class MonolithicInput(TypedDict):
    query: str


class MonolithicState(TypedDict):
    query: str
    final_answer: str
    latency_s: float
    output_tokens: int | None


@dataclass(kw_only=True)
class MonolithicContext:
    """Run-time settings of the monolithic baseline."""

    model: str = field(
        default=EMBEDDED_CHAT_MODEL,
        metadata={"description": "The one model that answers: hub id, local path or embedded:*."},
    )
    max_new_tokens: int = field(
        default=512, metadata={"description": "Token budget of the whole reply."}
    )
    system_prompt: str = field(
        default=MONOLITHIC_SYSTEM_PROMPT,
        metadata={"description": "The instructions given with the query."},
    )


def build_monolithic_graph(
    *, provider: ModelProvider | None = None, name: str = "monolithic"
) -> CompiledStateGraph[MonolithicState, MonolithicContext, MonolithicInput, MonolithicState]:
    """START -> answer -> END, on `provider` (default: the process-wide hub and pool)."""
    services = Services(provider)

    def answer(state: MonolithicState, *, runtime: Runtime[MonolithicContext]) -> dict[str, Any]:
        context = runtime.context or MonolithicContext()
        started = time.perf_counter()
        messages = [SystemMessage(context.system_prompt), HumanMessage(state["query"])]
        settings = {"max_new_tokens": context.max_new_tokens, "temperature": 0.0}
        # The run's config (callbacks, tracing, the messages stream) goes with the call.
        call = services.pool.call(context.model, messages, settings, config=get_config())
        message = call.result()
        usage = message.usage_metadata
        return {
            "final_answer": message.text.strip(),
            "latency_s": time.perf_counter() - started,
            "output_tokens": usage["output_tokens"] if usage else None,
        }

    builder = StateGraph(
        MonolithicState, context_schema=MonolithicContext, input_schema=MonolithicInput
    )
    builder.add_node("answer", answer)
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    return builder.compile(name=name)

"""How an LLM planner is asked for a plan, whatever kind of model it is.

- compllm's own models (a reference string the hub loads: transformers, llama.cpp, an
  OpenAI-compatible endpoint) take the plan's JSON schema and decoding settings as call
  keywords and decode under the schema;
- a user's chat model object (`ChatOpenAI`, ...) gets only the messages: its structured
  output (`with_structured_output`, JSON schema) where it offers one, else plain text;
- any other Runnable or function gets `{"query", "messages"}` and may return a `Plan`, a
  dict, JSON text or a message.

Every call carries the run's config. With `on_text`, a call without structured output
streams and hands each piece of text over as it comes (the plan node starts experts while
the plan is being written).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig

from compllm.experts import answer_text, as_runnable
from compllm.plan import Plan

__all__ = ["PlannerLLM"]


class PlannerLLM:
    """One planner model and the run's config; `native` means it takes compllm's call
    keywords (`json_schema`, `max_new_tokens`, ...)."""

    def __init__(self, model: Any, *, native: bool, config: RunnableConfig | None = None) -> None:
        self.model, self.native, self.config = model, native, config

    @property
    def streams(self) -> bool:
        """Whether its text can be read while it is written."""
        return isinstance(self.model, BaseChatModel)

    def ask(
        self,
        messages: Sequence[BaseMessage],
        *,
        query: str,
        schema: Mapping[str, Any],
        max_new_tokens: int,
        settings: Mapping[str, Any],
        on_text: Callable[[str], None] | None = None,
    ) -> str:
        """The model's plan as text (JSON for the planner's parser)."""
        if isinstance(self.model, BaseChatModel):
            keywords = (
                {"json_schema": dict(schema), "max_new_tokens": max_new_tokens, **settings}
                if self.native
                else {}
            )
            if not self.native:
                # Its own structured output, whole: a provider's JSON mode is worth more
                # than starting experts early (compllm's own models do both).
                structured = self._structured(list(messages), schema)
                if structured is not None:
                    return structured
            if on_text is not None:
                return self._streamed(list(messages), keywords, on_text)
            return self.model.invoke(list(messages), self.config, **keywords).text
        output = as_runnable(self.model).invoke(
            {"query": query, "messages": list(messages)}, self.config
        )
        if isinstance(output, Plan):
            return output.model_dump_json()
        if isinstance(output, Mapping) and "subqueries" in output:
            return json.dumps(output, default=str)
        return answer_text(output)

    def _streamed(
        self, messages: list[BaseMessage], keywords: dict[str, Any], on_text: Callable[[str], None]
    ) -> str:
        pieces = []
        for chunk in self.model.stream(messages, self.config, **keywords):
            if chunk.text:
                pieces.append(chunk.text)
                on_text(chunk.text)
        return "".join(pieces)

    def _structured(self, messages: list[BaseMessage], schema: Mapping[str, Any]) -> str | None:
        """The plan through the model's own structured output, or None when it has none."""
        try:
            runnable = self.model.with_structured_output(
                _portable_schema(schema), method="json_schema"
            )
        except (NotImplementedError, ValueError, TypeError):
            return None
        value = runnable.invoke(messages, self.config)
        return json.dumps(value, default=str) if isinstance(value, Mapping) else str(value)


def _portable_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The plan schema as any provider's structured output takes it: named, and without the
    word patterns that hold a small local model to the query's words (a large model does
    not need them, and strict JSON-schema modes refuse them)."""

    def strip(node: Any) -> Any:
        if isinstance(node, Mapping):
            return {k: strip(v) for k, v in node.items() if k not in ("pattern", "minItems")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return {
        "title": "plan",
        "description": "The user's request split into sub-questions with dependencies.",
        **strip(schema),
    }

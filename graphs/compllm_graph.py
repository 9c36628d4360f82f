"""Entry point for `langgraph.json` (LangGraph Studio / `langgraph dev`)."""

from compllm.graph import graph

__all__ = ["graph"]

"""Entry point for `langgraph.json`: the monolithic baseline (one model, one reply)."""

from compllm.baselines import build_monolithic_graph

graph = build_monolithic_graph()

__all__ = ["graph"]

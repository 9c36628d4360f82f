"""compllm: composable LLM inference (Comp-LLM) on LangGraph.

A planner splits a query into a DAG of sub-queries, a router sends each one to a domain
expert by embedding similarity, the experts run in parallel where dependencies allow, and an
aggregator composes the final answer.
"""

from compllm.api import CompLLM, CompLLMResult, RouteInfo
from compllm.checkpoint import open_checkpointer
from compllm.errors import CompLLMError, ModelLoadError, PromptError, QueryError, RegistryError
from compllm.graph import build_graph, create_compllm, graph
from compllm.models import EMBEDDED_CHAT_MODEL, EMBEDDED_EMBEDDINGS, ModelHub, ModelProvider
from compllm.plan import Plan, PlanError, SubQuery
from compllm.registry import (
    Expert,
    GenerationSettings,
    Registry,
    default_registry,
    load_registry,
)
from compllm.router import ExpertRouter
from compllm.state import Context, State, SubAnswer

__all__ = [
    "EMBEDDED_CHAT_MODEL",
    "EMBEDDED_EMBEDDINGS",
    "CompLLM",
    "CompLLMError",
    "CompLLMResult",
    "Context",
    "Expert",
    "ExpertRouter",
    "GenerationSettings",
    "ModelHub",
    "ModelLoadError",
    "ModelProvider",
    "Plan",
    "PlanError",
    "PromptError",
    "QueryError",
    "Registry",
    "RegistryError",
    "RouteInfo",
    "State",
    "SubAnswer",
    "SubQuery",
    "build_graph",
    "create_compllm",
    "default_registry",
    "graph",
    "load_registry",
    "open_checkpointer",
]

__version__ = "0.1.0"

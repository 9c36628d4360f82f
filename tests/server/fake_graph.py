"""The Comp-LLM graph on fake models, served by `langgraph dev` in the server tests.

Loaded by path by the LangGraph server, so it puts the repository on `sys.path` itself.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from compllm import build_graph
from compllm.baselines import build_monolithic_graph
from tests.fakes import make_provider, make_test_registry, plan_json

PLAN = plan_json(
    ("q1", "Multiply two numbers, 12 and 7.", []),
    ("q2", "What are the symptoms of diabetes?", []),
    ("q3", "Is the product of the two numbers prime?", ["q1"]),
)

provider = make_provider(
    planner=PLAN,
    expert_answers={"prime": "84 is not prime.", "Multiply": "84", "diabetes": "Thirst."},
    aggregate="12*7 = 84, not prime; diabetes causes thirst.",
    expert_delay_s=0.2,
)
graph = build_graph(provider=provider, experts=make_test_registry(), name="compllm-fake")
monolithic = build_monolithic_graph(provider=provider)

# The same pipeline with instant experts: the input-validation tests send it hundreds of runs.
quick = build_graph(
    provider=make_provider(planner=PLAN, expert_answers={"Multiply": "84"}, aggregate="done"),
    experts=make_test_registry(),
    name="compllm-quick",
)

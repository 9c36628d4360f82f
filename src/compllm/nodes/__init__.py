"""The graph's node factories: each reads state, calls the pure logic of its stage (planner,
router, review, scheduling and expert calls, aggregator) and writes state. `compllm.graph`
wires them."""

from compllm.nodes.aggregate import make_aggregate_node
from compllm.nodes.execute import make_execute_node
from compllm.nodes.review import make_review_node
from compllm.nodes.route import make_route_node
from compllm.nodes.waves import (
    make_dispatch,
    make_wave_expert_node,
    schedule,
)

__all__ = [
    "make_aggregate_node",
    "make_dispatch",
    "make_execute_node",
    "make_review_node",
    "make_route_node",
    "make_wave_expert_node",
    "schedule",
]

"""The graph `benchmarks/load.py --target server` serves: the pipeline on simulated experts
that answer with the sub-query they were asked (so lost or crossed results show)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/

from _common import SIMULATED_REGISTRY, SimulatedProvider
from load import EchoExpert

from compllm import build_graph

graph = build_graph(
    provider=SimulatedProvider(EchoExpert()), experts=SIMULATED_REGISTRY, name="load"
)

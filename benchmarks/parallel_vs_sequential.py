"""Executor latency on plan shapes: parallel vs one-at-a-time vs the critical-path bound.

Experts are simulated with fixed latencies (they sleep), so the figures measure the executor,
not a model. Each shape runs through the whole graph (given plan -> route -> experts ->
aggregate) twice, side by side in one process: `max_parallel_experts=1` (sequential processing
of the same sub-queries, the paper's baseline) and `max_parallel_experts=N`.

    .venv/bin/python benchmarks/parallel_vs_sequential.py [--unit 0.2] [--out results.json]

Reported per shape: the expert-stage makespan (first expert start to last expert end), the
critical-path bound (sum of latencies on the heaviest dependency chain), makespan / bound, and
the speedup over sequential.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from compllm import CompLLM, Context, Plan, SubQuery
from compllm.registry import parse_registry

REGISTRY = parse_registry(
    """
generalist: worker
experts:
  - {name: worker, description: simulated expert, system_prompt: simulated, model: sim}
""",
    source="benchmark-registry",
)


class SimulatedExpert(BaseChatModel):
    """Sleeps for the latency written in the question ("... [0.4 s]")."""

    @property
    def _llm_type(self) -> str:
        return "simulated"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        question = messages[-1].text.splitlines()[-1]
        time.sleep(float(question.rsplit("[", 1)[1].split()[0]))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="done"))])


class ConstantEmbeddings(Embeddings):
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[1.0, 0.0] for _ in texts]

    def embed_query(self, text: str) -> list[float]:
        return [1.0, 0.0]


@dataclass
class Provider:
    expert: BaseChatModel

    def chat_model(self, ref: str, *, trust_remote_code: bool = False) -> BaseChatModel:
        return self.expert if ref == "sim" else FakeListChatModel(responses=["aggregated"])

    def embeddings(self, ref: str) -> Embeddings:
        return ConstantEmbeddings()


def shapes(unit: float) -> dict[str, dict[str, tuple[float, tuple[str, ...]]]]:
    """name -> {id: (latency_s, depends_on)}"""
    return {
        "chain-4": {f"n{i}": (unit, (f"n{i - 1}",) if i else ()) for i in range(4)},
        "fan-out-4": {f"n{i}": (unit, ()) for i in range(4)},
        "fan-in-4": {**{f"n{i}": (unit, ()) for i in range(3)}, "join": (unit, ("n0", "n1", "n2"))},
        "diamond": {
            "a": (unit, ()),
            "b": (unit, ("a",)),
            "c": (unit, ("a",)),
            "d": (unit, ("b", "c")),
        },
        # The wave executor's weak spot: C waits for the slow A although it only needs B.
        "slow-branch": {"A": (3 * unit, ()), "B": (unit, ()), "C": (unit, ("B",))},
        "two-chains": {
            **{f"x{i}": (unit, (f"x{i - 1}",) if i else ()) for i in range(3)},
            **{f"y{i}": (unit, (f"y{i - 1}",) if i else ()) for i in range(3)},
        },
    }


def build_plan(spec: dict[str, tuple[float, tuple[str, ...]]]) -> Plan:
    return Plan.build(
        [
            SubQuery(id=sid, question=f"Do {sid} [{lat} s]", depends_on=deps)
            for sid, (lat, deps) in spec.items()
        ]
    )


def makespan(result: Any) -> float:
    return max(a.finished_at for a in result.answers) - min(a.started_at for a in result.answers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unit", type=float, default=0.2, help="latency of one sub-query (s)")
    parser.add_argument("--parallel", type=int, default=8, help="max_parallel_experts")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/parallel_vs_sequential.json")
    )
    args = parser.parse_args()

    app = CompLLM(
        registry=REGISTRY,
        provider=Provider(SimulatedExpert()),
        context=Context(aggregator_model="agg", embedding_model="const"),
    )
    rows = []
    for name, spec in shapes(args.unit).items():
        plan = build_plan(spec)
        bound = sum(spec[s][0] for s in plan.critical_path({s: v[0] for s, v in spec.items()}))
        sequential = makespan(app.invoke(name, plan=plan, max_parallel_experts=1))
        parallel = makespan(app.invoke(name, plan=plan, max_parallel_experts=args.parallel))
        rows.append(
            {
                "shape": name,
                "subqueries": len(plan),
                "critical_path_s": round(bound, 3),
                "sequential_s": round(sequential, 3),
                "parallel_s": round(parallel, 3),
                "parallel_over_bound": round(parallel / bound, 3),
                "speedup_vs_sequential": round(sequential / parallel, 3),
            }
        )

    columns = [
        ("shape", "shape", "<12", ""),
        ("n", "subqueries", ">3", ""),
        ("bound s", "critical_path_s", ">8", ".2f"),
        ("seq s", "sequential_s", ">7", ".2f"),
        ("par s", "parallel_s", ">7", ".2f"),
        ("par/bound", "parallel_over_bound", ">9", ".2f"),
        ("speedup", "speedup_vs_sequential", ">8", ".2f"),
    ]
    print(" ".join(f"{title:{align}}" for title, _, align, _ in columns))
    for r in rows:
        print(" ".join(f"{r[key]:{align}{fmt}}" for _, key, align, fmt in columns))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "unit_s": args.unit,
                "parallel": args.parallel,
                "machine": platform.platform(),
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

"""Scheduling: makespan against the critical-path bound, dataflow vs wave executor.

    .venv/bin/python benchmarks/scheduling.py [--unit 0.1] [--out-dir benchmarks/results]

Experts are simulated with fixed latencies (they sleep), so the figures measure the executor,
not a model. Every shape runs through the whole graph (given plan -> route -> experts ->
aggregate) three times, side by side in one process: the dataflow executor, the wave executor
(both with slots for every sub-query), and sequential processing of the same plan (dataflow
with one slot, the paper's baseline). The makespan is the expert stage: first expert start to
last expert end (each expert's start is when its call began), the median of
`--repeats` runs. The bound is the sum of latencies on the plan's heaviest dependency chain:
no executor can beat it.
"""

from __future__ import annotations

import argparse
import random
import statistics
from pathlib import Path
from typing import Any

from _common import (
    RESULTS,
    SIMULATED_REGISTRY,
    SimulatedExpert,
    SimulatedProvider,
    makespan,
    print_table,
    pyplot,
    save_plot,
    write_json,
)

from compllm import CompLLM, Context, Plan, SubQuery

Shape = dict[str, tuple[float, tuple[str, ...]]]  # id -> (latency in units, depends_on)


def chain(n: int, prefix: str = "n", latency: float = 1.0) -> Shape:
    return {f"{prefix}{i}": (latency, (f"{prefix}{i - 1}",) if i else ()) for i in range(n)}


def random_dag(n: int, seed: int) -> Shape:
    """Each node depends on up to three earlier nodes; latencies from 0.5 to 2 units."""
    rng = random.Random(seed)
    shape: Shape = {}
    for i in range(n):
        earlier = list(shape)
        parents = rng.sample(earlier, k=min(len(earlier), rng.choice([0, 1, 1, 2, 3])))
        shape[f"r{i}"] = (round(rng.uniform(0.5, 2.0), 2), tuple(parents))
    return shape


def shapes() -> dict[str, Shape]:
    return {
        "chain-8": chain(8),
        "fan-out-8": {f"n{i}": (1.0, ()) for i in range(8)},
        "fan-in-8": {
            **{f"n{i}": (1.0, ()) for i in range(7)},
            "join": (1.0, tuple(f"n{i}" for i in range(7))),
        },
        "diamond": {"a": (1.0, ()), "b": (1.0, ("a",)), "c": (1.0, ("a",)), "d": (1.0, ("b", "c"))},
        # C needs only the fast B, yet the wave executor makes it wait for the slow A.
        "slow-branch": {"A": (3.0, ()), "B": (1.0, ()), "C": (1.0, ("B",))},
        "wide-slow-branch": {
            "slow": (4.0, ()),
            **{k: v for j in range(6) for k, v in chain(3, prefix=f"w{j}_", latency=1.0).items()},
        },
        **{f"random-{n}": random_dag(n, seed=n) for n in (5, 10, 20, 30)},
        "deep-chain-50": chain(50, latency=0.3),
    }


def build_plan(shape: Shape, unit: float) -> Plan:
    return Plan.build(
        [
            SubQuery(id=sid, question=f"Do {sid} [{latency * unit:.4f} s]", depends_on=deps)
            for sid, (latency, deps) in shape.items()
        ],
        max_subqueries=len(shape),
    )


def median_makespan(
    pipeline: CompLLM, name: str, plan: Plan, repeats: int, **settings: Any
) -> float:
    # One run can catch a full garbage collection (about 80 ms on this machine with LangChain
    # imported) or a neighbour's burst: the median of `repeats` runs cannot.
    return statistics.median(
        makespan(pipeline.invoke(name, plan=plan, **settings)) for _ in range(repeats)
    )


def measure(unit: float, repeats: int) -> list[dict[str, Any]]:
    pipeline = CompLLM(
        registry=SIMULATED_REGISTRY,
        provider=SimulatedProvider(SimulatedExpert()),
        context=Context(aggregator_model="agg", embedding_model="const", max_subqueries=256),
    )
    rows = []
    for name, shape in shapes().items():
        plan = build_plan(shape, unit)
        latency = {sid: shape[sid][0] * unit for sid in shape}
        bound = sum(latency[sid] for sid in plan.critical_path(latency))
        slots = len(plan)

        run = (pipeline, name, plan, repeats)
        dataflow = median_makespan(*run, max_parallel_experts=slots)
        waves = median_makespan(*run, max_parallel_experts=slots, executor="waves")
        sequential = median_makespan(*run, max_parallel_experts=1)
        rows.append(
            {
                "shape": name,
                "subqueries": len(plan),
                "bound_s": bound,
                "dataflow_s": dataflow,
                "waves_s": waves,
                "sequential_s": sequential,
                "dataflow_over_bound": dataflow / bound,
                "waves_over_bound": waves / bound,
                "dataflow_speedup": sequential / dataflow,
                "waves_speedup": sequential / waves,
            }
        )
        print(f"  {name}: dataflow {dataflow / bound:.3f}x bound, waves {waves / bound:.3f}x")
    return rows


def plot(rows: list[dict[str, Any]], out_dir: Path, target: float) -> None:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(10, 4.2))
    x = range(len(rows))
    axis.bar([i - 0.2 for i in x], [r["dataflow_over_bound"] for r in rows], 0.4, label="dataflow")
    axis.bar([i + 0.2 for i in x], [r["waves_over_bound"] for r in rows], 0.4, label="waves")
    axis.axhline(target, color="black", linestyle="--", linewidth=1, label=f"target {target}x")
    axis.set_xticks(list(x), [r["shape"] for r in rows], rotation=30, ha="right")
    axis.set_ylabel("makespan / critical-path bound")
    axis.set_ylim(0.9, max(1.6, max(r["waves_over_bound"] for r in rows) + 0.1))
    axis.legend()
    save_plot(figure, "scheduling", out_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unit", type=float, default=0.1, help="seconds in one latency unit")
    parser.add_argument("--repeats", type=int, default=3, help="runs per executor and shape")
    parser.add_argument("--target", type=float, default=1.05, help="makespan/bound goal")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = measure(args.unit, args.repeats)
    print()
    print_table(
        rows,
        [
            ("shape", "shape", "<16"),
            ("n", "subqueries", ">3"),
            ("bound s", "bound_s", ".2f"),
            ("dataflow s", "dataflow_s", ".2f"),
            ("waves s", "waves_s", ".2f"),
            ("seq s", "sequential_s", ".2f"),
            ("df/bound", "dataflow_over_bound", ".3f"),
            ("waves/bound", "waves_over_bound", ".3f"),
            ("df speedup", "dataflow_speedup", ".2f"),
            ("wv speedup", "waves_speedup", ".2f"),
        ],
    )
    worst = max(r["dataflow_over_bound"] for r in rows)
    print(f"\nworst dataflow makespan/bound: {worst:.3f} (target {args.target})")
    write_json(
        "scheduling",
        {"unit_s": args.unit, "repeats": args.repeats, "target": args.target, "rows": rows},
        args.out_dir,
    )
    plot(rows, args.out_dir, args.target)


if __name__ == "__main__":
    main()

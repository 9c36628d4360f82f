"""Overhead: the framework's own cost per sub-query, against a plain asyncio loop.

    .venv/bin/python benchmarks/overhead.py [--sizes 10,25,50,100,200] [--repeats 3]

Experts answer at once (zero latency), so what is left is the framework: validating and
routing the plan, starting one LangGraph task per sub-query, the pool, the checkpoint-free
state updates and the aggregator. The baseline runs the same DAG with the same expert model
in a plain asyncio loop (one `ainvoke` per sub-query, each started when its parents are done).
Two plan shapes: N independent sub-queries (fan-out) and a chain of N. Reported per
sub-query, with the best of `--repeats` runs; growth is linear if the per-sub-query cost stays
flat as N grows.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from _common import (
    RESULTS,
    SIMULATED_REGISTRY,
    SimulatedExpert,
    SimulatedProvider,
    print_table,
    pyplot,
    save_plot,
    write_json,
)
from langchain_core.messages import HumanMessage

from compllm import CompLLM, Context, Plan, SubQuery


def make_plan(shape: str, n: int) -> Plan:
    return Plan.build(
        [
            SubQuery(
                id=f"q{i}",
                question=f"Do q{i}",
                depends_on=(f"q{i - 1}",) if shape == "chain" and i else (),
            )
            for i in range(n)
        ],
        max_subqueries=n,
    )


async def plain_asyncio(plan: Plan, expert: SimulatedExpert) -> None:
    """The baseline: each sub-query's coroutine awaits its parents, then calls the model."""
    done: dict[str, asyncio.Task[Any]] = {}

    async def run(sid: str) -> str:
        sub = plan.get(sid)
        parents = [await done[d] for d in sub.depends_on]
        message = await expert.ainvoke([HumanMessage(f"{parents}\n{sub.question}")])
        return message.text

    for sid in plan.topological_order():
        done[sid] = asyncio.create_task(run(sid))
    await asyncio.gather(*done.values())


def best_of(repeats: int, run: Any) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(sizes: list[int], repeats: int, parallel: int) -> list[dict[str, Any]]:
    expert = SimulatedExpert()
    pipeline = CompLLM(
        registry=SIMULATED_REGISTRY,
        provider=SimulatedProvider(expert),
        context=Context(
            aggregator_model="agg",
            embedding_model="const",
            max_subqueries=max(sizes),
            max_parallel_experts=parallel,
        ),
    )
    pipeline.invoke("warm-up", plan=make_plan("fan-out", 4))
    rows = []
    for shape in ("fan-out", "chain"):
        for n in sizes:
            plan = make_plan(shape, n)
            sync = best_of(repeats, lambda plan=plan: pipeline.invoke("q", plan=plan))
            async_ = best_of(
                repeats, lambda plan=plan: asyncio.run(pipeline.ainvoke("q", plan=plan))
            )
            baseline = best_of(repeats, lambda plan=plan: asyncio.run(plain_asyncio(plan, expert)))
            rows.append(
                {
                    "shape": shape,
                    "parallel": parallel,
                    "subqueries": n,
                    "compllm_sync_ms_per_subquery": 1000 * sync / n,
                    "compllm_async_ms_per_subquery": 1000 * async_ / n,
                    "plain_asyncio_ms_per_subquery": 1000 * baseline / n,
                    "overhead_sync_ms_per_subquery": 1000 * (sync - baseline) / n,
                    "overhead_async_ms_per_subquery": 1000 * (async_ - baseline) / n,
                }
            )
            print(f"  {shape} n={n} slots={parallel}: sync {1000 * sync / n:.2f} ms/sub-query")
    return rows


def plot(rows: list[dict[str, Any]], out_dir: Path) -> None:
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for axis, mode in zip(axes, ("sync", "async"), strict=True):
        for shape in ("fan-out", "chain"):
            for parallel in sorted({r["parallel"] for r in rows}):
                mine = [r for r in rows if r["shape"] == shape and r["parallel"] == parallel]
                axis.plot(
                    [r["subqueries"] for r in mine],
                    [r[f"overhead_{mode}_ms_per_subquery"] for r in mine],
                    "-" if shape == "fan-out" else "--",
                    marker="o",
                    label=f"{shape}, {parallel} slots",
                )
        axis.axhline(2.0, color="black", linewidth=1, linestyle=":", label="target 2 ms")
        axis.set_title(f"{mode} runs")
        axis.set_xlabel("sub-queries in the plan")
        axis.set_ylim(bottom=0)
    axes[0].set_ylabel("overhead per sub-query (ms)")
    axes[1].legend()
    save_plot(figure, "overhead", out_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,25,50,100,200")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--parallel", default="4,64", help="max_parallel_experts values (4 is the default)"
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = [
        row
        for parallel in (int(p) for p in args.parallel.split(","))
        for row in measure(sizes, args.repeats, parallel)
    ]
    print()
    print_table(
        rows,
        [
            ("shape", "shape", "<8"),
            ("slots", "parallel", ">5"),
            ("n", "subqueries", ">4"),
            ("sync ms", "compllm_sync_ms_per_subquery", ".2f"),
            ("async ms", "compllm_async_ms_per_subquery", ".2f"),
            ("asyncio ms", "plain_asyncio_ms_per_subquery", ".3f"),
            ("overhead sync", "overhead_sync_ms_per_subquery", ".2f"),
            ("overhead async", "overhead_async_ms_per_subquery", ".2f"),
        ],
    )
    write_json(
        "overhead",
        {"repeats": args.repeats, "rows": rows},
        args.out_dir,
    )
    plot(rows, args.out_dir)


if __name__ == "__main__":
    main()

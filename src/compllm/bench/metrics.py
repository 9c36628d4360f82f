"""Metrics over system runs: accuracy per part and per whole query, routing accuracy, plan
quality, latency percentiles, tokens and the parameters each system loaded."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

from compllm.bench.systems import SystemRun

__all__ = ["percentile", "summarize"]


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _share(hits: int, total: int) -> float | None:
    return hits / total if total else None


def summarize(
    runs: Sequence[SystemRun], parameters: Mapping[str, int | None] | None = None
) -> dict[str, dict[str, object]]:
    """Per system: the metrics of the module doc. `parameters` maps a model id to its
    parameter count, for the total each system loaded (chat models; the embedding model is
    counted apart)."""
    parameters = parameters or {}
    by_system: dict[str, list[SystemRun]] = defaultdict(list)
    for run in runs:
        by_system[run.system].append(run)
    summary: dict[str, dict[str, object]] = {}
    for system, mine in by_system.items():
        parts = [p for run in mine for p in run.parts]
        routed = [p for p in parts if p.routed_to is not None]
        by_domain: dict[str, list[bool]] = defaultdict(list)
        for part in parts:
            by_domain[part.domain].append(part.correct)
        by_kind: dict[str, list[bool]] = defaultdict(list)
        for run in mine:
            by_kind[run.item_kind].append(run.all_correct)
        models = sorted({m for run in mine for m in run.models})
        counts = [parameters.get(m) for m in models]
        latencies = [run.latency_s for run in mine]
        pipeline = system != "monolithic"
        summary[system] = {
            "items": len(mine),
            "parts": len(parts),
            "part_accuracy": _share(sum(p.correct for p in parts), len(parts)),
            "query_accuracy": _share(sum(run.all_correct for run in mine), len(mine)),
            "query_accuracy_by_kind": {
                kind: _share(sum(v), len(v)) for kind, v in sorted(by_kind.items())
            },
            "part_accuracy_by_domain": {
                domain: _share(sum(v), len(v)) for domain, v in sorted(by_domain.items())
            },
            "routing_accuracy": _share(sum(p.routed_to == p.domain for p in routed), len(routed))
            if pipeline
            else None,
            "plan_recall": _share(sum(r.parts_found for r in mine), len(parts))
            if pipeline
            else None,
            "mean_plan_size": sum(r.plan_size for r in mine) / len(mine),
            "latency_p50_s": percentile(latencies, 50),
            "latency_p95_s": percentile(latencies, 95),
            "mean_output_tokens": sum(r.output_tokens for r in mine) / len(mine),
            "models": models,
            "parameters": sum(c for c in counts if c) if all(counts) and counts else None,
            "errors": sum(r.error is not None for r in mine),
        }
    return summary

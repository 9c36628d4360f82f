"""Metrics over a suite's runs: accuracy rows (naive baselines, each system on its final
answer, on its per-part answers and by log-likelihood) with bootstrap intervals, pipeline
figures (strict plan recall, routing, parts located in the final answer, latency, tokens,
parameters), paired McNemar tests, and figures by wording style.

Every accuracy is over the same parts: all the suite's parts (or its multiple-choice or
arithmetic ones), a part that a system's run left unanswered or that failed counting as wrong.
The oracle system's plan recall and routing accuracy are 100% by construction (it is given
the gold plan and routes) and are labelled so.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from compllm.bench.naive import naive_baselines
from compllm.bench.stats import bootstrap_interval, mcnemar
from compllm.bench.suite import CompositeItem
from compllm.bench.systems import SYSTEMS, PartOutcome, SystemRun, is_chat_model_with_weights

__all__ = ["BY_CONSTRUCTION", "gold_expert", "percentile", "summarize"]

BY_CONSTRUCTION = "by construction"
CALCULATOR = "calculator"  # the built-in calculator expert's name in the shipped registry
_SCORED_ON = {
    "final answer": "what the user reads, cut into parts the same way for every system",
    "per-part answers": "the expert's answer to the one sub-query that asks the part",
    "log-likelihood": "the option most likely under the system's own prompt",
}
KINDS = {"all": None, "choice": "choice", "number": "number"}
PAIRS = (("comp-llm", "monolithic"), ("oracle-plan", "comp-llm"))


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class _Outcomes:
    """Each (mode, system)'s outcome of each (item, part); absent when not answered."""

    def __init__(self, runs: Sequence[SystemRun]) -> None:
        self.runs: dict[tuple[str, str], dict[str, SystemRun]] = defaultdict(dict)
        for run in runs:
            self.runs[(run.mode, run.system)][run.item_id] = run

    def get(self, mode: str, system: str, item: str, part: str) -> PartOutcome | None:
        run = self.runs.get((mode, system), {}).get(item)
        return next((p for p in run.parts if p.part_id == part), None) if run else None

    def scores(
        self,
        items: Sequence[CompositeItem],
        mode: str,
        system: str,
        field: str,
        kind: str | None,
    ) -> list[list[float]]:
        """Per item, 1.0/0.0 for each part (of `kind`) by `field` ("correct" or
        "final_correct") of the part's outcome; a missing outcome is 0."""
        return [
            [
                float(bool(getattr(self.get(mode, system, item.id, p.id), field, False)))
                for p in item.parts
                if kind is None or p.kind == kind
            ]
            for item in items
        ]


def summarize(
    runs: Sequence[SystemRun],
    items: Sequence[CompositeItem],
    parameters: Mapping[str, int | None] | None = None,
) -> dict[str, Any]:
    """Everything the report shows, as plain data (see the module doc). `parameters` maps a
    chat model id to its parameter count."""
    outcomes = _Outcomes(runs)
    present = _ordered(outcomes.runs)
    return {
        "parts": {
            "items": len(items),
            "all": sum(len(i.parts) for i in items),
            "choice": sum(p.kind == "choice" for i in items for p in i.parts),
            "number": sum(p.kind == "number" for i in items for p in i.parts),
        },
        "accuracy": _accuracy_rows(outcomes, items, present),
        "systems": {
            f"{mode}/{system}": _system_figures(
                list(outcomes.runs[(mode, system)].values()), items, system, parameters or {}
            )
            for mode, system in present
        },
        "paired": _paired(outcomes, items, present),
        "by_style": _by_style(outcomes, items, present),
    }


def _ordered(found: Mapping[tuple[str, str], object]) -> list[tuple[str, str]]:
    order: dict[str, int] = {s: i for i, s in enumerate(SYSTEMS)}
    return sorted(found, key=lambda key: (key[0] != "generate", order.get(key[1], 99)))


def _intervals(scores: Mapping[str, list[list[float]]]) -> dict[str, Any]:
    return {
        name: (interval.as_dict() if (interval := bootstrap_interval(per_item)) else None)
        for name, per_item in scores.items()
    }


def _accuracy_rows(
    outcomes: _Outcomes, items: Sequence[CompositeItem], present: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for baseline in naive_baselines(items):
        rows.append(
            {
                "row": baseline.name,
                "system": None,
                "scored_on": "expected score",
                "description": baseline.description,
                **_intervals({k: baseline.item_scores(items, kind) for k, kind in KINDS.items()}),
            }
        )
    for mode, system in present:
        fields = [("final answer", "final_correct")]
        if mode == "loglik":
            fields = [("log-likelihood", "correct")]
        elif system != "monolithic":  # its per-part answers are its final answer's sections
            fields.append(("per-part answers", "correct"))
        for label, field in fields:
            scored_on = _SCORED_ON[label]
            kinds = {"choice": "choice"} if mode == "loglik" else KINDS
            rows.append(
                {
                    "row": f"{system} · {label}",
                    "system": system,
                    "mode": mode,
                    "scored_on": label,
                    "description": scored_on,
                    **_intervals(
                        {
                            k: outcomes.scores(items, mode, system, field, kind)
                            for k, kind in kinds.items()
                        }
                    ),
                }
            )
    return rows


def _system_figures(
    mine: list[SystemRun],
    items: Sequence[CompositeItem],
    system: str,
    parameters: Mapping[str, int | None],
) -> dict[str, Any]:
    by_item = {run.item_id: run for run in mine}
    ran = [i for i in items if i.id in by_item]
    parts = [p for run in mine for p in run.parts]
    pipeline = system != "monolithic"
    oracle = system == "oracle-plan"
    routed = [p for p in parts if p.routed_to is not None]
    models = sorted({m for run in mine for m in run.models})
    # Tools (a calculator) and remote endpoints have no local weights to count, and a
    # learned planner is no chat model (an encoder, like the router's).
    counts = [parameters.get(m) for m in models if is_chat_model_with_weights(m)]
    latencies = [run.latency_s for run in mine if run.error is None]
    scored_parts = sum(len(run.parts) for run in mine if run.error is None)
    figures: dict[str, Any] = {
        "items": len(mine),
        "errors": sum(run.error is not None for run in mine),
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
        "seconds_per_part": sum(latencies) / scored_parts if scored_parts else None,
        "models": models,
        "parameters": sum(c for c in counts if c) if counts and all(counts) else None,
    }
    if mine and mine[0].mode == "loglik":
        return figures
    figures["mean_output_tokens"] = sum(r.output_tokens for r in mine) / len(mine) if mine else 0
    figures["query_accuracy"] = _intervals(
        {"all": [[float(by_item[i.id].all_correct)] for i in ran]}
    )["all"]
    located = [p.located != "none" for p in parts]
    figures["final_parts_located"] = sum(located) / len(located) if located else None
    figures["located_how"] = dict(Counter(p.located for p in parts))
    if pipeline:
        figures["plan_recall"] = (
            BY_CONSTRUCTION
            if oracle
            else _intervals({"all": [_found(by_item[i.id], len(i.parts)) for i in ran]})["all"]
        )
        routing = {
            kind: [
                [
                    float(p.routed_to == gold_expert(p, by_item[i.id]))
                    for p in by_item[i.id].parts
                    if p.routed_to and kind in ("all", p.kind)
                ]
                for i in ran
            ]
            for kind in ("all", "choice", "number")
        }
        intervals = _intervals(routing)
        figures["routing_accuracy"] = BY_CONSTRUCTION if oracle else intervals["all"]
        # Arithmetic apart: its gold expert is the calculator when the registry has one.
        figures["routing_accuracy_by_kind"] = (
            BY_CONSTRUCTION
            if oracle
            else {"choice": intervals["choice"], "number": intervals["number"]}
        )
        figures["routed_parts"] = len(routed)
        figures["mean_plan_size"] = sum(r.plan_size for r in mine) / len(mine) if mine else 0
        figures["aggregation"] = dict(Counter(r.aggregation for r in mine if r.aggregation))
    return figures


def gold_expert(part: PartOutcome, run: SystemRun) -> str:
    """The expert that should answer `part`: its domain, except that arithmetic goes to the
    calculator when the registry the run used has one (its routes score every expert)."""
    plan = run.plan
    if part.kind == "number" and plan is not None:
        names = {name for sub in plan.subqueries for name in (*sub.scores, sub.expert)}
        if CALCULATOR in names:
            return CALCULATOR
    return part.domain


def _found(run: SystemRun, parts: int) -> list[float]:
    return [1.0] * run.parts_found + [0.0] * (parts - run.parts_found)


def _paired(
    outcomes: _Outcomes, items: Sequence[CompositeItem], present: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """McNemar tests on the same parts: final answers, per-part answers (the monolithic
    system's are its final answer's sections) and log-likelihood, each against the same."""
    tests = []
    for first, second in PAIRS:
        per_part = "per-part answers" + (
            " (monolithic: final)" if "monolithic" in (first, second) else ""
        )
        comparisons = [
            ("generate", "final_correct", "final answers", None),
            ("generate", "correct", per_part, None),
            ("loglik", "correct", "log-likelihood", "choice"),
        ]
        for mode, field, label, kind in comparisons:
            if (mode, first) not in present or (mode, second) not in present:
                continue
            a = [s for row in outcomes.scores(items, mode, first, field, kind) for s in row]
            b = [s for row in outcomes.scores(items, mode, second, field, kind) for s in row]
            test = mcnemar([bool(x) for x in a], [bool(y) for y in b])
            tests.append({"first": first, "second": second, "compared": label, **test.as_dict()})
    return tests


def _by_style(
    outcomes: _Outcomes, items: Sequence[CompositeItem], present: list[tuple[str, str]]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per generate-mode system and wording style: parts, final-answer accuracy, and (for
    comp-llm, whose planner reads the wording) strict plan recall."""
    styles = sorted({i.style for i in items})
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for mode, system in present:
        if mode != "generate":
            continue
        rows: dict[str, dict[str, Any]] = {}
        for style in styles:
            mine = [i for i in items if i.style == style]
            scores = [
                s for row in outcomes.scores(mine, mode, system, "final_correct", None) for s in row
            ]
            row: dict[str, Any] = {
                "parts": len(scores),
                "final_accuracy": sum(scores) / len(scores) if scores else None,
            }
            if system == "comp-llm":
                runs = outcomes.runs[(mode, system)]
                found = [_found(runs[i.id], len(i.parts)) for i in mine if i.id in runs]
                flat = [f for row_ in found for f in row_]
                row["plan_recall"] = sum(flat) / len(flat) if flat else None
            rows[style] = row
        table[system] = rows
    return table

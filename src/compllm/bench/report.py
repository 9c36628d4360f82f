"""Reports: `results.json`, a Markdown table and plots (accuracy by system and domain,
latency distribution, accuracy against total parameters)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from compllm.bench.systems import SYSTEMS, SystemRun

__all__ = ["markdown_table", "write_report"]


def _percent(value: object) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}%"  # type: ignore[arg-type]


def _seconds(value: object) -> str:
    number = float(value)  # type: ignore[arg-type]
    return "–" if math.isnan(number) else f"{number:.1f}"


def _params(value: object) -> str:
    return "–" if not value else f"{int(value) / 1e6:.0f}M"  # type: ignore[call-overload]


def markdown_table(summary: Mapping[str, Mapping[str, Any]]) -> str:
    header = (
        "| system | items | part acc. | query acc. | routing acc. | plan recall "
        "| p50 s | p95 s | tokens/item | chat-model params |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for system in [s for s in SYSTEMS if s in summary]:
        row = summary[system]
        rows.append(
            f"| {system} | {row['items']} | {_percent(row['part_accuracy'])} "
            f"| {_percent(row['query_accuracy'])} | {_percent(row['routing_accuracy'])} "
            f"| {_percent(row['plan_recall'])} | {_seconds(row['latency_p50_s'])} "
            f"| {_seconds(row['latency_p95_s'])} | {row['mean_output_tokens']:.0f} "
            f"| {_params(row['parameters'])} |"
        )
    return header + "\n".join(rows) + "\n"


def write_report(
    folder: Path,
    summary: Mapping[str, Mapping[str, Any]],
    runs: Sequence[SystemRun],
    meta: Mapping[str, Any],
    *,
    plots: bool = True,
) -> list[Path]:
    """Write results.json, results.md and (with matplotlib) the plots; returns the paths."""
    written = [folder / "results.json", folder / "results.md"]
    written[0].write_text(
        json.dumps({"meta": dict(meta), "systems": summary}, indent=2, default=str) + "\n",
        encoding="utf-8",
    )
    speedup = _speedup(runs)
    notes = [f"- {key}: {value}" for key, value in meta.items()]
    if speedup is not None:
        notes.append(
            f"- sequential / comp-llm latency (same plans, mean of ratios): {speedup:.2f}x"
        )
    written[1].write_text(markdown_table(summary) + "\n" + "\n".join(notes) + "\n", "utf-8")
    if plots:
        written += _plots(folder, summary, runs)
    return written


def _speedup(runs: Sequence[SystemRun]) -> float | None:
    comp = {r.item_id: r.latency_s for r in runs if r.system == "comp-llm" and not r.error}
    ratios = [
        r.latency_s / comp[r.item_id]
        for r in runs
        if r.system == "sequential" and not r.error and comp.get(r.item_id)
    ]
    return sum(ratios) / len(ratios) if ratios else None


def _plots(
    folder: Path, summary: Mapping[str, Mapping[str, Any]], runs: Sequence[SystemRun]
) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional (the `bench` extra)
        return []
    systems = [s for s in SYSTEMS if s in summary]
    domains = sorted({d for s in systems for d in summary[s]["part_accuracy_by_domain"]})
    paths = []

    figure, axes = plt.subplots(figsize=(max(6, 1.2 * len(domains)), 4))
    width = 0.8 / max(len(systems), 1)
    for index, system in enumerate(systems):
        values = [summary[system]["part_accuracy_by_domain"].get(d) or 0 for d in domains]
        axes.bar([i + index * width for i in range(len(domains))], values, width, label=system)
    axes.set_xticks([i + 0.4 - width / 2 for i in range(len(domains))], domains, rotation=30)
    axes.set_ylabel("part accuracy")
    axes.set_ylim(0, 1)
    axes.legend()
    axes.set_title("Accuracy by system and domain")
    paths.append(_save(figure, folder / "accuracy_by_domain.png"))

    figure, axes = plt.subplots(figsize=(6, 4))
    latencies = [[r.latency_s for r in runs if r.system == s] for s in systems]
    axes.boxplot(latencies, tick_labels=systems)
    axes.set_ylabel("latency per item (s)")
    axes.set_title("Latency distribution")
    paths.append(_save(figure, folder / "latency.png"))

    figure, axes = plt.subplots(figsize=(6, 4))
    for system in systems:
        row = summary[system]
        if row["parameters"] and row["part_accuracy"] is not None:
            axes.scatter(row["parameters"] / 1e6, row["part_accuracy"], label=system)
    axes.set_xlabel("chat-model parameters loaded (millions)")
    axes.set_ylabel("part accuracy")
    if axes.collections:
        axes.legend()
    else:
        axes.text(0.5, 0.5, "parameter counts unknown", ha="center", transform=axes.transAxes)
    axes.set_title("Accuracy vs total parameters")
    paths.append(_save(figure, folder / "accuracy_vs_parameters.png"))
    return paths


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return path

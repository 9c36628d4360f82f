"""Reports: `results.json`, Markdown tables (accuracy against naive baselines with intervals,
pipeline figures, paired tests, wording styles) and plots (accuracy with intervals, accuracy
by domain, latency, accuracy against total parameters)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from compllm.bench.metrics import BY_CONSTRUCTION
from compllm.bench.systems import SystemRun

__all__ = ["markdown_report", "write_report"]


def _percent(value: object) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}%"  # type: ignore[arg-type]


def _interval(value: object) -> str:
    """ "12.3% (8.1–16.9)", "by construction" or "–"."""
    if value == BY_CONSTRUCTION:
        return f"100% ({BY_CONSTRUCTION})"
    if not isinstance(value, Mapping):
        return "–"
    low, high = 100 * value["low"], 100 * value["high"]
    return f"{100 * value['value']:.1f}% ({low:.1f}–{high:.1f})"


def _seconds(value: object) -> str:
    if value is None:
        return "–"
    number = float(value)  # type: ignore[arg-type]
    return "–" if math.isnan(number) else f"{number:.1f}"


def _params(value: object) -> str:
    return "–" if not value else f"{int(value) / 1e6:.0f}M"  # type: ignore[call-overload]


def markdown_report(summary: Mapping[str, Any]) -> str:
    parts = summary["parts"]
    lines = [
        f"Accuracy on {parts['items']} items, {parts['all']} parts ({parts['choice']} multiple "
        f"choice, {parts['number']} arithmetic): share of parts answered right, with 95% "
        "bootstrap intervals over items. Every row is over the same parts; an unanswered "
        "part is wrong.",
        "",
        "| row | all parts | multiple choice | arithmetic | scored on |",
        "|---|---:|---:|---:|---|",
    ]
    for row in summary["accuracy"]:
        what = row.get("description") or row["scored_on"]
        lines.append(
            f"| {row['row']} | {_interval(row.get('all'))} | {_interval(row.get('choice'))} "
            f"| {_interval(row.get('number'))} | {what} |"
        )
    lines += [
        "",
        "| system | mode | items | errors | plan recall (strict) | routing acc. "
        "| parts located in final answer | query acc. | mean plan size | p50 s | p95 s "
        "| s/part | tokens/item | chat-model params |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, row in summary["systems"].items():
        mode, system = key.split("/", 1)
        plan_size = row.get("mean_plan_size")
        tokens = row.get("mean_output_tokens")
        lines.append(
            f"| {system} | {mode} | {row['items']} | {row['errors']} "
            f"| {_interval(row.get('plan_recall'))} | {_interval(row.get('routing_accuracy'))} "
            f"| {_percent(row.get('final_parts_located'))} "
            f"| {_interval(row.get('query_accuracy'))} "
            f"| {'–' if plan_size is None else f'{plan_size:.1f}'} "
            f"| {_seconds(row['latency_p50_s'])} | {_seconds(row['latency_p95_s'])} "
            f"| {_seconds(row['seconds_per_part'])} "
            f"| {'–' if tokens is None else f'{tokens:.0f}'} | {_params(row['parameters'])} |"
        )
    if summary["paired"]:
        lines += [
            "",
            "Paired McNemar tests on the same parts (only the parts one system got right and "
            "the other wrong count):",
            "",
            "| first | second | compared | parts | both right | only first | only second "
            "| neither | p | test |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for test in summary["paired"]:
            lines.append(
                f"| {test['first']} | {test['second']} | {test['compared']} | {test['n']} "
                f"| {test['both']} | {test['only_first']} | {test['only_second']} "
                f"| {test['neither']} | {test['p_value']:.3g} | {test['test']} |"
            )
    styles = summary["by_style"]
    if "comp-llm" in styles:
        others = [s for s in styles if s != "comp-llm"]
        lines += [
            "",
            "By wording style: comp-llm's strict plan recall and every system's final-answer "
            "accuracy.",
            "",
            "| style | parts | comp-llm plan recall | "
            + " | ".join(f"{s} final acc." for s in ["comp-llm", *others])
            + " |",
            "|---|---:|---:|" + "---:|" * (1 + len(others)),
        ]
        for style, row in styles["comp-llm"].items():
            finals = [_percent(styles[s][style]["final_accuracy"]) for s in ["comp-llm", *others]]
            lines.append(
                f"| {style} | {row['parts']} | {_percent(row.get('plan_recall'))} | "
                + " | ".join(finals)
                + " |"
            )
    return "\n".join(lines) + "\n"


def write_report(
    folder: Path,
    summary: Mapping[str, Any],
    runs: Sequence[SystemRun],
    meta: Mapping[str, Any],
    *,
    plots: bool = True,
) -> list[Path]:
    """Write results.json, results.md and (with matplotlib) the plots; returns the paths."""
    written = [folder / "results.json", folder / "results.md"]
    speedup = _speedup(runs)
    extra = {"sequential_over_comp_llm_latency": speedup} if speedup is not None else {}
    written[0].write_text(
        json.dumps({"meta": dict(meta), **summary, **extra}, indent=2, default=str) + "\n",
        encoding="utf-8",
    )
    notes = [f"- {key}: {value}" for key, value in meta.items()]
    if speedup is not None:
        notes.append(
            f"- sequential / comp-llm latency (same plans, mean of ratios): {speedup:.2f}x"
        )
    written[1].write_text(markdown_report(summary) + "\n" + "\n".join(notes) + "\n", "utf-8")
    if plots:
        written += _plots(folder, summary, runs)
    return written


def _speedup(runs: Sequence[SystemRun]) -> float | None:
    generated = [r for r in runs if r.mode == "generate" and not r.error]
    comp = {r.item_id: r.latency_s for r in generated if r.system == "comp-llm"}
    ratios = [
        r.latency_s / comp[r.item_id]
        for r in generated
        if r.system == "sequential" and comp.get(r.item_id)
    ]
    return sum(ratios) / len(ratios) if ratios else None


def _plots(folder: Path, summary: Mapping[str, Any], runs: Sequence[SystemRun]) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional (the `bench` extra)
        return []
    paths = []

    rows = [r for r in summary["accuracy"] if isinstance(r.get("choice"), Mapping)]
    figure, axes = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    for index, row in enumerate(rows):
        value = row["choice"]
        colour = "tab:gray" if row["system"] is None else "tab:blue"
        axes.errorbar(
            100 * value["value"],
            index,
            xerr=[
                [100 * (value["value"] - value["low"])],
                [100 * (value["high"] - value["value"])],
            ],
            fmt="o",
            color=colour,
            capsize=3,
        )
    axes.set_yticks(range(len(rows)), [r["row"] for r in rows])
    axes.invert_yaxis()
    axes.set_xlabel("multiple-choice accuracy (%), 95% bootstrap interval")
    axes.set_title("Accuracy against naive baselines (gray)")
    paths.append(_save(figure, folder / "accuracy.png"))

    generated = [r for r in runs if r.mode == "generate" and not r.error]
    systems = list(dict.fromkeys(r.system for r in generated))
    domains = sorted({p.domain for r in generated for p in r.parts})
    figure, axes = plt.subplots(figsize=(max(6, 1.2 * len(domains)), 4))
    width = 0.8 / max(len(systems), 1)
    for index, system in enumerate(systems):
        values = []
        for domain in domains:
            mine = [
                p for r in generated if r.system == system for p in r.parts if p.domain == domain
            ]
            values.append(sum(bool(p.final_correct) for p in mine) / len(mine) if mine else 0)
        axes.bar([i + index * width for i in range(len(domains))], values, width, label=system)
    axes.set_xticks([i + 0.4 - width / 2 for i in range(len(domains))], domains, rotation=30)
    axes.set_ylabel("final-answer accuracy")
    axes.set_ylim(0, 1)
    if systems:
        axes.legend()
    axes.set_title("Final-answer accuracy by system and domain")
    paths.append(_save(figure, folder / "accuracy_by_domain.png"))

    figure, axes = plt.subplots(figsize=(6, 4))
    if systems:
        axes.boxplot(
            [[r.latency_s for r in generated if r.system == s] for s in systems],
            tick_labels=systems,
        )
    axes.set_ylabel("latency per item (s)")
    axes.set_title("Latency distribution (generation)")
    paths.append(_save(figure, folder / "latency.png"))

    figure, axes = plt.subplots(figsize=(6, 4))
    finals = {
        r["system"]: r["all"]
        for r in summary["accuracy"]
        if r.get("mode") == "generate" and r["scored_on"] == "final answer" and r.get("all")
    }
    for system, accuracy in finals.items():
        parameters = summary["systems"].get(f"generate/{system}", {}).get("parameters")
        if parameters:
            axes.scatter(parameters / 1e6, 100 * accuracy["value"], label=system)
    axes.set_xlabel("chat-model parameters loaded (millions)")
    axes.set_ylabel("final-answer accuracy, all parts (%)")
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

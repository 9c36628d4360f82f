"""Pictures of a run, drawn offline: the plan as a graph (Mermaid text, PNG, SVG) and the
execution timeline (a Gantt chart with one lane per expert and the critical path marked).

Mermaid needs nothing; the PNG/SVG figures need matplotlib (`pip install "comp-llm[viz]"`).
Figures are built without pyplot, so drawing never changes a notebook's or an app's backend.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compllm.errors import ConfigError
from compllm.plan import Plan

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from compllm.api import CompLLMResult
    from compllm.state import SubAnswer

__all__ = [
    "expert_colours",
    "plan_figure",
    "plan_mermaid",
    "require_matplotlib",
    "timeline_figure",
    "write_trace",
]

# Colour-blind-safe (Okabe-Ito), then matplotlib's tab10 for larger registries.
_PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#999999",
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
)


def expert_colours(plan: Plan) -> dict[str, str]:
    """One colour per expert, in registry order when the plan is routed (scores list every
    expert), so an expert keeps its colour across the plan and the timeline."""
    names: list[str] = []
    for sub in plan.subqueries:
        for name in [*sub.scores, sub.expert or "unrouted"]:
            if name not in names:
                names.append(name)
    return {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(names)}


def plan_mermaid(plan: Plan, *, width: int = 48) -> str:
    """The plan as a Mermaid flowchart: a node per sub-query (id, expert, question), an edge
    per dependency, a colour per expert."""
    colours = expert_colours(plan)
    used = {sub.expert or "unrouted" for sub in plan.subqueries}
    classes = {name: f"e{i}" for i, name in enumerate(colours)}
    lines = ["flowchart TD"]
    for sub in plan.subqueries:
        expert = sub.expert or "unrouted"
        score = sub.scores.get(expert)
        heading = f"{sub.id} · {expert}" + (f" {score:.2f}" if score is not None else "")
        question = "<br/>".join(textwrap.wrap(_mermaid_text(sub.question), width)) or " "
        lines.append(f'    {_mermaid_id(sub.id)}["<b>{_mermaid_text(heading)}</b><br/>{question}"]')
    for sub in plan.subqueries:
        for parent in sub.depends_on:
            lines.append(f"    {_mermaid_id(parent)} --> {_mermaid_id(sub.id)}")
    for name, colour in colours.items():
        if name in used:
            lines.append(f"    classDef {classes[name]} fill:{colour},color:#fff,stroke:#333")
    for sub in plan.subqueries:
        lines.append(f"    class {_mermaid_id(sub.id)} {classes[sub.expert or 'unrouted']}")
    return "\n".join(lines) + "\n"


def _mermaid_id(sid: str) -> str:
    # Ids are free text in a user's plan; Mermaid ids must be plain words.
    return "n_" + "".join(c if c.isalnum() else f"_{ord(c):x}_" for c in sid)


def _mermaid_text(text: str) -> str:
    return (
        text.replace("&", "#amp;")
        .replace('"', "#quot;")
        .replace("<", "#lt;")
        .replace(">", "#gt;")
        .replace("\n", " ")
    )


def require_matplotlib() -> None:
    """Raise `ConfigError` (with the install command) when the figures cannot be drawn."""
    _figure_class()


def _figure_class() -> type[Figure]:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError('pictures need matplotlib: pip install "comp-llm[viz]"') from None
    return Figure


def plan_figure(plan: Plan, *, title: str | None = None) -> Figure:
    """The plan drawn as a layered graph: one row per dependency level, a box per sub-query
    coloured by expert, an arrow per dependency."""
    figure_class = _figure_class()
    levels = plan.levels()
    widest = max(len(level) for level in levels)
    figure = figure_class(figsize=(max(6.0, 3.2 * widest), 0.8 + 1.2 * len(levels)))
    axes = figure.add_subplot()
    axes.set_axis_off()
    axes.set_xlim(0, widest)
    axes.set_ylim(-len(levels) + 0.5, 0.5)
    colours = expert_colours(plan)
    boxes: dict[str, Any] = {}
    for depth, level in enumerate(levels):
        offset = (widest - len(level)) / 2
        for column, sid in enumerate(level):
            sub = plan.get(sid)
            expert = sub.expert or "unrouted"
            score = sub.scores.get(expert)
            label = f"{sub.id} · {expert}" + (f" ({score:.2f})" if score is not None else "")
            question = "\n".join(textwrap.wrap(sub.question, 34)[:3])
            boxes[sid] = axes.text(
                offset + column + 0.5,
                -float(depth),
                f"{label}\n{question}",
                ha="center",
                va="center",
                fontsize=8,
                color="white",
                bbox={
                    "boxstyle": "round,pad=0.5",
                    "facecolor": colours[expert],
                    "edgecolor": "#333",
                },
            )
    for sub in plan.subqueries:
        for parent in sub.depends_on:
            # Anchored to the boxes themselves, so arrows meet them whatever their size.
            axes.annotate(
                "",
                xy=(0.5, 1.0),
                xycoords=boxes[sub.id],
                xytext=(0.5, 0.0),
                textcoords=boxes[parent],
                arrowprops={
                    "arrowstyle": "-|>",
                    "color": "#444",
                    "lw": 1.4,
                    "shrinkA": 6,
                    "shrinkB": 6,
                },
            )
    axes.set_title(title or f"Plan: {len(plan)} sub-queries, {len(levels)} levels", fontsize=10)
    return figure


def timeline_figure(result: CompLLMResult) -> Figure:
    """The run as a Gantt chart: one lane per expert, one bar per sub-query from its start to
    its end (seconds since the first call started), the critical path outlined in red."""
    figure_class = _figure_class()
    timed = [a for a in result.answers if a.started_at is not None and a.finished_at is not None]
    rows = _lanes(sorted(timed, key=lambda a: a.started_at or 0.0))
    figure = figure_class(figsize=(9.0, 1.4 + 0.5 * max(1, len(set(rows.values())))))
    axes = figure.add_subplot()
    if not timed:
        axes.set_axis_off()
        axes.set_title("No sub-query ran")
        return figure
    origin = min(a.started_at or 0.0 for a in timed)
    critical = set(_critical_path(result))
    colours = expert_colours(result.plan)
    for answer in timed:
        start = (answer.started_at or 0.0) - origin
        length = max((answer.finished_at or 0.0) - (answer.started_at or 0.0), 1e-3)
        on_path = answer.id in critical
        ok = answer.status == "ok"
        axes.barh(
            rows[answer.id],
            length,
            left=start,
            height=0.6,
            color=colours.get(answer.expert, "#999999") if ok else "#bbbbbb",
            hatch=None if ok else "//",
            edgecolor="#d62728" if on_path else "#333333",
            linewidth=2.5 if on_path else 0.8,
        )
        axes.text(
            start + length / 2,
            rows[answer.id],
            answer.id if ok else f"{answer.id} ({answer.status})",
            ha="center",
            va="center",
            fontsize=8,
            color="white" if ok else "black",
        )
    labels = _lane_labels(timed, rows)
    axes.set_yticks(range(len(labels)), labels)
    axes.invert_yaxis()
    axes.set_xlabel("seconds since the first expert call started")
    stages = ", ".join(
        f"{k} {v:.1f} s" for k, v in result.timings.items() if k in ("plan", "route", "aggregate")
    )
    axes.set_title(
        f"Execution timeline (critical path in red: {' → '.join(_critical_path(result))})"
        + (f"\n{stages}" if stages else ""),
        fontsize=9,
    )
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return figure


def _lanes(answers: list[SubAnswer]) -> dict[str, int]:
    """A row per expert, and more rows for an expert whose calls overlap (batched or
    concurrent calls), so no bar hides another."""
    rows: list[tuple[str, float]] = []  # (expert, end of its last bar) per row
    placed: dict[str, int] = {}
    for answer in answers:
        start, end = answer.started_at or 0.0, answer.finished_at or 0.0
        free = [i for i, (e, last) in enumerate(rows) if e == answer.expert and last <= start]
        if free:
            placed[answer.id] = free[0]
            rows[free[0]] = (answer.expert, end)
        else:
            rows.append((answer.expert, end))
            placed[answer.id] = len(rows) - 1
    # Keep an expert's rows together, in order of first use.
    experts = list(dict.fromkeys(e for e, _ in rows))
    order = sorted(range(len(rows)), key=lambda i: (experts.index(rows[i][0]), i))
    return {sid: order.index(row) for sid, row in placed.items()}


def _lane_labels(answers: list[SubAnswer], rows: dict[str, int]) -> list[str]:
    expert_of = {rows[a.id]: a.expert for a in answers}
    labels: list[str] = []
    for row in range(len(expert_of)):
        expert = expert_of[row]
        count = sum(1 for label in labels if label.split(" #")[0] == expert)
        labels.append(expert if count == 0 else f"{expert} #{count + 1}")
    return labels


def _critical_path(result: CompLLMResult) -> list[str]:
    """The chain of dependent sub-queries that took longest, by measured latency."""
    durations = {a.id: a.latency_s or 0.0 for a in result.answers}
    return [sid for sid in result.plan.critical_path(durations) if sid in durations]


def write_trace(result: CompLLMResult, directory: str | Path) -> list[Path]:
    """Write `result.json`, `plan.mmd`, and (with matplotlib) `plan.png`/`.svg` and
    `timeline.png`/`.svg` into `directory`; returns the paths written."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    written = [target / "result.json", target / "plan.mmd"]
    written[0].write_text(result.model_dump_json(indent=2) + "\n")
    written[1].write_text(plan_mermaid(result.plan))
    figures: dict[str, Any] = {"plan": plan_figure(result.plan), "timeline": None}
    if result.answers:
        figures["timeline"] = timeline_figure(result)
    for name, figure in figures.items():
        if figure is None:
            continue
        for suffix in ("png", "svg"):
            path = target / f"{name}.{suffix}"
            figure.savefig(path, dpi=150, bbox_inches="tight")
            written.append(path)
    return written

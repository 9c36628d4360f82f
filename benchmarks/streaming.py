"""Streaming plan dispatch: experts start while the planner writes, against plan-then-execute.

    .venv/bin/python benchmarks/streaming.py [--unit 0.3] [--out-dir benchmarks/results]

The planner is simulated: an LLM that writes the plan's JSON at a fixed number of tokens per
second (4 characters a token) and records when each sub-query's object is complete. Experts
are simulated with fixed latencies (they sleep). Each plan shape runs at each planner speed
twice, side by side in one process: `stream_plan=True` (the default) and `stream_plan=False`
(plan, then execute). Times are from the start of the run.

- first written: when the planner finished writing the first sub-query;
- first expert: when the first expert call began (goal: <= first written + 50 ms);
- makespan: the last expert's end;
- target: 1.05 x (first written + the plan's critical path), the issue's goal;
- bound: the earliest any dispatcher can finish, given when each sub-query is written
  (a sub-query starts once it is written and its parents are answered). Where the planner
  writes the last sub-queries long after the first, this bound is above the target and no
  dispatcher can meet the target: the table says which.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    RESULTS,
    SIMULATED_REGISTRY,
    ConstantEmbeddings,
    SimulatedExpert,
    machine,
    print_table,
    pyplot,
    save_plot,
    write_json,
)
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr

from compllm import CompLLM, Context

Shape = dict[str, tuple[float, tuple[str, ...]]]  # id -> (latency in units, depends_on)
CHARS_PER_TOKEN = 4


def shapes() -> dict[str, Shape]:
    return {
        "fan-out-4": {f"q{i}": (1.0, ()) for i in range(1, 5)},
        "chain-4": {f"q{i}": (1.0, (f"q{i - 1}",) if i > 1 else ()) for i in range(1, 5)},
        "diamond": {
            "q1": (1.0, ()),
            "q2": (1.0, ("q1",)),
            "q3": (1.0, ("q1",)),
            "q4": (1.0, ("q2", "q3")),
        },
        "two-chains-6": {
            "q1": (1.0, ()),
            "q2": (1.0, ("q1",)),
            "q3": (1.0, ("q2",)),
            "q4": (2.0, ()),
            "q5": (0.5, ("q4",)),
            "q6": (1.0, ("q3", "q5")),
        },
    }


NAMES = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


def question(sid: str, latency_s: float) -> str:
    # Distinct words per sub-query: the planner's checks reject two that ask the same.
    return f"What does {NAMES[int(sid[1:]) - 1]} report [{latency_s:.4f} s]?"


class WritingPlanner(BaseChatModel):
    """Writes `plan` at `tokens_per_s`; records when each sub-query object is complete."""

    plan: str
    tokens_per_s: float
    _started: float = PrivateAttr(default=0.0)
    _written: list[float] = PrivateAttr(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "simulated-planner"

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        self._started, self._written = time.time(), []
        depth, in_string, escaped = 0, False, False
        for at in range(0, len(self.plan), CHARS_PER_TOKEN):
            piece = self.plan[at : at + CHARS_PER_TOKEN]
            # Each token takes its time, measured from the start (sleep errors do not add up).
            due = self._started + (at // CHARS_PER_TOKEN + 1) / self.tokens_per_s
            time.sleep(max(0.0, due - time.time()))
            for char in piece:  # a sub-query object closes when depth goes from 3 to 2
                if in_string:
                    escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
                elif char == '"':
                    in_string = True
                elif char in "{[":
                    depth += 1
                elif char in "}]":
                    depth -= 1
                    if char == "}" and depth == 2:
                        self._written.append(time.time())
            # Recorded before the piece is handed over: the reader dispatches while it reads.
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        text = "".join(c.text for c in self._stream(messages, stop, run_manager, **kwargs))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


@dataclass
class Provider:
    writer: WritingPlanner  # (not `planner`: a provider's `planner` loads learned planners)
    expert: BaseChatModel = field(default_factory=SimulatedExpert)

    def chat_model(self, ref: str, *, trust_remote_code: bool = False) -> BaseChatModel:
        if ref == "sim":
            return self.expert
        if ref == "planner":
            return self.writer
        return FakeListChatModel(responses=["aggregated"])

    def embeddings(self, ref: str) -> Embeddings:
        return ConstantEmbeddings()


def plan_text(shape: Shape, unit: float) -> str:
    return json.dumps(
        {
            "subqueries": [
                {"id": sid, "question": question(sid, lat * unit), "depends_on": list(deps)}
                for sid, (lat, deps) in shape.items()
            ]
        }
    )


def earliest_finish(shape: Shape, unit: float, written: dict[str, float]) -> float:
    """The bound: each sub-query starts when written and its parents are done."""
    finish: dict[str, float] = {}
    for sid, (lat, deps) in shape.items():  # listed parents first
        finish[sid] = max([written[sid], *(finish[d] for d in deps)]) + lat * unit
    return max(finish.values())


def critical_path(shape: Shape, unit: float) -> float:
    return earliest_finish(shape, unit, dict.fromkeys(shape, 0.0))


def run_once(shape: Shape, unit: float, tokens_per_s: float, stream: bool) -> dict[str, Any]:
    planner = WritingPlanner(plan=plan_text(shape, unit), tokens_per_s=tokens_per_s)
    app = CompLLM(
        registry=SIMULATED_REGISTRY,
        provider=Provider(planner),
        context=Context(
            planner_mode="llm",
            planner_model="planner",
            aggregator_model="agg",
            embedding_model="const",
            max_subqueries=64,
        ),
    )
    query = " ".join(question(sid, lat * unit) for sid, (lat, _) in shape.items())
    began = time.time()
    result = app.invoke(query, stream_plan=stream)
    assert result.planner_path == "llm", result.planner_attempts
    assert all(a.status == "ok" for a in result.answers), result.answers
    written = dict(zip(shape, (t - began for t in planner._written), strict=True))
    first_written = min(written.values())
    first_expert = min(a.started_at for a in result.answers if a.started_at) - began
    makespan = max(a.finished_at for a in result.answers if a.finished_at) - began
    target = 1.05 * (first_written + critical_path(shape, unit))
    return {
        "first_written_s": first_written,
        "plan_written_s": max(written.values()),
        "first_expert_s": first_expert,
        "makespan_s": makespan,
        "target_s": target,
        "bound_s": earliest_finish(shape, unit, written),
    }


def measure(unit: float, speeds: list[float]) -> list[dict[str, Any]]:
    rows = []
    for name, shape in shapes().items():
        for speed in speeds:
            streamed = run_once(shape, unit, speed, stream=True)
            whole = run_once(shape, unit, speed, stream=False)
            row = {
                "shape": name,
                "tokens_per_s": speed,
                "subqueries": len(shape),
                "critical_path_s": critical_path(shape, unit),
                **{f"stream_{k}": v for k, v in streamed.items()},
                "whole_first_expert_s": whole["first_expert_s"],
                "whole_makespan_s": whole["makespan_s"],
            }
            row["dispatch_delay_ms"] = 1000 * (
                streamed["first_expert_s"] - streamed["first_written_s"]
            )
            row["first_expert_ok"] = row["dispatch_delay_ms"] <= 50
            row["makespan_over_target"] = streamed["makespan_s"] / streamed["target_s"]
            row["makespan_over_bound"] = streamed["makespan_s"] / streamed["bound_s"]
            row["target_reachable"] = streamed["bound_s"] <= streamed["target_s"]
            row["speedup"] = whole["makespan_s"] / streamed["makespan_s"]
            rows.append(row)
            print(
                f"  {name} @ {speed:g} tok/s: first expert +{row['dispatch_delay_ms']:.0f} ms "
                f"after first written; makespan {streamed['makespan_s']:.2f} s streamed, "
                f"{whole['makespan_s']:.2f} s plan-then-execute"
            )
    return rows


def plot(rows: list[dict[str, Any]], out_dir: Path) -> None:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(10, 4.2))
    labels = [f"{r['shape']}\n{r['tokens_per_s']:g} tok/s" for r in rows]
    x = range(len(rows))
    axis.bar([i - 0.3 for i in x], [r["whole_makespan_s"] for r in rows], 0.2, label="whole plan")
    axis.bar([i - 0.1 for i in x], [r["stream_makespan_s"] for r in rows], 0.2, label="streamed")
    axis.bar([i + 0.1 for i in x], [r["stream_bound_s"] for r in rows], 0.2, label="bound")
    axis.bar([i + 0.3 for i in x], [r["stream_target_s"] for r in rows], 0.2, label="target")
    axis.set_xticks(list(x), labels, rotation=45, ha="right", fontsize=7)
    axis.set_ylabel("seconds from the run's start to the last expert's end")
    axis.legend()
    save_plot(figure, "streaming", out_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unit", type=float, default=0.3, help="seconds in one latency unit")
    parser.add_argument("--speeds", type=float, nargs="+", default=[20.0, 60.0, 200.0])
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = measure(args.unit, args.speeds)
    print()
    print_table(
        rows,
        [
            ("shape", "shape", "<13"),
            ("tok/s", "tokens_per_s", ">5g"),
            ("1st written", "stream_first_written_s", ".2f"),
            ("1st expert", "stream_first_expert_s", ".2f"),
            ("delay ms", "dispatch_delay_ms", ".0f"),
            ("plan done", "stream_plan_written_s", ".2f"),
            ("streamed", "stream_makespan_s", ".2f"),
            ("whole", "whole_makespan_s", ".2f"),
            ("bound", "stream_bound_s", ".2f"),
            ("target", "stream_target_s", ".2f"),
            ("/bound", "makespan_over_bound", ".3f"),
            ("speedup", "speedup", ".2f"),
        ],
    )
    worst_delay = max(r["dispatch_delay_ms"] for r in rows)
    worst_bound = max(r["makespan_over_bound"] for r in rows)
    reachable = [r for r in rows if r["target_reachable"]]
    met = sum(r["stream_makespan_s"] <= r["stream_target_s"] for r in reachable)
    print(f"\nworst first-expert delay after the first sub-query is written: {worst_delay:.0f} ms")
    print(f"worst makespan / bound: {worst_bound:.3f}")
    print(f"target met in {met} of the {len(reachable)} runs where any dispatcher could meet it")
    write_json(
        "streaming",
        {"unit_s": args.unit, "machine": machine(), "rows": rows},
        args.out_dir,
    )
    plot(rows, args.out_dir)


if __name__ == "__main__":
    main()

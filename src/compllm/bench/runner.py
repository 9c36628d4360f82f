"""Running systems over a suite: one JSON line per (system, item) appended as it finishes,
so an interrupted run resumes where it stopped without recomputing finished items."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from compllm.bench.suite import CompositeItem
from compllm.bench.systems import SystemName, SystemRun

__all__ = ["RUNS_FILE", "load_runs", "run_suite"]

RUNS_FILE = "runs.jsonl"

RunOne = Callable[[SystemName, CompositeItem, SystemRun | None], SystemRun]


def load_runs(folder: Path) -> list[SystemRun]:
    """The finished runs in `folder` (a line cut short by a kill is ignored)."""
    path = folder / RUNS_FILE
    if not path.is_file():
        return []
    runs = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        try:
            runs.append(SystemRun.model_validate_json(line))
        except ValueError:
            continue  # the empty last line, or a partial line from an interrupted write
    return runs


def run_suite(
    items: Sequence[CompositeItem],
    systems: Sequence[SystemName],
    run_one: RunOne,
    folder: Path,
    *,
    progress: bool = True,
    warm_up: Callable[[], None] | None = None,
) -> list[SystemRun]:
    """Run every system on every item (comp-llm before sequential, which reuses its plan),
    skipping pairs already in `folder`. Returns all runs, old and new. `warm_up` runs once
    before the first timed run (loading models is not what the latencies compare)."""
    folder.mkdir(parents=True, exist_ok=True)
    runs = load_runs(folder)
    done = {(r.system, r.item_id): r for r in runs}
    order = sorted(systems, key=lambda s: s == "sequential")
    todo = [(s, item) for item in items for s in order if (s, item.id) not in done]
    if todo and warm_up is not None:
        warm_up()
    bar = _Bar(len(todo), progress)
    path = folder / RUNS_FILE
    with path.open("a+b") as tail:  # after a kill mid-write, start on a fresh line
        if tail.tell() and (tail.seek(-1, 2), tail.read(1))[1] != b"\n":
            tail.write(b"\n")
    with path.open("a", encoding="utf-8") as sink:
        for system, item in todo:
            reference = done.get(("comp-llm", item.id))
            try:
                run = run_one(system, item, reference)
            except Exception as exc:  # one bad item must not end a long benchmark
                error = "".join(traceback.format_exception_only(exc)).strip()
                run = SystemRun.empty(system, item, error=error)
            sink.write(run.model_dump_json() + "\n")
            sink.flush()
            done[(system, item.id)] = run
            runs.append(run)
            bar.update(system, _running_accuracy(runs, system))
    bar.close()
    return runs


def _running_accuracy(runs: Sequence[SystemRun], system: str) -> float:
    parts = [p.correct for r in runs if r.system == system for p in r.parts]
    return sum(parts) / len(parts) if parts else 0.0


class _Bar:
    """A tqdm bar showing the running part accuracy of the system just run."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._tqdm: Any = None
        if enabled and total:
            from tqdm import tqdm  # type: ignore[import-untyped]

            self._tqdm = tqdm(total=total, unit="run", dynamic_ncols=True)

    def update(self, system: str, accuracy: float) -> None:
        if self._tqdm is not None:
            self._tqdm.set_postfix_str(f"{system} part accuracy {accuracy:.2f}")
            self._tqdm.update(1)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()

"""Running systems over a suite: one JSON line per (mode, system, item) appended as it
finishes, so an interrupted run resumes where it stopped without recomputing finished items.
A track is a (mode, system) pair: ("generate", "comp-llm"), ("loglik", "monolithic") ..."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from compllm.bench.suite import CompositeItem
from compllm.bench.systems import Mode, SystemName, SystemRun

__all__ = ["RUNS_FILE", "Track", "load_runs", "run_suite", "write_runs"]

RUNS_FILE = "runs.jsonl"

Track = tuple[Mode, SystemName]
# (mode, system, item, comp-llm's generation run of the item if there is one) -> the run
RunOne = Callable[[Mode, SystemName, CompositeItem, SystemRun | None], SystemRun]


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


def write_runs(folder: Path, runs: Sequence[SystemRun]) -> None:
    """Replace the runs file (after rescoring), atomically."""
    path = folder / RUNS_FILE
    staging = path.with_suffix(".jsonl.tmp")
    staging.write_text("".join(r.model_dump_json() + "\n" for r in runs), encoding="utf-8")
    staging.replace(path)


def run_suite(
    items: Sequence[CompositeItem],
    tracks: Sequence[Track],
    run_one: RunOne,
    folder: Path,
    *,
    progress: bool = True,
    warm_up: Callable[[], None] | None = None,
) -> list[SystemRun]:
    """Run every track on every item, skipping those already in `folder`: generation first,
    comp-llm before sequential (which runs its plan) and before log-likelihood scoring (which
    scores under its plan). Returns all runs, old and new. `warm_up` runs once before the
    first timed run (loading models is not what the latencies compare)."""
    folder.mkdir(parents=True, exist_ok=True)
    runs = load_runs(folder)
    done = {(r.mode, r.system, r.item_id): r for r in runs}
    order = sorted(tracks, key=lambda t: (t[0] != "generate", t[1] == "sequential"))
    todo = [(t, item) for item in items for t in order if (*t, item.id) not in done]
    if todo and warm_up is not None:
        warm_up()
    bar = _Bar(len(todo), progress)
    path = folder / RUNS_FILE
    with path.open("a+b") as tail:  # after a kill mid-write, start on a fresh line
        if tail.tell() and (tail.seek(-1, 2), tail.read(1))[1] != b"\n":
            tail.write(b"\n")
    with path.open("a", encoding="utf-8") as sink:
        for (mode, system), item in todo:
            reference = done.get(("generate", "comp-llm", item.id))
            try:
                run = run_one(mode, system, item, reference)
            except Exception as exc:  # one bad item must not end a long benchmark
                error = "".join(traceback.format_exception_only(exc)).strip()
                run = SystemRun.empty(system, item, mode=mode, error=error)
            sink.write(run.model_dump_json() + "\n")
            sink.flush()
            done[(mode, system, item.id)] = run
            runs.append(run)
            bar.update(f"{system} ({mode})", _running_accuracy(runs, mode, system))
    bar.close()
    return runs


def _running_accuracy(runs: Sequence[SystemRun], mode: str, system: str) -> float:
    """Share of parts right so far: on the final answer when generating."""
    parts = [
        p.correct if mode == "loglik" else bool(p.final_correct)
        for r in runs
        if r.system == system and r.mode == mode
        for p in r.parts
    ]
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
            self._tqdm.set_postfix_str(f"{system} accuracy so far {accuracy:.2f}")
            self._tqdm.update(1)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()

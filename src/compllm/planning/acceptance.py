"""Whether an LLM planner is worth calling: a record, per planner model, of how many of its
plans were tried and how many passed the checks.

`auto` planning asks an LLM planner only while its record says it is worth it: always for
its first few plans, then while at least a third of its plans pass; a model below that is
asked again only every `recheck_every`-th query, so a slow model that keeps failing costs
nothing on almost every query, and one that was unlucky gets back in. The record lives in
the process and, when given a path, on disk (read once, written after each change, with an
atomic replace), so that each `compllm ask` process does not pay for the same lesson.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LLMAcceptance"]


@dataclass
class _Counts:
    tried: int = 0
    accepted: int = 0
    skipped: int = 0


class LLMAcceptance:
    def __init__(
        self,
        path: Path | None = None,
        *,
        probe: int = 3,
        min_rate: float = 1 / 3,
        recheck_every: int = 25,
    ) -> None:
        self.path = path
        self.probe = probe
        self.min_rate = min_rate
        self.recheck_every = recheck_every
        self._counts: dict[str, _Counts] | None = None
        self._lock = threading.Lock()

    def _load(self) -> dict[str, _Counts]:
        if self._counts is None:
            self._counts = {}
            if self.path is not None and self.path.is_file():
                try:
                    data = json.loads(self.path.read_text(encoding="utf-8"))
                    self._counts = {
                        ref: _Counts(int(c["tried"]), int(c["accepted"]), int(c.get("skipped", 0)))
                        for ref, c in data.items()
                    }
                except (OSError, ValueError, KeyError, TypeError, AttributeError):
                    self._counts = {}  # a damaged record is relearned, not fatal
        return self._counts

    def worth_trying(self, model: str) -> bool:
        """Whether to call `model` for this query (counts a skip when not)."""
        with self._lock:
            counts = self._load().setdefault(model, _Counts())
            if counts.tried < self.probe or counts.accepted >= self.min_rate * counts.tried:
                return True
            counts.skipped += 1
            if counts.skipped % self.recheck_every == 0:
                return True
            self._save()
            return False

    def record(self, model: str, *, accepted: bool) -> None:
        with self._lock:
            counts = self._load().setdefault(model, _Counts())
            counts.tried += 1
            counts.accepted += int(accepted)
            self._save()

    def rate(self, model: str) -> tuple[int, int]:
        """(accepted, tried) for `model`."""
        with self._lock:
            counts = self._load().get(model, _Counts())
            return counts.accepted, counts.tried

    def _save(self) -> None:
        if self.path is None or self._counts is None:
            return
        data = {
            ref: {"tried": c.tried, "accepted": c.accepted, "skipped": c.skipped}
            for ref, c in self._counts.items()
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(data, indent=1), encoding="utf-8")
            partial.replace(self.path)
        except OSError:
            pass  # a read-only cache only loses the memory across processes

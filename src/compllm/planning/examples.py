"""Planning examples: a query with its gold parts, as character spans of the query.

One format serves the generated corpus, hand-written evaluation sets and a user's own
training data (`compllm train-planner --data FILE`). On disk it is JSONL, one query a line:

    {"query": "Who painted The Night Watch? When was he born?",
     "parts": [{"text": "Who painted The Night Watch?", "depends_on": []},
               {"text": "When was he born?", "depends_on": [1], "expert": "humanities"}],
     "context": ["..."]}

`text` is a verbatim span of the query (found in order), `depends_on` lists 1-based indices
of earlier parts whose answers the part needs; `expert`, `question` (a self-contained
rewrite), `kind`, `families`, `topics` and `split` are optional. `context` lists spans that
are not asked but that the following parts need ("I'm 38 and have $300k invested."); any
other text (connectives, list markers, greetings) belongs to no part.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Example", "GoldPart", "read_examples", "write_examples"]


@dataclass(frozen=True)
class GoldPart:
    """One asked part: the span [start, end) of the query and what it needs."""

    start: int
    end: int
    depends_on: tuple[int, ...] = ()  # 0-based indices of earlier parts
    expert: str | None = None
    question: str | None = None  # a self-contained rewrite, when the source has one


@dataclass(frozen=True)
class Example:
    """A query and its gold decomposition."""

    query: str
    parts: tuple[GoldPart, ...]
    context: tuple[tuple[int, int], ...] = ()
    kind: str = ""  # single, independent, dependent, mixed, conversational
    families: tuple[str, ...] = ()  # how it is phrased (the held-out protocol's unit)
    topics: tuple[str, ...] = ()
    split: str = ""  # train or heldout (generated examples)
    id: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)  # other fields, kept when written

    def text(self, index: int) -> str:
        part = self.parts[index]
        return self.query[part.start : part.end]

    @property
    def edges(self) -> frozenset[tuple[int, int]]:
        """(parent, child) pairs, 0-based."""
        return frozenset((d, i) for i, p in enumerate(self.parts) for d in p.depends_on)

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {**self.extra}
        if self.id:
            row["id"] = self.id
        row["query"] = self.query
        row["parts"] = []
        for index, part in enumerate(self.parts):
            item: dict[str, Any] = {
                "text": self.text(index),
                "depends_on": [d + 1 for d in part.depends_on],
            }
            if part.expert:
                item["expert"] = part.expert
            if part.question:
                item["question"] = part.question
            row["parts"].append(item)
        if self.context:
            row["context"] = [self.query[s:e] for s, e in self.context]
        for key in ("kind", "split"):
            if getattr(self, key):
                row[key] = getattr(self, key)
        for key in ("families", "topics"):
            if getattr(self, key):
                row[key] = list(getattr(self, key))
        return row

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> Example:
        """Read one line; raises ValueError naming what is wrong."""
        query = row.get("query")
        raw_parts = row.get("parts")
        if not isinstance(query, str) or not query.strip():
            raise ValueError("'query' must be a non-empty string")
        if not isinstance(raw_parts, list) or not raw_parts:
            raise ValueError("'parts' must be a non-empty list")
        spans = _locate([str(p.get("text", "")) for p in raw_parts], query, "part")
        parts = []
        for index, (raw, (start, end)) in enumerate(zip(raw_parts, spans, strict=True)):
            depends = tuple(int(d) - 1 for d in raw.get("depends_on") or [])
            if any(not 0 <= d < index for d in depends):
                raise ValueError(f"part {index + 1} depends on a part that does not precede it")
            parts.append(
                GoldPart(start, end, depends, raw.get("expert"), raw.get("question") or None)
            )
        context = _locate(
            [str(c) for c in row.get("context") or []], query, "context", any_order=True
        )
        known = {"id", "query", "parts", "context", "kind", "families", "topics", "split"}
        return cls(
            query=query,
            parts=tuple(parts),
            context=tuple(context),
            kind=str(row.get("kind", "")),
            families=tuple(row.get("families") or ((row["style"],) if "style" in row else ())),
            topics=tuple(row.get("topics") or ()),
            split=str(row.get("split", "")),
            id=str(row.get("id", "")),
            extra={k: v for k, v in row.items() if k not in known},
        )


def _locate(
    texts: list[str], query: str, what: str, *, any_order: bool = False
) -> list[tuple[int, int]]:
    """Spans of `texts` in `query`, each found after the previous one (or anywhere)."""
    spans, cursor = [], 0
    for number, text in enumerate(texts, start=1):
        text = text.strip()
        if not text:
            raise ValueError(f"{what} {number} has no text")
        start = query.find(text, 0 if any_order else cursor)
        if start < 0:
            raise ValueError(f"{what} {number} is not a verbatim span of the query: {text!r}")
        spans.append((start, start + len(text)))
        cursor = start + len(text)
    return spans


def read_examples(path: str | Path) -> list[Example]:
    """Examples from a JSONL file; a bad line raises ValueError with its line number."""
    examples = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                examples.append(Example.from_json(json.loads(line)))
            except (ValueError, TypeError, AttributeError) as exc:
                raise ValueError(f"{path}:{number}: {exc}") from None
    return examples


def write_examples(examples: Iterable[Example], path: str | Path) -> int:
    """Write JSONL; returns how many lines."""
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(example.to_json(), ensure_ascii=False) + "\n")
            count += 1
    return count

"""Reading a plan while the planner is still writing it.

A planner LLM writes `{"subqueries": [{"id": "q1", ...}, {"id": "q2", ...}]}` token by
token. `SubQueryStream` takes the text as it comes and hands out each sub-query object the
moment its closing brace arrives, so its expert can start while later ones are still being
written. It only reads JSON structure (strings, escapes, nesting): prose or a code fence
before the JSON is skipped, and what a sub-query object means is checked by the caller.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["SubQueryStream"]

_MAX_OBJECT_CHARS = 16_000  # one sub-query is a few hundred characters; more is not a plan


class SubQueryStream:
    """Feed text chunks; get complete sub-query objects (dicts) back as they close."""

    def __init__(self) -> None:
        self.text = ""
        self._scanned = 0
        self._array_depth: int | None = None  # nesting depth of the sub-query array's items
        self._depth = 0
        self._in_string = self._escaped = False
        self._object_start: int | None = None

    def feed(self, chunk: str) -> list[dict[str, Any]]:
        """The sub-query objects completed by `chunk`, in order."""
        self.text += chunk
        found: list[dict[str, Any]] = []
        for index in range(self._scanned, len(self.text)):
            char = self.text[index]
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
                continue
            if char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
                if char == "[" and self._array_depth is None and self._starts_plan(index):
                    self._array_depth = self._depth + 1
                elif char == "{" and self._depth == self._array_depth:
                    self._object_start = index
            elif char in "}]":
                closes_item = char == "}" and self._depth == self._array_depth
                if closes_item and self._object_start is not None:
                    item = self._parse(self.text[self._object_start : index + 1])
                    if item is not None:
                        found.append(item)
                    self._object_start = None
                elif char == "]" and self._depth + 1 == self._array_depth:
                    self._array_depth = -1  # the array is closed: nothing more to hand out
                self._depth -= 1
            if self._object_start is not None and index - self._object_start > _MAX_OBJECT_CHARS:
                self._object_start = None  # not a sub-query: the final parse will say why
        self._scanned = len(self.text)
        return found

    def _starts_plan(self, index: int) -> bool:
        """Whether the '[' at `index` opens the sub-query array: after `"subqueries":`, or
        the first array of a bare list of objects."""
        before = self.text[:index].rstrip()
        if before.endswith(":"):
            return before[:-1].rstrip().endswith('"subqueries"')
        return self._depth == 1  # a top-level array

    @staticmethod
    def _parse(text: str) -> dict[str, Any] | None:
        try:
            value = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            return None
        return value if isinstance(value, dict) else None

"""What compllm's two in-process chat models share: their call-time settings and how they
honour stop strings.

Both `TransformersChatModel` and `LlamaCppChatModel` take the same keyword arguments at call
time and reject any other with a `TypeError`, as real LangChain models do: a misspelt or
foreign setting (`max_tokens`, `num_predict`) must fail loudly, not be ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage

__all__ = ["CALL_SETTINGS", "CallSettings", "StopStringFilter", "chat_roles", "cut_at_stop"]

CALL_SETTINGS = ("max_new_tokens", "temperature", "top_p", "repetition_penalty", "json_schema")
_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}


@dataclass(frozen=True)
class CallSettings:
    """One call's decoding settings, with the model's own defaults filled in."""

    max_new_tokens: int
    temperature: float  # 0: greedy
    top_p: float
    repetition_penalty: float  # 1: off
    json_schema: dict[str, Any] | None

    @classmethod
    def resolve(cls, model: Any, kwargs: Mapping[str, Any]) -> CallSettings:
        """`kwargs` over the model's fields of the same names; None means "the default".
        Unknown keywords raise `TypeError` naming them."""
        unknown = sorted(set(kwargs) - set(CALL_SETTINGS))
        if unknown:
            raise TypeError(
                f"{type(model).__name__} got unexpected keyword argument(s) "
                f"{', '.join(repr(k) for k in unknown)}; it takes {', '.join(CALL_SETTINGS)}"
                " (and stop)"
            )

        def pick(name: str) -> Any:
            value = kwargs.get(name)
            return getattr(model, name) if value is None else value

        settings = cls(
            max_new_tokens=int(pick("max_new_tokens")),
            temperature=float(pick("temperature")),
            top_p=float(pick("top_p")),
            repetition_penalty=float(pick("repetition_penalty")),
            json_schema=kwargs.get("json_schema"),
        )
        if settings.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, not {settings.max_new_tokens}")
        if settings.temperature < 0:
            raise ValueError(f"temperature must not be negative, not {settings.temperature}")
        if not 0 < settings.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {settings.top_p}")
        if settings.repetition_penalty <= 0:
            raise ValueError(
                f"repetition_penalty must be positive, not {settings.repetition_penalty}"
            )
        return settings


def chat_roles(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages as the `{"role", "content"}` dicts chat templates read."""
    return [{"role": _ROLES.get(m.type, "user"), "content": m.text} for m in messages]


def cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    """`text` up to the first occurrence of any stop string."""
    for marker in stop or ():
        index = text.find(marker)
        if index >= 0:
            text = text[:index]
    return text


class StopStringFilter:
    """Streams text that may end in a stop string: text that could still turn out to be the
    start of a stop string is held back until the next piece decides it."""

    def __init__(self, stop: Sequence[str] | None) -> None:
        self.stop = [s for s in stop or () if s]
        self.text = ""  # everything seen, cut at the first stop string once one appears
        self.released = 0  # how much of `text` was handed out
        self.stopped = False

    def feed(self, text: str) -> str:
        """The full text so far (not a delta); returns the new text that is safe to show."""
        if self.stopped:
            return ""
        cut = cut_at_stop(text, self.stop)
        self.stopped = len(cut) < len(text)
        self.text = cut
        hold = 0 if self.stopped else self._longest_stop_prefix_at_end(cut)
        safe_end = max(self.released, len(cut) - hold)
        released, self.released = cut[self.released : safe_end], safe_end
        return released

    def flush(self) -> str:
        """The rest of the text, at the end of generation (held-back text was no stop)."""
        rest, self.released = self.text[self.released :], len(self.text)
        return rest

    def _longest_stop_prefix_at_end(self, text: str) -> int:
        longest = 0
        for marker in self.stop:
            for length in range(min(len(marker) - 1, len(text)), longest, -1):
                if text.endswith(marker[:length]):
                    longest = length
                    break
        return longest

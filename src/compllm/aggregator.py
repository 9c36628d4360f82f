"""Response aggregator: composes one final answer from every (sub-query, expert, answer).

One-part plans pass the expert's answer through. Otherwise the aggregator model writes the
answer; when it fails or leaves a part out, the experts' answers are given in plan order
instead ("concatenated"), with the reason kept in state. Parts without an answer are always
listed after it by the code, not left to the model, so a missing part can never be glossed
over. (The node that calls the model is `compllm.nodes.aggregate`.)
"""

from __future__ import annotations

import re
from collections import Counter

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from compllm.prompts import render_prompt
from compllm.state import SubAnswer

__all__ = ["aggregation_messages", "compose_fallback", "missing_note", "uncovered_parts"]


def missing_note(parts: list[SubAnswer]) -> str:
    """One line per part that has no answer, or '' when every part was answered."""
    lines = [
        f"- part {index} ({part.question!r}, expert {part.expert}): {part.error or part.status}"
        for index, part in enumerate(parts, start=1)
        if part.status != "ok"
    ]
    return "Missing parts:\n" + "\n".join(lines) if lines else ""


def compose_fallback(parts: list[SubAnswer]) -> str:
    """Every answered part in plan order: used when the aggregator model fails or leaves
    parts out."""
    return "\n\n".join(
        f"{index}. {part.question} ({part.expert})\n{part.answer}"
        for index, part in enumerate(parts, start=1)
        if part.status == "ok"
    )


def uncovered_parts(final: str, parts: list[SubAnswer], *, min_overlap: float = 0.25) -> list[str]:
    """Ids of answered parts the final answer leaves out: fewer than `min_overlap` of the
    distinctive words of the part's answer appear in it. Small models often answer only the
    first or last part; this catches it without asking a model."""
    final_words = _words(final)
    words = [_words(part.answer) for part in parts]
    # A part's distinctive words are those no other part's answer has: the words in one
    # answer only (counted once per part, so the check stays linear in the plan's size).
    answers_with = Counter(word for part_words in words for word in part_words)
    missing = []
    for part, part_words in zip(parts, words, strict=True):
        if part.status != "ok":
            continue
        distinctive = {word for word in part_words if answers_with[word] == 1}
        if distinctive and len(distinctive & final_words) < min_overlap * len(distinctive):
            missing.append(part.id)
    return missing


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]{4,}", text.lower()))


def aggregation_messages(query: str, parts: list[SubAnswer]) -> list[BaseMessage]:
    """What a chat model is asked to compose the final answer."""
    return [
        SystemMessage(render_prompt("aggregator.system")),
        HumanMessage(render_prompt("aggregator.user", query=query, parts=parts)),
    ]

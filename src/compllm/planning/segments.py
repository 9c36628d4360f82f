"""From token labels to a plan: the segmenter's label set, gold labels for training, and the
decoding of predicted labels into parts, their questions and the plan.

Labels (one per token): `O` dropped (connectives, list markers, greetings, headers), `B-Q`
/ `I-Q` begin / continue an asked part, `B-C` / `I-C` begin / continue context that the
following parts need ("I'm 38 and have $300k invested."; context after the last part goes
with the parts before it).

Decoding never loses the query's words to a mistake of the model: a dropped stretch that
asks something ("...?") becomes a part, and any other dropped stretch with several content
words becomes context. Each part's question is the query's own text for the part, with the
context it needs around it, so every question the user wrote is in some sub-question.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from compllm.plan import DEFAULT_MAX_SUBQUERIES, Plan, SubQuery
from compllm.planning.examples import Example

__all__ = [
    "LABELS",
    "Segment",
    "build_plan",
    "decode_labels",
    "model_text",
    "part_questions",
    "token_labels",
    "word_starts",
]

LABELS = ("O", "B-Q", "I-Q", "B-C", "I-C")
_O, _BQ, _IQ, _BC, _IC = range(5)
IGNORE = -100


def model_text(query: str) -> str:
    """The text the encoder reads: line breaks become '¶' (the tokenizer drops whitespace, but
    a new line often separates asks). Same length, so character offsets still hold."""
    return query.replace("\r", " ").replace("\n", "¶").replace("\t", " ")


def word_starts(text: str, offsets: Sequence[tuple[int, int]]) -> list[bool]:
    """Whether each token starts a word: words are runs of text between spaces or line
    breaks, so "I'm", "x^3" or "(ii)" are one word whatever the tokenizer makes of them."""
    starts = []
    for start, end in offsets:
        starts.append(
            start != end
            and (
                start == 0
                or text[start - 1].isspace()
                or text[start - 1] == "¶"
                or text[start] == "¶"
            )
        )
    return starts


@dataclass(frozen=True)
class Segment:
    kind: str  # "part" or "context"
    start: int
    end: int


def token_labels(offsets: Sequence[tuple[int, int]], example: Example) -> list[int]:
    """Gold label per token (`IGNORE` for special tokens)."""
    spans = [(p.start, p.end, _BQ) for p in example.parts]
    spans += [(s, e, _BC) for s, e in example.context]
    labels, seen = [], set()
    for start, end in offsets:
        if start == end:
            labels.append(IGNORE)
            continue
        label = _O
        for index, (span_start, span_end, begin) in enumerate(spans):
            if span_start <= start < span_end:
                label = begin + 1 if index in seen else begin
                seen.add(index)
                break
        labels.append(label)
    return labels


# Allowed label transitions: I-Q continues a part, I-C continues context.
_ALLOWED = np.full((5, 5), -1e9)
for _prev, _nexts in {
    _O: (_O, _BQ, _BC),
    _BQ: (_IQ, _O, _BQ, _BC),
    _IQ: (_IQ, _O, _BQ, _BC),
    _BC: (_IC, _O, _BQ, _BC),
    _IC: (_IC, _O, _BQ, _BC),
}.items():
    _ALLOWED[_prev, list(_nexts)] = 0.0
_START = np.array([0.0, 0.0, -1e9, 0.0, -1e9])


def decode_labels(
    log_probs: np.ndarray, offsets: Sequence[tuple[int, int]], word_starts: Sequence[bool]
) -> list[Segment]:
    """Best label sequence over word-initial tokens (Viterbi with the allowed transitions);
    a word's other pieces share its label. Returns raw segments (see `repair`)."""
    words = [i for i, (s, e) in enumerate(offsets) if s != e and word_starts[i]]
    if not words:
        return []
    scores = log_probs[words]
    best = _START + scores[0]
    back = []
    for row in scores[1:]:
        total = best[:, None] + _ALLOWED
        back.append(total.argmax(axis=0))
        best = total.max(axis=0) + row
    path = [int(best.argmax())]
    for pointers in reversed(back):
        path.append(int(pointers[path[-1]]))
    path.reverse()
    segments: list[Segment] = []
    for position, (token, label) in enumerate(zip(words, path, strict=True)):
        end = (
            offsets[words[position + 1] - 1][1] if position + 1 < len(words) else _last_end(offsets)
        )
        start = offsets[token][0]
        kind = {_BQ: "part", _IQ: "part", _BC: "context", _IC: "context"}.get(label)
        if kind is None:
            continue
        if label in (_IQ, _IC) and segments and segments[-1].kind == kind:
            segments[-1] = Segment(kind, segments[-1].start, end)
        else:
            segments.append(Segment(kind, start, end))
    return segments


def _last_end(offsets: Sequence[tuple[int, int]]) -> int:
    return max(e for s, e in offsets if s != e)


_CONTENT = re.compile(r"[^\W\d_][\w'-]*|\d+", re.UNICODE)
_FILLER_WORDS = frozenset(
    (  # noqa: SIM905 - a word list reads better as text
        "and also plus then next finally first second third thanks thank you please pls hi "
        "hey hello lol thx ok okay so oh btw questions question things thing quick q a the "
        "of to or as well separately unrelated but another note one more"
    ).split()
)


def _content_words(text: str) -> list[str]:
    return [w for w in _CONTENT.findall(text.lower()) if w not in _FILLER_WORDS]


def repair(query: str, segments: Sequence[Segment]) -> list[Segment]:
    """Segments that keep every question of the query: dropped text that asks becomes a part,
    other dropped text with content becomes context; a query with no part is one part."""
    cleaned = [_strip(query, s) for s in segments]
    kept = [s for s in cleaned if s is not None]
    result: list[Segment] = []
    cursor = 0
    for segment in [*kept, Segment("end", len(query), len(query))]:
        result += _unlabelled(query, cursor, segment.start)
        text = query[segment.start : segment.end]
        if segment.kind == "context" and text.endswith("?") and len(_content_words(text)) >= 2:
            segment = Segment("part", segment.start, segment.end)  # context that asks
        if segment.kind != "end":
            if segment.kind == "part" and not _content_words(query[segment.start : segment.end]):
                # Punctuation or a lone connective is no question: it joins its neighbour.
                if result and result[-1].kind == "part":
                    result[-1] = Segment("part", result[-1].start, segment.end)
                cursor = segment.end
                continue
            result.append(segment)
        cursor = segment.end
    if not any(s.kind == "part" for s in result):
        whole = _strip(query, Segment("part", 0, len(query)))
        return [whole] if whole is not None else []
    return _join_stubs(query, result)


# A question does not start with these; a part that does continues the one before it.
_DANGLING = frozenset(["by", "to", "of", "than", "into", "for", "from", "with", "as", "and", "or"])
# A question does not end with these; a part that does goes on in the next one.
_OPENS = frozenset(["by", "to", "of", "than", "into", "from", "with", "the", "a", "an"])
# A clause that starts with these and ends in a comma sets up the question after it.
_SUBORDINATE = frozenset(
    (  # noqa: SIM905 - a word list reads better as text
        "if when whenever since as because before after unless supposing suppose say "
        "assuming given provided while although though once"
    ).split()
)


def _join_stubs(query: str, segments: list[Segment]) -> list[Segment]:
    """Join what the model cut where a reader would not:
    - a part of one or two words that ends no sentence and runs straight into the next
      segment is its start ("in | which country is Mombasa?", "For | context, I'm ...");
    - a part that starts with a dangling word continues the part before it ("Combine both
      values | by multiplying them."), and so does one that ends with one ("Combine both
      values by | multiplying them.");
    - a subordinate clause ending in a comma starts the question after it ("Supposing we
      go with the cheaper option, | what is ...")."""
    joined: list[Segment] = []
    for segment in segments:
        if joined and joined[-1].kind == "part" and _continues(query, joined[-1], segment):
            kind = segment.kind
            joined[-1] = Segment(kind, joined[-1].start, segment.end)
            continue
        joined.append(segment)
    return joined


def _continues(query: str, before: Segment, segment: Segment) -> bool:
    text = query[before.start : before.end]
    between = query[before.end : segment.start].strip()
    ends = text.endswith((".", "?", "!"))
    if len(text.split()) <= 2 and not ends and not between:
        return True
    if segment.kind != "part" or ends or "?" in text:
        return False
    last = text.split()[-1].lower() if text.split() else ""
    if not between and last in _OPENS:  # "Combine both values by | multiplying them."
        return True
    words = query[segment.start : segment.end].split()
    if not between and words and words[0] in _DANGLING:  # lower case: not a new sentence
        return True
    first = text.split()[0].lower().strip(",") if text.split() else ""
    return between == "," and first in _SUBORDINATE


_SENTENCE = re.compile(r"[^.?!¶\n]+(?:[.?!]+|$)")


def _unlabelled(query: str, start: int, end: int) -> list[Segment]:
    """What to keep of text the model dropped: each sentence that asks (ends in '?') is a
    part; any other sentence with several content words is context."""
    kept = []
    for match in _SENTENCE.finditer(query, start, end):
        sentence = _strip(query, Segment("gap", match.start(), match.end()))
        if sentence is None:
            continue
        text = query[sentence.start : sentence.end]
        words = _content_words(text)
        if text.endswith("?") and len(words) >= 2:
            kept.append(Segment("part", sentence.start, sentence.end))
        elif len(words) >= 4:
            kept.append(Segment("context", sentence.start, sentence.end))
    return kept


def _strip(query: str, segment: Segment) -> Segment | None:
    start, end = segment.start, segment.end
    while start < end and (query[start].isspace() or query[start] in ",;:-–—•*|/&"):
        start += 1
    while end > start and (query[end - 1].isspace() or query[end - 1] in ",;:-–—•*|/&"):
        end -= 1
    return Segment(segment.kind, start, end) if end > start else None


_ASKING = re.compile(
    r"^\W*(?:what|what's|whats|who|whom|whose|which|when|where|why|how|is|are|was|were|do|"
    r"does|did|can|could|should|would|will|am|has|have)\b",
    re.IGNORECASE,
)


def _tidy(text: str) -> str:
    text = " ".join(text.split()) if "\n" not in text else text.strip()
    text = text.strip().strip(",;:-–— ").strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    if text[-1] not in ".?!)\"'" and _ASKING.match(text):
        text += "?"
    return text


def part_questions(query: str, segments: Sequence[Segment]) -> list[tuple[str, Segment]]:
    """Each part's question: the context before it (and context after the last part) around
    the part's own text."""
    questions = []
    parts = [s for s in segments if s.kind == "part"]
    last_part_end = parts[-1].end if parts else 0
    trailing = [s for s in segments if s.kind == "context" and s.start >= last_part_end]
    for part in parts:
        before = [s for s in segments if s.kind == "context" and s.end <= part.start]
        text = " ".join(_tidy(query[s.start : s.end]) for s in [*before, part, *trailing])
        questions.append((_tidy(text), part))
    return questions


def build_plan(
    query: str,
    segments: Sequence[Segment],
    edges: set[tuple[int, int]],
    *,
    max_subqueries: int = DEFAULT_MAX_SUBQUERIES,
) -> Plan:
    """The plan: one sub-query per part, `edges` as (parent, child) part indices. Beyond
    `max_subqueries` the last parts are asked together as one."""
    questions = [q for q, _ in part_questions(query, segments)]
    if len(questions) > max_subqueries:
        head, tail = questions[: max_subqueries - 1], questions[max_subqueries - 1 :]
        questions = [*head, " ".join(tail)]
    last = len(questions) - 1
    parents: dict[int, set[int]] = {i: set() for i in range(len(questions))}
    for parent, child in edges:
        parent, child = min(parent, last), min(child, last)
        if parent < child:
            parents[child].add(parent)
    return Plan.build(
        [
            SubQuery(
                id=f"q{i + 1}",
                question=question,
                depends_on=tuple(f"q{p + 1}" for p in sorted(parents[i])),
            )
            for i, question in enumerate(questions)
        ],
        max_subqueries=max_subqueries,
    )

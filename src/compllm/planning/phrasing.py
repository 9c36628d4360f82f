"""Phrasing families: the ways people join several asks into one message.

A family renders drafts (the asks, each with the forms it can take) into pieces of text, each
piece asked (part k), context for the parts, or dropped (connectives, list markers,
greetings). Each family is `train` or `heldout`; the held-out evaluation renders only with
held-out families, so its figures are on phrasing the planner never saw in training.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "DECORATIONS",
    "JOINERS",
    "Draft",
    "Family",
    "Piece",
    "lower_first",
    "strip_end",
]

Role = Literal["part", "context", "drop"]


@dataclass(frozen=True)
class Piece:
    text: str
    role: Role = "drop"
    part: int = -1


@dataclass
class Draft:
    """One ask before rendering: its sentence and the other forms it may take."""

    sentence: str  # standalone, with its end punctuation: "Who painted The Night Watch?"
    expert: str
    depends_on: tuple[int, ...] = ()
    noun_phrase: str | None = None
    imperative: str | None = None
    value: str | None = None  # the type of its answer, for chains
    topic: str = ""
    references: tuple[str, ...] = field(default_factory=tuple)  # families of its references


_COMMON_FIRST_WORDS = frozenset(
    (  # noqa: SIM905 - a word list reads better as text
        "what what's whats who who's which when where why how is are was were do does did "
        "can could should would will the a an add subtract multiply divide take compute "
        "calculate find give tell list explain describe define name convert round square "
        "double triple halve then and also plus is it its he she they his her their that "
        "this those these solve factor simplify state write in using with from if now "
        "any my our your whether combine round halve double triple take using now "
        "subtract divide multiply add is"
    ).split()
)


def lower_first(text: str) -> str:
    """`text` with its first letter in lower case, unless it starts with a name."""
    word = re.match(r"[A-Za-z']+", text)
    if word and word.group(0).lower() in _COMMON_FIRST_WORDS:
        return text[0].lower() + text[1:]
    return text


def strip_end(text: str) -> str:
    return text.rstrip().rstrip(".?!").rstrip()


def _end(text: str) -> str:
    """The end punctuation of a sentence ('?' when it has none)."""
    return text[-1] if text and text[-1] in ".?!" else "?"


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


Render = Callable[[Sequence[Draft], random.Random], list[Piece]]


@dataclass(frozen=True)
class Family:
    name: str
    split: Literal["train", "heldout"]
    render: Render
    min_parts: int = 2
    max_parts: int = 6
    noun_phrases: bool = False  # needs every draft to have a noun phrase (no dependencies)


def _part(index: int, text: str) -> Piece:
    return Piece(text, "part", index)


def _sentences(
    drafts: Sequence[Draft],
    rng: random.Random,
    *,
    links: Sequence[str] = (),
    lower: bool = False,
    dependent_links: Sequence[str] = ("Then ", "Then, ", "", "", "", "Next, ", "Now "),
) -> list[Piece]:
    """'S1 S2 S3', optionally with a link word before later asks."""
    pieces: list[Piece] = []
    for index, draft in enumerate(drafts):
        text = draft.sentence
        if index:
            pieces.append(Piece(" "))
            link = rng.choice(dependent_links) if draft.depends_on else ""
            if not link and links and rng.random() < 0.6:
                link = rng.choice(links)
            if link:
                pieces.append(Piece(link))
                text = lower_first(text)
            elif lower:
                text = lower_first(text)
        pieces.append(_part(index, text))
    return pieces


def _joined(
    drafts: Sequence[Draft], rng: random.Random, connectors: Sequence[str], *, oxford: bool = True
) -> list[Piece]:
    """'B1, b2 and b3?': asks joined inside one sentence."""
    pieces: list[Piece] = []
    last = len(drafts) - 1
    for index, draft in enumerate(drafts):
        text = strip_end(draft.sentence) if index < last else draft.sentence
        if index:
            text = lower_first(text)
            if index < last:
                pieces.append(Piece(", "))
            else:
                pieces.append(Piece(rng.choice(connectors) if (oxford or last == 1) else " and "))
        pieces.append(_part(index, text))
    return pieces


def _lines(
    drafts: Sequence[Draft],
    rng: random.Random,
    markers: Callable[[int], str],
    *,
    headers: Sequence[str] = ("", "", "Questions:", "Quick questions:", "A few things:"),
    lower: bool = False,
    bare: bool = False,
    separator: str = "\n",
    noun_phrases: bool = False,
) -> list[Piece]:
    pieces: list[Piece] = []
    header = rng.choice(headers)
    if header:
        pieces.append(Piece(header + separator))
    for index, draft in enumerate(drafts):
        text = (draft.noun_phrase or draft.sentence) if noun_phrases else draft.sentence
        if lower:
            text = lower_first(text)
        if bare:
            text = strip_end(text)
        if index:
            pieces.append(Piece(separator))
        pieces.append(Piece(markers(index)))
        pieces.append(_part(index, text))
    return pieces


_ROMAN = ["i", "ii", "iii", "iv", "v", "vi", "vii", "viii"]
_WORDS = ["One", "Two", "Three", "Four", "Five", "Six"]
_ORDINALS = ["First", "Second", "Third", "Fourth", "Fifth", "Sixth"]
_ORDINALS_LY = ["Firstly", "Secondly", "Thirdly", "Fourthly", "Fifthly", "Sixthly"]


def _ordinal_words(
    drafts: Sequence[Draft], rng: random.Random, words: Sequence[str]
) -> list[Piece]:
    pieces: list[Piece] = []
    last = len(drafts) - 1
    for index, draft in enumerate(drafts):
        if index:
            pieces.append(Piece(" "))
        word = words[index]
        if index == last and index >= 2 and rng.random() < 0.5:
            word = rng.choice(["Finally", "Lastly", "And finally"])
        pieces.append(Piece(word + rng.choice([", ", " ", ": "])))
        pieces.append(_part(index, lower_first(draft.sentence)))
    return pieces


def _first_then(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
    """'First, ... Then ... Finally, ...': sequence words whether or not parts depend."""
    pieces: list[Piece] = []
    last = len(drafts) - 1
    for index, draft in enumerate(drafts):
        if index:
            pieces.append(Piece(" "))
        if index == 0:
            word = rng.choice(["First, ", "First ", "To start, "])
        elif index == last and index >= 2:
            word = rng.choice(["Finally, ", "Lastly, ", "And finally, "])
        else:
            word = rng.choice(["Then, ", "Then ", "Next, ", "After that, "])
        pieces.append(Piece(word))
        pieces.append(_part(index, lower_first(draft.sentence)))
    return pieces


def _run_on(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
    """'what is x what is y who painted z': lowercase, no punctuation."""
    pieces: list[Piece] = []
    for index, draft in enumerate(drafts):
        if index:
            pieces.append(Piece(rng.choice([" ", " ", " and ", "  "])))
        pieces.append(_part(index, strip_end(lower_first(draft.sentence)).lower()))
    return pieces


def _semicolons(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
    lower = rng.random() < 0.7
    pieces: list[Piece] = []
    for index, draft in enumerate(drafts):
        text = strip_end(draft.sentence) if index < len(drafts) - 1 else draft.sentence
        if index:
            pieces.append(Piece(rng.choice(["; ", "; also ", "; and "])))
            text = lower_first(text) if lower else text
        pieces.append(_part(index, text))
    return pieces


def _separately(links: Sequence[str]) -> Render:
    def render(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
        return _sentences(drafts, rng, links=links)

    return render


def _header(headers: Sequence[str]) -> Render:
    def render(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
        inner = rng.choice([_sentences, _comma_and, _newline_list])
        return [Piece(rng.choice(headers)), *inner(drafts, rng)]

    return render


def _comma_and(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
    return _joined(drafts, rng, [", and ", " and ", ", and "])


def _newline_list(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
    return _lines(drafts, rng, lambda i: "", headers=("",), lower=rng.random() < 0.5)


def _noun_list(leads: Sequence[str], dropped: bool) -> Render:
    """'Tell me the X, the Y and the Z.': a lead-in shared by noun phrases."""

    def render(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
        lead = rng.choice(leads)
        pieces = [Piece(lead, "drop" if dropped else "context"), Piece(" ")]
        last = len(drafts) - 1
        for index, draft in enumerate(drafts):
            if index:
                pieces.append(Piece(rng.choice([", and ", " and "]) if index == last else ", "))
            pieces.append(_part(index, draft.noun_phrase or strip_end(draft.sentence)))
        pieces.append(Piece(rng.choice([".", "?", "", "!"])))
        return pieces

    return render


def _imperatives(connectors: Sequence[str]) -> Render:
    def render(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
        forms = [Draft(d.imperative or d.sentence, d.expert, d.depends_on) for d in drafts]
        return _joined(forms, rng, connectors)

    return render


def _polite(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
    lead = rng.choice(["Could you tell me ", "Can you tell me ", "Do you know "])
    first = strip_end(lower_first(drafts[0].sentence))
    pieces = [_part(0, lead + first)]
    for index, draft in enumerate(drafts[1:], start=1):
        pieces.append(Piece(rng.choice([", and also ", ", and ", "? And also ", "? Also "])))
        pieces.append(_part(index, lower_first(draft.sentence)))
    if rng.random() < 0.5:
        pieces.append(Piece(rng.choice([" Thanks!", " Thank you.", " Thanks in advance."])))
    return pieces


def _inline(markers: Callable[[int], str]) -> Render:
    def render(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
        separator = rng.choice([" ", " ", "\n"])
        return _lines(drafts, rng, markers, headers=("", "", "Answer these:"), separator=separator)

    return render


def _as_well_as(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
    return _joined(drafts, rng, [", as well as ", " as well as "])


def _ampersand(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
    return _joined(drafts, rng, [" & ", " & also ", ", & "])


def _plus(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
    return _joined(drafts, rng, [", plus ", " plus ", ". Plus, "])


def _also(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
    if len(drafts) == 2 and rng.random() < 0.4:
        return _joined(drafts, rng, [", also ", " also ", ", and also "])
    return _sentences(drafts, rng, links=["Also, ", "Also ", "And ", "And also "])


def _question_labels(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
    style = rng.choice(["Question {n}: ", "Q{n}: ", "Q{n}. ", "Question {n} - "])
    separator = rng.choice(["\n", " "])
    return _lines(drafts, rng, lambda i: style.format(n=i + 1), headers=("",), separator=separator)


def _dash_separated(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
    separator = rng.choice([" -- ", " / ", " | "])
    pieces: list[Piece] = []
    for index, draft in enumerate(drafts):
        if index:
            pieces.append(Piece(separator))
        pieces.append(_part(index, lower_first(draft.sentence)))
    return pieces


def _i_would_like(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
    pieces: list[Piece] = []
    for index, draft in enumerate(drafts):
        if index:
            pieces.append(Piece(" "))
        lead = rng.choice(
            ["I'd like to know ", "I want to know ", "I'm wondering "]
            if index == 0
            else ["I'm also curious ", "I'd also like to know ", "And I wonder "]
        )
        text = strip_end(lower_first(draft.sentence)) + "."
        pieces.append(_part(index, lead + text))
    return pieces


JOINERS: tuple[Family, ...] = (
    # -- train ----------------------------------------------------------------------------
    Family("sentences", "train", lambda d, r: _sentences(d, r)),
    Family("sentences-lowercase", "train", lambda d, r: _sentences(d, r, lower=True)),
    Family("and-join", "train", _comma_and, max_parts=3),
    Family("also", "train", _also),
    Family("plus", "train", _plus, max_parts=3),
    Family("semicolons", "train", _semicolons),
    Family(
        "dash-bullets",
        "train",
        lambda d, r: _lines(d, r, lambda i: "- ", lower=r.random() < 0.4, bare=r.random() < 0.3),
    ),
    Family("dot-bullets", "train", lambda d, r: _lines(d, r, lambda i: "• ")),
    Family(
        "dash-noun-bullets",
        "train",
        lambda d, r: _lines(d, r, lambda i: "- ", noun_phrases=True),
        noun_phrases=True,
    ),
    Family("numbered-lines", "train", lambda d, r: _lines(d, r, lambda i: f"{i + 1}. ")),
    Family("numbered-inline", "train", _inline(lambda i: f"{i + 1}) ")),
    Family("lettered", "train", _inline(lambda i: f"{'abcdefgh'[i]}) ")),
    Family("first-second", "train", lambda d, r: _ordinal_words(d, r, _ORDINALS)),
    Family("first-then-finally", "train", _first_then),
    Family("newlines", "train", _newline_list),
    Family("header", "train", _header(["Two things: ", "Two questions: ", "Quick q - "])),
    Family("run-on", "train", _run_on, max_parts=3),
    Family(
        "separately",
        "train",
        _separately(["Separately, ", "Unrelated, but ", "Oh and ", "btw ", "Also unrelated: "]),
    ),
    Family("imperatives", "train", _imperatives([", and ", " and ", ". Also "]), max_parts=3),
    Family(
        "noun-list",
        "train",
        _noun_list(["Tell me", "Give me", "I need", "Please find"], dropped=False),
        noun_phrases=True,
    ),
    Family("polite", "train", _polite, max_parts=3),
    Family("bracket-numbers", "train", _inline(lambda i: f"[{i + 1}] ")),
    Family("hash-numbers", "train", lambda d, r: _lines(d, r, lambda i: f"#{i + 1} ")),
    Family("capital-letters", "train", _inline(lambda i: f"{'ABCDEFGH'[i]}. ")),
    Family("part-labels", "train", _inline(lambda i: f"Part {'ABCDEFGH'[i]}: ")),
    Family("step-labels", "train", lambda d, r: _lines(d, r, lambda i: f"Step {i + 1}: ")),
    Family("arrow-bullets", "train", lambda d, r: _lines(d, r, lambda i: r.choice(["→ ", "> "]))),
    Family("en-dash-bullets", "train", lambda d, r: _lines(d, r, lambda i: "– ")),
    # -- held out ---------------------------------------------------------------------------
    Family("as-well-as", "heldout", _as_well_as, max_parts=3),
    Family("ampersand", "heldout", _ampersand, max_parts=3),
    Family("star-bullets", "heldout", lambda d, r: _lines(d, r, lambda i: "* ")),
    Family("numbered-parens", "heldout", _inline(lambda i: f"({i + 1}) ")),
    Family("lettered-parens", "heldout", _inline(lambda i: f"({'abcdefgh'[i]}) ")),
    Family("roman", "heldout", _inline(lambda i: f"({_ROMAN[i]}) ")),
    Family("roman-dots", "heldout", lambda d, r: _lines(d, r, lambda i: f"{_ROMAN[i]}. ")),
    Family("firstly", "heldout", lambda d, r: _ordinal_words(d, r, _ORDINALS_LY)),
    Family("number-words", "heldout", lambda d, r: _ordinal_words(d, r, _WORDS)),
    Family("question-labels", "heldout", _question_labels),
    Family(
        "header-alt",
        "heldout",
        _header(["A few questions for you - ", "Couple of things:\n", "Help with these please: "]),
    ),
    Family(
        "separately-alt",
        "heldout",
        _separately(["On another note, ", "Different topic: ", "And one more thing: "]),
    ),
    Family("i-would-like", "heldout", _i_would_like, max_parts=3),
    Family("dash-separated", "heldout", _dash_separated),
    Family(
        "noun-list-colon",
        "heldout",
        _noun_list(["Looking for:", "Need to know:", "What about these:"], dropped=True),
        noun_phrases=True,
    ),
)


# -- decorations: around the whole message -----------------------------------------------

_GREETINGS = {
    "train": ["Hi! ", "hey ", "Hello, ", "pls help: ", "quick q - ", "hey quick q - "],
    "heldout": ["Good morning! ", "Hey there :) ", "🙏 ", "Hiya, ", "Okay so "],
}
_SIGN_OFFS = {
    "train": [" Thanks!", " lol", " thx", " Thanks in advance.", " Any help appreciated!"],
    "heldout": [" Cheers.", " 🌿", " Much appreciated 🙏", " ty!!", " :)"],
}

DECORATIONS = {"greeting": _GREETINGS, "sign-off": _SIGN_OFFS}

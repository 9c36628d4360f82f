"""More of how people really write, for training only.

The first corpus was written by the same people who wrote the first hand-written evaluation
set, and the two shared blind spots. This module adds, to the *training* split only (the
held-out split draws exactly what it drew before, so its figures stay comparable):

- real questions written by others: question stems of the packaged MMLU file (its fit part,
  subjects that overlap no held-out topic), as asks to combine and as single questions that
  must not split (several sentences, options, "and", numbers, "if ... then");
- asks that contain "it", "that", "then", "the result" or "the answer" and need nothing;
- more ways of joining asks (run-on chat, commas only, no space after "?", e-mail layout,
  Markdown and emoji markers, reported questions, "Side question:"), more links before a
  dependent ask ("Based on that,", "If so,"), and more referring words;
- noise over whole messages: missing or doubled end marks, no space after a sentence,
  text-speak, shouting, stray spaces.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from compllm.planning.phrasing import Draft, Family, Piece, lower_first, strip_end

__all__ = [
    "DISTRACTORS",
    "EXTRA_JOINERS",
    "IF_SO",
    "INLINE_CODE",
    "NAMED_THINGS",
    "MoreAsk",
    "dependent_link",
    "mmlu_asks",
    "mmlu_singles",
    "roughen",
    "separate_link",
    "statements",
]

# MMLU subjects close to a held-out topic of the question bank: left out, so that held-out
# topics stay unseen in training.
_HELDOUT_NEAR = frozenset(
    (  # noqa: SIM905 - a word list reads better as text
        "college_biology high_school_biology anatomy virology medical_genetics clinical_knowledge "
        "college_medicine professional_medicine nutrition human_aging high_school_psychology "
        "professional_psychology international_law jurisprudence professional_law "
        "computer_security college_computer_science machine_learning prehistory "
        "high_school_world_history philosophy moral_disputes moral_scenarios formal_logic "
        "logical_fallacies world_religions high_school_government_and_politics us_foreign_policy "
        "security_studies professional_accounting high_school_mathematics college_mathematics "
        "abstract_algebra elementary_mathematics"
    ).split()
)


@dataclass(frozen=True)
class MoreAsk:
    question: str
    topic: str
    expert: str


def _mmlu_fit() -> list[object]:
    from compllm.mmlu import load_mmlu, split_questions

    fit, _ = split_questions(load_mmlu().questions)
    return [q for q in fit if q.subject not in _HELDOUT_NEAR]


_SENTENCE_END = re.compile(r"[.?!](?:\s|$)")


@functools.cache
def mmlu_asks() -> tuple[MoreAsk, ...]:
    """Self-contained one-sentence MMLU question stems."""
    asks = []
    for q in _mmlu_fit():
        text = " ".join(q.question.split())  # type: ignore[attr-defined]
        if (
            text.endswith("?")
            and 12 <= len(text) <= 150
            and "following" not in text.lower()
            and "_" not in text
            and "$" not in text
            and len(_SENTENCE_END.findall(text)) == 1
            and not text.lower().startswith(("which of these", "which statement", "what is true"))
        ):
            asks.append(MoreAsk(text, f"mmlu-{q.subject}", q.domain or "general"))  # type: ignore[attr-defined]
    return tuple(asks)


@functools.cache
def mmlu_singles() -> tuple[MoreAsk, ...]:
    """MMLU questions that are one ask whatever they contain: statements before the question,
    options, lists; the options written as people paste them."""
    singles = []
    for q in _mmlu_fit():
        text = " ".join(q.question.split())  # type: ignore[attr-defined]
        if len(text) > 420 or "_" in text or "Scenario 1" in text or not text:
            continue
        if not text.endswith("?") and "following" not in text.lower():
            continue  # a stem that the options complete: not a question without them
        singles.append(MoreAsk(text, f"mmlu-{q.subject}", q.domain or "general"))  # type: ignore[attr-defined]
    return tuple(singles)


def with_options(ask: MoreAsk, choices: Sequence[str], rng: random.Random) -> str:
    """An MMLU question with its options in one of several layouts."""
    letters = "ABCD" if rng.random() < 0.7 else "abcd"
    layouts: list[Callable[[int, str], str]] = [
        lambda i, c: f"({letters[i]}) {c}",
        lambda i, c: f"{letters[i]}) {c}",
        lambda i, c: f"{letters[i]}. {c}",
        lambda i, c: f"{i + 1}) {c}",
        lambda i, c: f"- {c}",
    ]
    layout = rng.choice(layouts)
    separator = rng.choice([" ", "\n", "; ", " | "])
    items = separator.join(layout(i, c) for i, c in enumerate(choices))
    joint = rng.choice([" ", "\n", " Options: ", "\nChoices:\n", " is it "])
    return f"{ask.question}{joint}{items}"


# Independent asks with words that look like references but point at nothing earlier.
DISTRACTORS: tuple[tuple[str, str], ...] = (
    ("Is it true that goldfish only have a three-second memory?", "science"),
    ("How long does it take to boil an egg?", "general"),
    ("Why does it get colder as you go up a mountain?", "science"),
    ("Is it safe to swim right after eating?", "medicine"),
    ("Is it legal to drive barefoot in the US?", "law"),
    ("What is the result of dividing by zero?", "math"),
    ("What is the answer to the Monty Hall problem?", "math"),
    ("What does 'it' refer to in a cleft sentence?", "humanities"),
    ("Then what is the difference between weather and climate?", "science"),
    ("What is that thing called when you remember a dream hours later?", "general"),
    ("Is that myth about bulls hating red true?", "science"),
    ("What happens if you mix bleach and ammonia?", "science"),
    ("Does it matter which way you put toilet paper on the holder?", "general"),
    ("How do I know if it's a cold or allergies?", "medicine"),
    ("What was the result of the Battle of Hastings?", "humanities"),
    ("What is the sum of the angles in a triangle?", "math"),
    ("What does the answer 42 mean in Hitchhiker's Guide?", "humanities"),
    ("Can you explain that phenomenon where the moon looks bigger near the horizon?", "science"),
    ("Who said 'that's one small step for man'?", "humanities"),
    ("What is the previous name of Istanbul?", "social-science"),
    ("Why is it called a hamburger if it has no ham?", "general"),
    ("How do I tell if my answer to a quadratic is right?", "math"),
    ("Is it better to rent or buy a house in your twenties?", "economics"),
    ("What is this symbol called: §?", "general"),
    ("What is the first result that comes up when you search 'recursion' on Google?", "computing"),
    ("How did they build the pyramids without modern tools?", "humanities"),
    ("Why do they put fluoride in tap water?", "medicine"),
    ("Is the number 91 prime?", "math"),
    ("What do the numbers on a tyre mean?", "general"),
    ("Then and now: how has the price of bread changed since 1950?", "economics"),
)

# One question with code inline: semicolons, "?" and "and" inside backticks split nothing.
INLINE_CODE: tuple[tuple[str, str], ...] = (
    ("In Python, why does `x = [1, 2]; y = x; y.append(3)` change x too?", "computing"),
    ("Why does `for (i = 0; i < n; i++);` in C never run the loop body?", "computing"),
    ("What does `git reset --hard HEAD~1` do, and is it safe?", "computing"),
    ("Why does `0.1 + 0.2 == 0.3` print False in JavaScript?", "computing"),
    ("What is the difference between `==` and `===`?", "computing"),
    ("why does `SELECT * FROM a, b;` return so many rows", "computing"),
    ("Is `x ?? y` the same as `x || y` in TypeScript?", "computing"),
    ("In bash, what does `cmd1 && cmd2 || cmd3` do if cmd2 fails?", "computing"),
    ("What does `a, b = b, a` do in Python; is it a swap?", "computing"),
    ("Why is `print(f'{x=}')` a syntax error on Python 3.7?", "computing"),
    ("Can I use `const` and `let` in the same `for` loop header?", "computing"),
    ("Why does `ls *.txt | wc -l` say 0 when there are files?", "computing"),
)

# Links before an ask that needs the one before it (train only).
_DEPENDENT_LINKS = (
    "Based on that, ",
    "Given that, ",
    "Using that, ",
    "With that answer, ",
    "And then ",
    "After that ",
    "From there, ",
    "Once you have that, ",
    "ok and ",
    "so ",
    "",
    "",
)
# Links before an ask that needs nothing (train only).
_SEPARATE_LINKS = (
    "Side question: ",
    "Unrelated: ",
    "PS ",
    "P.S. ",
    "One more: ",
    "Random but ",
    "Last thing, ",
    "Oh also ",
    "Another thing: ",
    "Totally different question, ",
    "Also curious: ",
    "Oh, and before I forget, ",
    "ALSO ",
    "and ",
    "also ",
    "",
)


def dependent_link(rng: random.Random) -> str:
    return rng.choice(_DEPENDENT_LINKS)


def separate_link(rng: random.Random) -> str:
    return rng.choice(_SEPARATE_LINKS)


def _part(index: int, text: str) -> Piece:
    return Piece(text, "part", index)


def _chat(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
    """'so whats x and who is y and how does z work lol': one lowercase run-on message."""
    pieces: list[Piece] = []
    for index, draft in enumerate(drafts):
        text = strip_end(lower_first(draft.sentence))
        if rng.random() < 0.7:
            text = text.lower()
        if index:
            if draft.depends_on:
                joint = rng.choice([" and ", " and then ", ", ", " then ", " and also ", " & "])
            else:
                joint = rng.choice([" and ", " and also ", " also ", ", ", " + ", " n ", " plus "])
            pieces.append(Piece(joint))
        pieces.append(_part(index, text))
    if rng.random() < 0.5:
        pieces.append(Piece(rng.choice(["?", "??", " lol", " thx", " pls", " tia", "!"])))
    return pieces


def _commas(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
    """'what is x, who is y, how does z work?': commas and nothing else."""
    pieces: list[Piece] = []
    last = len(drafts) - 1
    for index, draft in enumerate(drafts):
        text = strip_end(draft.sentence) if index < last else draft.sentence
        if index:
            pieces.append(Piece(rng.choice([", ", ", ", " , ", ",  "])))
            text = lower_first(text)
        pieces.append(_part(index, text))
    return pieces


def _tight(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
    """'What is x?Who is y?': no space after the end marks (pasted or typed on a phone)."""
    pieces: list[Piece] = []
    for index, draft in enumerate(drafts):
        if index:
            pieces.append(Piece(rng.choice(["", "", " ", "  "])))
        text = draft.sentence
        if text[-1] not in "?.!":
            text += "?"
        pieces.append(_part(index, text))
    return pieces


def _email(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
    """A short e-mail: salutation, a line of context, the asks (numbered or not), sign-off."""
    pieces = [Piece(rng.choice(["Hi team,\n\n", "Dear Sir or Madam,\n\n", "Hello,\n\n", "Hi,\n"]))]
    if rng.random() < 0.6:
        pieces.append(
            Piece(
                rng.choice(
                    [
                        "I'm preparing a report and have a few questions.",
                        "I am writing with some questions I could not resolve myself.",
                        "Hope you are well. I was asked to look into the following.",
                    ]
                )
                + "\n\n",
                "context" if rng.random() < 0.3 else "drop",
            )
        )
    numbered = rng.random() < 0.5
    for index, draft in enumerate(drafts):
        if index:
            pieces.append(Piece(rng.choice(["\n", "\n\n"])))
        if numbered:
            pieces.append(Piece(f"{index + 1}. "))
        pieces.append(_part(index, draft.sentence))
    pieces.append(
        Piece(rng.choice(["\n\nBest regards,\nSam", "\n\nThanks,\nAlex", "\n\nKind regards", ""]))
    )
    return pieces


_MARKERS: tuple[Callable[[int], str], ...] = (
    lambda i: f"**{i + 1}.** ",
    lambda i: f"### Question {i + 1}\n",
    lambda i: f"{i + 1}️⃣ ",
    lambda i: "👉 ",
    lambda i: "✅ ",
    lambda i: f"{i + 1}- ",
    lambda i: f"{i + 1}: ",
    lambda i: "Q: ",
    lambda i: f"({i + 1} ",
    lambda i: "~ ",
    lambda i: "+ ",
    lambda i: f"{'abcdefgh'[i]}. ",
    lambda i: f"{'ABCDEFGH'[i]}) ",
    lambda i: f"Task {i + 1}: ",
    lambda i: f"#{i + 1}) ",
)


def _marked(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
    marker = rng.choice(_MARKERS)
    separator = rng.choice(["\n", "\n", " ", "\n\n"])
    pieces: list[Piece] = []
    if rng.random() < 0.3:
        pieces.append(Piece(rng.choice(["Homework help:", "Questions", "Help pls", "Hey!"])))
        pieces.append(Piece(separator))
    for index, draft in enumerate(drafts):
        if index:
            pieces.append(Piece(separator))
        pieces.append(Piece(marker(index)))
        text = draft.sentence if rng.random() < 0.7 else strip_end(lower_first(draft.sentence))
        pieces.append(_part(index, text))
    return pieces


def _reported(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
    """'My son asked why X. Then my daughter wanted to know how Y.': questions reported by
    someone else, each with its lead-in."""
    people = ["my son", "my daughter", "a student", "my boss", "my friend", "a customer"]
    rng.shuffle(people)
    pieces: list[Piece] = []
    for index, draft in enumerate(drafts):
        if index:
            pieces.append(Piece(rng.choice([" ", " Then ", " And ", " Also "])))
        bare = strip_end(lower_first(draft.sentence))
        if draft.depends_on:
            lead = rng.choice(["and wanted to know ", "then asked ", "and also "])
            text = f"{lead}{bare}" if rng.random() < 0.5 else f"{bare}?"
        else:
            who = people[index % len(people)]
            verb = rng.choice(["asked me", "wants to know", "was asking", "asked"])
            text = f"{who} {verb} {bare}{rng.choice(['.', '?', ''])}"
            text = text[0].upper() + text[1:] if index == 0 or rng.random() < 0.5 else text
        pieces.append(_part(index, text))
    return pieces


def _ask_then_context(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
    """Asks separated by newlines with a trailing aside each ('(for a school project)')."""
    pieces: list[Piece] = []
    for index, draft in enumerate(drafts):
        if index:
            pieces.append(Piece(rng.choice(["\n", " ", "\n\n"])))
        pieces.append(_part(index, draft.sentence))
        if rng.random() < 0.35:
            pieces.append(
                Piece(
                    rng.choice(
                        [
                            " (asking for a friend)",
                            " (for a school project)",
                            " — no rush",
                            " (just curious)",
                            " (sorry if this is basic)",
                        ]
                    )
                )
            )
    return pieces


def _separated(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
    """Sentences with train-only links between them."""
    pieces: list[Piece] = []
    for index, draft in enumerate(drafts):
        text = draft.sentence
        if index:
            pieces.append(Piece(rng.choice([" ", " ", "\n", "  "])))
            link = dependent_link(rng) if draft.depends_on else separate_link(rng)
            if link:
                pieces.append(Piece(link))
                text = lower_first(text)
        pieces.append(_part(index, text))
    return pieces


EXTRA_JOINERS: tuple[Family, ...] = (
    Family("chat-run-on", "train", _chat, max_parts=4),
    Family("commas-only", "train", _commas, max_parts=4),
    Family("no-space", "train", _tight),
    Family("email", "train", _email),
    Family("markers-misc", "train", _marked),
    Family("reported", "train", _reported, max_parts=3),
    Family("asides", "train", _ask_then_context),
    Family("links-misc", "train", _separated),
)

_TEXT_SPEAK = {
    "you": "u",
    "your": "ur",
    "are": "r",
    "please": "pls",
    "because": "bc",
    "what": "wat",
    "what's": "whats",
    "don't": "dont",
    "i'm": "im",
    "to": "2",
    "for": "4",
    "people": "ppl",
    "thanks": "thx",
    "really": "rly",
}


def roughen(pieces: Sequence[Piece], rng: random.Random) -> tuple[list[Piece], list[str]]:
    """One or two kinds of noise over a whole message; returns the pieces and their names."""
    kinds = rng.sample(
        ["no-marks", "double-marks", "no-space", "text-speak", "shout", "spaces", "lower"],
        rng.choice([1, 1, 2]),
    )
    out = list(pieces)
    for kind in kinds:
        noisy = []
        for index, piece in enumerate(out):
            after_end = index > 0 and out[index - 1].text.endswith(("?", ".", "!"))
            if kind == "no-space" and not after_end:
                noisy.append(piece)
            else:
                noisy.append(Piece(_noise(kind, piece, rng), piece.role, piece.part))
        out = noisy
    return [p for p in out if p.text or p.role == "drop"], [f"noise-{k}" for k in kinds]


def _noise(kind: str, piece: Piece, rng: random.Random) -> str:
    text = piece.text
    if kind == "no-marks" and piece.role == "part" and rng.random() < 0.7:
        return text.rstrip("?.!") if len(text.rstrip("?.!")) > 2 else text
    if kind == "double-marks" and text.endswith("?"):
        return text + rng.choice(["?", "??", "!?"])
    if kind == "no-space" and piece.role == "drop" and text == " ":
        return ""
    if kind == "text-speak":

        def swap(match: re.Match[str]) -> str:
            word = match.group(0)
            new = _TEXT_SPEAK.get(word.lower())
            return new if new is not None and rng.random() < 0.6 else word

        return re.sub(r"[A-Za-z']+", swap, text)
    if kind == "shout" and piece.role == "part" and rng.random() < 0.3:
        words = text.split(" ")
        index = rng.randrange(len(words))
        words[index] = words[index].upper()
        return " ".join(words)
    if kind == "spaces" and " " in text and rng.random() < 0.5:
        return re.sub(" ", lambda m: "  " if rng.random() < 0.15 else " ", text)
    if kind == "lower":
        return text.lower()
    return text


# -- what people write around their questions ------------------------------------------------

_IMPERATIVE_START = frozenset(
    (  # noqa: SIM905 - a word list reads better as text
        "calculate find assume let suppose determine compute estimate explain describe identify "
        "consider give list name show prove evaluate select choose use write state solve "
        "simplify express answer complete read refer define compare discuss"
    ).split()
)


@functools.cache
def mmlu_statements() -> tuple[str, ...]:
    """Declarative sentences from MMLU stems (first-person scenarios, case facts, word
    problems' givens): what people write before they ask, far more varied than a template.
    They ask nothing, so as context they teach the segmenter that a sentence with numbers,
    names and 'and' is not a question."""
    from compllm.mmlu import load_mmlu

    sentences: list[str] = []
    for q in load_mmlu().questions:
        text = " ".join(q.question.split())
        if "Scenario 1 |" in text:
            pieces = [p.strip() for p in re.split(r"Scenario \d \|", text)[1:]]
        else:
            pieces = [s.strip() for s in re.split(r"(?<=[.!])\s+(?=[A-Z])", text)]
        for sentence in pieces:
            words = sentence.split()
            if (
                sentence.endswith(".")
                and 5 <= len(words) <= 32
                and "_" not in sentence
                and "?" not in sentence
                and '"' not in sentence
                and "following" not in sentence.lower()
                and not sentence.startswith("Statement")
                and words[0].lower().strip(",") not in _IMPERATIVE_START
                and not re.match(r"(Which|What|Who|How|Why|When|Where)\b", sentence)
            ):
                sentences.append(sentence)
    return tuple(dict.fromkeys(sentences))


@functools.cache
def _first_person() -> tuple[str, ...]:
    return tuple(s for s in mmlu_statements() if s.split()[0] in ("I", "My", "We", "Our"))


def statements(rng: random.Random, count: int) -> list[str]:
    """`count` MMLU statements (half of them in the first person), now and then written as
    chat (lower case)."""
    chosen = [
        rng.choice(_first_person() if rng.random() < 0.5 else mmlu_statements())
        for _ in range(count)
    ]
    if rng.random() < 0.25:
        chosen = [s[0].lower() + s[1:] for s in chosen]
    return chosen


_AUDIENCES = ("students", "kids", "team", "book club", "class", "grandma", "newsletter")
_EVENTS = ("trivia night", "the pub quiz", "my exam", "tomorrow's meeting", "a job interview")
_SUBJECTS = ("chemistry", "history", "econ", "biology", "civics", "stats", "geography")
_LEAD_INS = (
    "FAQ for my {audience}:",
    "Quick explainer needed on:",
    "Need a few facts for {event} —",
    "Homework questions ({subject}):",
    "Some things I've been wondering about:",
    "Study guide for {subject}:",
    "Help me with my {subject} homework:",
    "Things to look up before {event}:",
    "gimme:",
    "Explain:",
    "Random questions from my {audience}:",
    "For {event}:",
    "Prepping for {event}, so:",
    "Settle some debates for my {audience} —",
    "My {subject} teacher asked us these:",
    "Can u answer these 4 me:",
    "Looking up a few things for {event}.",
)


def lead_in(rng: random.Random) -> str:
    """A header before a list of asks that names no question itself."""
    return rng.choice(_LEAD_INS).format(
        audience=rng.choice(_AUDIENCES), event=rng.choice(_EVENTS), subject=rng.choice(_SUBJECTS)
    )


def _lead_in_list(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
    """'Need a few facts for trivia night — tallest mountain in Africa? longest river?'."""
    pieces = [Piece(lead_in(rng)), Piece(rng.choice([" ", "\n", "\n\n"]))]
    style = rng.choice(["fragments", "sentences", "lines", "commas"])
    last = len(drafts) - 1
    for index, draft in enumerate(drafts):
        noun = draft.noun_phrase if not draft.depends_on else None
        if style == "fragments" and noun:
            text = noun + rng.choice(["?", "?", ""])
        elif style == "commas" and noun:
            text = noun
        else:
            text = draft.sentence
        if index:
            if style == "lines":
                pieces.append(Piece(rng.choice(["\n", "\n- ", "\n• "])))
            elif style == "commas" and noun:
                pieces.append(Piece(", and " if index == last else ", "))
            else:
                pieces.append(Piece(" "))
        elif style == "lines" and rng.random() < 0.5:
            pieces.append(Piece("- "))
        pieces.append(_part(index, text))
    return pieces


def _fragments(drafts: Sequence[Draft], rng: random.Random) -> list[Piece]:
    """'capital of peru? population of chile? who wrote dune?': noun phrases as questions."""
    pieces: list[Piece] = []
    lower = rng.random() < 0.6
    for index, draft in enumerate(drafts):
        text = (draft.noun_phrase or strip_end(draft.sentence)) + rng.choice(["?", "?", " ?"])
        if lower:
            text = text.lower()
        if index:
            pieces.append(Piece(rng.choice([" ", " ", "\n", "  "])))
        pieces.append(_part(index, text))
    return pieces


EXTRA_JOINERS = (
    *EXTRA_JOINERS,
    Family("lead-in-list", "train", _lead_in_list),
    Family("fragments", "train", _fragments, max_parts=4, noun_phrases=True),
)

# "Who founded Amazon? Where is its headquarters?": the pronoun is the named thing, not the
# person who answers the first question (training only; no dependency).
NAMED_THINGS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Amazon", "company", ("Who founded {n}?", "Who runs {n} today?")),
    ("Microsoft", "company", ("Who founded {n}?", "Who is the CEO of {n}?")),
    ("Nike", "company", ("Who started {n}?", "Who designed the logo of {n}?")),
    ("Wikipedia", "organization", ("Who created {n}?", "Who started {n}?")),
    ("the Red Cross", "organization", ("Who founded {n}?",)),
    ("the Eiffel Tower", "place", ("Who designed {n}?", "Who built {n}?")),
    ("the Statue of Liberty", "place", ("Who designed {n}?", "Who sculpted {n}?")),
    ("the telephone", "thing", ("Who invented {n}?",)),
    ("the World Wide Web", "thing", ("Who invented {n}?",)),
    ("penicillin", "drug", ("Who discovered {n}?",)),
    ("Pride and Prejudice", "book", ("Who wrote {n}?",)),
    ("Don Quixote", "book", ("Who wrote {n}?",)),
    ("Linux", "software", ("Who created {n}?", "Who wrote the first version of {n}?")),
    ("the Nobel Prize", "organization", ("Who established {n}?",)),
    ("Harvard University", "organization", ("Who founded {n}?", "Who is {n} named after?")),
    ("Coca-Cola", "company", ("Who invented {n}?",)),
    ("Japan", "country", ("Who is the prime minister of {n}?", "Who rules {n}?")),
    ("Canada", "country", ("Who is the head of state of {n}?",)),
    ("Chicago", "city", ("Who is the mayor of {n}?", "Who founded {n}?")),
    ("the Great Wall", "place", ("Who built {n}?", "Who ordered {n} built?")),
)

# After a yes/no question: an ask that needs its answer (training only).
IF_SO = (
    "If so, why?",
    "If not, why not?",
    "If so, how long does it take?",
    "If yes, how do I do it?",
    "And if not, what should I do instead?",
    "If so, is it expensive?",
    "If it is, how common is that?",
    "If yes, since when?",
    "If so, by how much?",
    "if so how",
    "If not, what's the alternative?",
)

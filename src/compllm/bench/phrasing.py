"""How the benchmark's composite queries are worded: many styles, none of them a single
template, so that no planner can score well by knowing one pattern.

Written for the benchmark alone: it shares no code or word list with the planner or its
training data, so the benchmark measures how a planner copes with wording it was not built on.

- Multiple-choice questions carry their options in one of three layouts.
- Parallel parts are joined in one of eight styles: numbered, bullets, lettered, prose ("Also,
  ..."), blank lines, chatty, ordinal ("Second question: ..."), headed ("Q2: ...").
- Arithmetic steps are said in many ways ("multiply it by 6", "what is that number times 6?",
  "compute the result x 6", "triple it", "take 25% of it", "reduce it by 10%", "halve it"),
  with pronouns for the previous result, and joined as prose, "take ..., then ...", numbered
  steps, lines, bullets or chat. Every value is an exact integer.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from compllm.mmlu import LETTERS, MMLUQuestion

__all__ = [
    "CHAIN_STYLES",
    "OPTION_LAYOUTS",
    "PARALLEL_STYLES",
    "Step",
    "combine_step",
    "join_branches",
    "join_parallel",
    "join_steps",
    "letter_step",
    "next_step",
    "start_step",
    "with_options",
]

OPTION_LAYOUTS = ("inline", "lines", "sentence")
PARALLEL_STYLES = (
    "numbered",
    "bullets",
    "lettered",
    "prose",
    "lines",
    "chatty",
    "ordinal",
    "headed",
)
CHAIN_STYLES = ("prose", "take-then", "numbered", "lines", "bullets", "chatty")

_ORDINAL_WORDS = ("First", "Second", "Third", "Fourth", "Fifth", "Sixth")
_INTROS = (
    "",
    "Answer these questions.",
    "Please answer the following.",
    "I have a few questions for you.",
    "Can you help me with these?",
    "Quiz time!",
)


def with_options(question: MMLUQuestion, layout: str) -> str:
    """The question followed by its options in one of `OPTION_LAYOUTS`."""
    stem = question.question.strip()
    options = [c.strip().rstrip(".") for c in question.choices]
    letters = LETTERS[: len(options)]
    if layout == "inline":
        return question.as_text()
    if layout == "lines":
        return stem + "\n" + "\n".join(f"{x}) {o}" for x, o in zip(letters, options, strict=True))
    if layout == "sentence":
        listed = [f"{x}) {o}" for x, o in zip(letters, options, strict=True)]
        return f"{stem}\nChoose from {', '.join(listed[:-1])} or {listed[-1]}."
    raise ValueError(f"unknown option layout: {layout}")


def join_parallel(texts: Sequence[str], style: str, rng: random.Random) -> str:
    """Independent questions as one request, in one of `PARALLEL_STYLES`."""
    intro = rng.choice(_INTROS)
    head = f"{intro}\n" if intro else ""
    if style == "numbered":
        close = rng.choice((".", ")"))
        return head + "\n".join(f"{i}{close} {t}" for i, t in enumerate(texts, 1))
    if style == "bullets":
        bullet = rng.choice(("-", "*", "•"))
        return head + "\n".join(f"{bullet} {t}" for t in texts)
    if style == "lettered":
        form = rng.choice(("{x}) {t}", "({x}) {t}"))
        return head + "\n".join(form.format(x="abcdefgh"[i], t=t) for i, t in enumerate(texts))
    if style == "prose":
        joins = ["Also,", "And", "Another one:", "Next:", "Besides that,", "In addition,"]
        rng.shuffle(joins)
        parts = [texts[0], *(f"{joins[i % len(joins)]} {t}" for i, t in enumerate(texts[1:]))]
        return (intro + " " if intro else "") + _separator(texts).join(parts)
    if style == "lines":
        return head + "\n\n".join(texts)
    if style == "chatty":
        opener = rng.choice(
            (
                "Hi! I'm revising for exams and got stuck on a few things.",
                "hey, quick favour: my study group couldn't agree on these",
                "Hello there, could you settle a few questions for me?",
            )
        )
        leads = ["First one:", "Then there's this one:", "Oh, and", "Last one, promise:"]
        said = [f"{leads[min(i, 2) if i < len(texts) - 1 else 3]} {t}" for i, t in enumerate(texts)]
        closer = rng.choice(("Thanks a lot!", "Cheers", "Thank you so much :)"))
        return f"{opener} " + _separator(texts).join(said) + f" {closer}"
    if style == "ordinal":
        form = rng.choice(("{w} question: {t}", "{w}, {t}"))
        return head + "\n".join(form.format(w=_ORDINAL_WORDS[i], t=t) for i, t in enumerate(texts))
    if style == "headed":
        form = rng.choice(("Question {n}: {t}", "Q{n}: {t}", "Part {n} - {t}"))
        return head + "\n".join(form.format(n=i, t=t) for i, t in enumerate(texts, 1))
    raise ValueError(f"unknown parallel style: {style}")


@dataclass(frozen=True)
class Step:
    """One arithmetic part: its wording and its exact value. `noun` is the same quantity as a
    noun phrase ("the product of 23 and 7"), used by "take ..., then ..." chains."""

    text: str
    value: int
    noun: str = ""


_REFERENCES = ("it", "that number", "the result", "this", "the previous answer", "what you got")

_Rule = Callable[[int, random.Random, str], Step | None]


def start_step(rng: random.Random) -> Step:
    """A first step from two numbers: a product, a sum, a difference or a percentage."""
    kind = rng.choice(("mul", "mul", "add", "sub", "pct"))
    if kind == "mul":
        a, b = rng.randint(11, 49), rng.randint(3, 12)
        text = rng.choice(
            (
                f"what is {a} multiplied by {b}?",
                f"compute {a} times {b}",
                f"what's {a} x {b}?",
                f"multiply {a} by {b}",
                f"take {a} and multiply it by {b}",
                f"what is the product of {a} and {b}?",
                f"calculate {a} × {b}",
            )
        )
        return Step(text, a * b, rng.choice((f"{a} times {b}", f"the product of {a} and {b}")))
    if kind == "add":
        a, b = rng.randint(100, 900), rng.randint(12, 99)
        text = rng.choice(
            (f"what is {a} plus {b}?", f"add {a} and {b}", f"what is the sum of {a} and {b}?")
        )
        return Step(text, a + b, rng.choice((f"{a} plus {b}", f"the sum of {a} and {b}")))
    if kind == "sub":
        a, b = rng.randint(200, 900), rng.randint(12, 99)
        text = rng.choice((f"what is {a} minus {b}?", f"subtract {b} from {a}"))
        return Step(text, a - b, f"{a} minus {b}")
    percent = rng.choice((10, 20, 25, 50, 75))
    a = rng.randint(2, 40) * 20  # a multiple of 20: every listed percentage of it is whole
    text = rng.choice((f"what is {percent}% of {a}?", f"find {percent} percent of {a}"))
    return Step(text, a * percent // 100, f"{percent}% of {a}")


def _add(value: int, rng: random.Random, ref: str) -> Step:
    n = rng.randint(5, 99)
    text = rng.choice(
        (f"add {n} to {ref}", f"increase {ref} by {n}", f"what is {ref} plus {n}?", f"add {n}")
    )
    return Step(text, value + n)


def _subtract(value: int, rng: random.Random, ref: str) -> Step | None:
    if value <= 6:
        return None
    n = rng.randint(2, min(value - 1, 99))
    text = rng.choice(
        (
            f"subtract {n} from {ref}",
            f"take {n} away from {ref}",
            f"decrease {ref} by {n}",
            f"what is {ref} minus {n}?",
        )
    )
    return Step(text, value - n)


def _multiply(value: int, rng: random.Random, ref: str) -> Step | None:
    if value > 5000:
        return None
    n = rng.randint(2, 9)
    named = {2: f"double {ref}", 3: f"triple {ref}"}
    text = rng.choice(
        (
            f"multiply {ref} by {n}",
            f"what is {ref} times {n}?",
            f"compute {ref} x {n}",
            named.get(n, f"multiply {ref} by {n}"),
        )
    )
    return Step(text, value * n)


def _divide(value: int, rng: random.Random, ref: str) -> Step | None:
    divisors = [n for n in (2, 3, 4, 5) if value % n == 0 and value > n]
    if not divisors:
        return None
    n = rng.choice(divisors)
    text = rng.choice(
        (
            f"divide {ref} by {n}",
            f"what is {ref} divided by {n}?",
            f"split {ref} into {n} equal parts: how big is each part?",
            f"halve {ref}" if n == 2 else f"divide {ref} by {n}",
        )
    )
    return Step(text, value // n)


def _percent(value: int, rng: random.Random, ref: str) -> Step | None:
    whole = [p for p in (10, 20, 25, 50, 75) if value * p % 100 == 0]
    if not whole:
        return None
    p = rng.choice(whole)
    kind = rng.choice(("of", "up", "down"))
    if kind == "of":
        text = rng.choice((f"take {p}% of {ref}", f"what is {p} percent of {ref}?"))
        return Step(text, value * p // 100)
    if kind == "up":
        text = rng.choice((f"increase {ref} by {p}%", f"raise {ref} by {p} percent"))
        return Step(text, value + value * p // 100)
    text = rng.choice((f"reduce {ref} by {p}%", f"lower {ref} by {p} percent"))
    return Step(text, value - value * p // 100)


_RULES: tuple[_Rule, ...] = (_add, _subtract, _multiply, _divide, _percent)


def next_step(value: int, rng: random.Random) -> Step:
    """A step on the previous result, referred to by a pronoun or a noun ("that number")."""
    ref = rng.choice(_REFERENCES)
    rules = list(_RULES)
    rng.shuffle(rules)
    for rule in rules:
        step = rule(value, rng, ref)
        if step is not None:
            return step
    return _add(value, rng, ref)


def letter_step(answer_index: int, rng: random.Random) -> Step:
    """A step that turns the letter answering an earlier question into a number (A=1 ...)."""
    position = answer_index + 1
    code = "A=1, B=2, C=3, D=4"
    n = rng.randint(3, 12)
    if rng.random() < 0.5:
        text = rng.choice(
            (
                f"turn the letter of the correct answer above into a number ({code}) and "
                f"multiply it by {n}",
                f"with {code}, what is the number of the first question's answer times {n}?",
            )
        )
        return Step(text, position * n)
    text = rng.choice(
        (
            f"take the number of the right option of that question ({code}) and add {n}",
            f"using {code} for its answer, add {n} to that number",
        )
    )
    return Step(text, position + n)


def combine_step(first: int, second: int, rng: random.Random) -> Step:
    """A step on two earlier results."""
    if rng.random() < 0.5 or first <= second:
        text = rng.choice(
            (
                "add the two results together",
                "what is the sum of both answers?",
                "add up those two numbers",
            )
        )
        return Step(text, first + second)
    text = rng.choice(
        ("subtract the second result from the first", "how much bigger is the first result?")
    )
    return Step(text, first - second)


_THEN = ("Then", "After that,", "Next,", "Now", "And then")
_ONCE = ("Once you have that,", "then", "and after that", "and then")


def join_steps(steps: Sequence[str], style: str, rng: random.Random) -> str:
    """Steps, each on the one before, as one request in one of `CHAIN_STYLES`. For
    "take-then" the first step is worded "take <noun phrase>"."""
    if style == "take-then":
        return f"{_sentence(steps[0])}, then " + ", then ".join(steps[1:]) + "."
    if style == "prose":
        said = [_sentence(steps[0], end=True)]
        for index, step in enumerate(steps[1:]):
            lead = _THEN[rng.randrange(len(_THEN))] if index < len(steps) - 2 else "Finally,"
            said.append(f"{lead} {_sentence(step, end=True, capital=False)}")
        return _separator(steps).join(said)
    if style == "chatty":
        opener = rng.choice(("Quick maths help please!", "ok so I need a hand with this:"))
        middle = [
            f"{_ONCE[min(i, len(_ONCE) - 1)]} {_sentence(s, end=True, capital=False)}"
            for i, s in enumerate(steps[1:])
        ]
        space = _separator(steps)
        return f"{opener} {_sentence(steps[0], end=True)}{space}" + space.join(middle) + " Thanks!"
    return _listed(steps, style)


def join_branches(first: str, second: str, last: str, style: str, rng: random.Random) -> str:
    """Two independent steps and one on both of them, in one of `CHAIN_STYLES` (not
    "take-then")."""
    if style == "prose":
        also = rng.choice(("Separately,", "Also,", "Independently of that,"))
        return (
            f"{_sentence(first, end=True)} {also} {_sentence(second, end=True, capital=False)} "
            f"Finally, {_sentence(last, end=True, capital=False)}"
        )
    if style == "chatty":
        return (
            f"Two quick sums and then one more. {_sentence(first, end=True)} And "
            f"{_sentence(second, end=True, capital=False)} With both of those, "
            f"{_sentence(last, end=True, capital=False)} Thanks!"
        )
    return _listed([first, second, last], style)


def _listed(steps: Sequence[str], style: str) -> str:
    if style == "numbered":
        return "\n".join(f"{i}. {_sentence(s, end=True)}" for i, s in enumerate(steps, 1))
    if style == "lines":
        return "\n".join(_sentence(s, end=True) for s in steps)
    if style == "bullets":
        return "Do this:\n" + "\n".join(f"- {_sentence(s, end=True)}" for s in steps)
    raise ValueError(f"unknown chain style: {style}")


def _separator(texts: Sequence[str]) -> str:
    """A space between sentences, or a new line after a question whose options are listed on
    lines of their own (a sentence run on after "D) ..." would read as part of the option)."""
    return "\n" if any("\n" in t for t in texts) else " "


def _sentence(text: str, *, end: bool = False, capital: bool = True) -> str:
    text = text[0].upper() + text[1:] if capital else text
    if end and text[-1] not in ".?!" and "\n" not in text:
        text += "."
    return text

"""The corpus's building blocks: questions by topic (questions.yaml), follow-up questions
by the type of answer they refer to, and the words that refer to an earlier answer.

Referring expressions come in two sets, `train` and `heldout`: the held-out evaluation uses
ways of pointing back ("this value", "they", "the same person", "from step one") that no
training example uses.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

__all__ = [
    "FOLLOW_UPS",
    "Ask",
    "Bank",
    "Find",
    "FollowUp",
    "Named",
    "Topic",
    "Value",
    "entity_slots",
    "load_bank",
    "number_reference",
    "parse_follow_ups",
]

Split = Literal["train", "heldout"]
Value = Literal["number", "year", "temperature"]
_VALUES = ("number", "year", "temperature")
BANK_FILE = Path(__file__).with_name("questions.yaml")


@dataclass(frozen=True)
class Ask:
    """A standalone question, with the forms a list item or a request would use."""

    question: str
    topic: str
    expert: str
    noun_phrase: str | None = None
    imperative: str | None = None
    value: Value | None = None  # what kind of value answers it, when arithmetic may follow


@dataclass(frozen=True)
class Find:
    """A question whose answer is an entity of `type` ("Who painted X?" -> a person)."""

    question: str
    topic: str
    expert: str
    type: str
    noun: str  # how a follow-up may name the answer: "that painter"


@dataclass(frozen=True)
class Named:
    name: str
    type: str
    topic: str
    expert: str


@dataclass(frozen=True)
class Topic:
    name: str
    expert: str
    split: Split
    asks: tuple[Ask, ...]
    finds: tuple[Find, ...]
    named: tuple[Named, ...]
    context: tuple[str, ...]
    singles: tuple[str, ...]


@dataclass(frozen=True)
class Bank:
    topics: tuple[Topic, ...]

    def split(self, split: Split) -> tuple[Topic, ...]:
        return tuple(t for t in self.topics if t.split == split)


@dataclass(frozen=True)
class FollowUp:
    """A question about an earlier answer; `result` is the type of its own answer (so a
    chain can go on from it), `expert` the domain that answers it ("" = the topic's)."""

    template: str
    expert: str = ""
    result: str | None = None


def _follow(lines: str) -> tuple[FollowUp, ...]:
    items = []
    for line in lines.strip().splitlines():
        text, _, tail = line.strip().partition(" @")
        result, _, expert = tail.partition(" ")
        result = result.strip()
        items.append(
            FollowUp(text.strip(), expert.strip(), result if result not in ("", "-") else None)
        )
    return tuple(items)


parse_follow_ups = _follow

# Slots: {he} {his} {him} for people, {it} {its} {there} for things and places, {that} for
# a number. "@type expert" after a template: the answer's type and the expert (either may
# be "-" / omitted).
FOLLOW_UPS: dict[str, tuple[FollowUp, ...]] = {
    "person": _follow("""
        When was {he} born? @year humanities
        Where was {he} born? @city humanities
        When did {he} die? @year humanities
        What is {he} best known for? @- humanities
        Who was {his} teacher? @person humanities
        Which country was {he} from? @country social-science
        How old was {he} when {he} died? @number humanities
        What else is {he} famous for? @- humanities
        Did {he} ever win a Nobel Prize? @- humanities
        Who influenced {him} the most? @person humanities
        What was {his} most important work? @- humanities
        Where did {he} study? @- humanities
        Who did {he} marry? @person humanities
        What year did {he} retire? @year humanities
    """),
    "country": _follow("""
        What is {its} capital? @city social-science
        What is the official language of {it}? @- social-science
        What is {its} population? @number social-science
        What currency does {it} use? @- economics
        Who is the head of state of {it}? @person social-science
        What is {its} GDP? @number economics
        When did {it} become independent? @year humanities
        What is the highest mountain in {it}? @mountain social-science
        What is the weather like {there} in July? @- general
    """),
    "city": _follow("""
        What is {its} population? @number social-science
        Which country is {it} in? @country social-science
        What river runs through {it}? @river social-science
        What is the weather like {there} in winter? @- general
        What is the best museum {there}? @museum general
        When was {it} founded? @year humanities
    """),
    "element": _follow("""
        What is {its} melting point? @temperature science
        Who discovered {it}? @person science
        What is {its} atomic number? @number science
        What is {it} used for? @- science
        Is {it} a metal? @- science
        How common is {it} in the Earth's crust? @- science
    """),
    "planet": _follow("""
        How long is a day on {it}? @number science
        How many moons does {it} have? @number science
        What is {its} atmosphere made of? @- science
        How far is {it} from the Sun? @number science
        What is the surface temperature {there}? @temperature science
    """),
    "mountain": _follow("""
        How tall is {it}? @number social-science
        Who first climbed {it}? @person humanities
        Which country is {it} in? @country social-science
    """),
    "river": _follow("""
        How long is {it}? @number social-science
        Which sea does {it} flow into? @- social-science
        Which countries does {it} pass through? @- social-science
    """),
    "animal": _follow("""
        How long does {it} live? @number science
        What does {it} eat? @- science
        Is {it} endangered? @- science
        How fast can {it} run? @number science
        Where does {it} live in the wild? @- science
    """),
    "organ": _follow("""
        What happens if {it} stops working? @- medicine
        Which diseases affect {it}? @disease medicine
        How much does {it} weigh? @number medicine
    """),
    "disease": _follow("""
        How is {it} treated? @- medicine
        What are {its} symptoms? @- medicine
        Is there a vaccine for {it}? @- medicine
        How many people does {it} affect each year? @number medicine
        How does {it} spread? @- medicine
    """),
    "drug": _follow("""
        What are {its} side effects? @- medicine
        How does {it} work? @- medicine
        What is the usual daily dose of {it}? @number medicine
        Can {it} be taken with alcohol? @- medicine
    """),
    "company": _follow("""
        Who founded {it}? @person economics
        When was {it} founded? @year economics
        What was {its} revenue last year? @number economics
        Where is {its} headquarters? @city economics
        Who is {its} current CEO? @person economics
    """),
    "book": _follow("""
        Who wrote {it}? @person humanities
        When was {it} published? @year humanities
        What is {it} about? @- humanities
    """),
    "language": _follow("""
        What year was {its} first release? @year computing
        What is {it} mostly used for? @- computing
        Who maintains {it} today? @- computing
        How many people use {it}? @number computing
    """),
    "year": _follow("""
        How many years ago was {that} from 2020? @number calculator
        Who was the US president in {that}? @person humanities
        What else happened in {that}? @- humanities
        How many years is {that} after 1900? @number calculator
    """),
    "temperature": _follow("""
        Convert {that} to Fahrenheit. @temperature calculator
        What is {that} in Kelvin? @number calculator
        Is {that} hotter than the boiling point of water? @- science
    """),
    "thing": _follow("""
        What is {it} known for? @- -
        Why is {it} important? @- -
        When was {it} first described? @year -
        Where is {it} found? @- -
        How does {it} work? @- -
        Who first studied {it}? @person -
    """),
}
for _alias, _base in {
    "star": "planet",
    "virus": "disease",
    "vitamin": "drug",
    "hormone": "drug",
    "software": "language",
    "band": "company",
    "organization": "company",
    "agency": "company",
    "place": "mountain",
    "bone": "organ",
}.items():
    FOLLOW_UPS[_alias] = FOLLOW_UPS[_base]

# Person pronouns by gender; "their"/"them" are held out (a subject "they" would need
# the verb changed, so held-out subjects are "this person" and the like).
_PERSON = {"he": ("he", "his", "him"), "she": ("she", "her", "her")}


def entity_slots(entity_type: str, noun: str, split: Split, rng: random.Random) -> dict[str, str]:
    """Fillers for a follow-up's slots that point at an earlier answer of `entity_type`."""
    demonstrative = {"train": ("that", "the"), "heldout": ("this", "the same")}[split]
    if entity_type == "person":
        if split == "heldout":
            name = f"{rng.choice(demonstrative)} {rng.choice([noun, 'person'])}"
            return {"he": name, "his": "their", "him": "them"}
        he, his, him = _PERSON[rng.choice(["he", "she"])]
        if rng.random() < 0.3:  # "that painter" instead of a pronoun
            name = f"{rng.choice(demonstrative)} {noun}"
            return {"he": name, "his": f"{name}'s", "him": name}
        return {"he": he, "his": his, "him": him}
    if rng.random() < 0.45:
        name = f"{rng.choice(demonstrative)} {noun}"
        return {"it": name, "its": f"{name}'s", "there": f"in {name}"}
    there = "there" if split == "train" else f"in {rng.choice(demonstrative)} {noun}"
    return {"it": "it", "its": "its", "there": there}


_NUMBER_REFERENCES: dict[str, tuple[str, ...]] = {
    "train": (
        "that",
        "it",
        "that result",
        "the result",
        "that number",
        "the answer",
        "that value",
        "the last answer",
        "that figure",
    ),
    "heldout": ("this value", "what you got", "the previous answer", "that amount"),
}


def number_reference(split: Split, rng: random.Random) -> str:
    return rng.choice(_NUMBER_REFERENCES[split])


@functools.cache
def load_bank(path: Path = BANK_FILE) -> Bank:
    """The question bank (parsed once per process)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    singles = data.get("singles") or {}
    topics = []
    for name, raw in data["topics"].items():
        expert = raw["expert"]
        topics.append(
            Topic(
                name=name,
                expert=expert,
                split=raw["split"],
                asks=tuple(_ask(line, name, expert) for line in raw.get("ask") or []),
                finds=tuple(_find(line, name, expert) for line in raw.get("find") or []),
                named=tuple(_named(line, name, expert) for line in raw.get("named") or []),
                context=tuple(raw.get("context") or []),
                singles=tuple(singles.get(name) or []),
            )
        )
    return Bank(tuple(topics))


def _ask(line: str, topic: str, expert: str) -> Ask:
    fields = [f.strip() for f in line.split(" | ")]
    question, value = fields[0], None
    for candidate in _VALUES:
        marker = f" @{candidate}"
        if question.endswith(marker):
            question, value = question[: -len(marker)], candidate
    return Ask(
        question=question,
        topic=topic,
        expert=expert,
        noun_phrase=fields[1] if len(fields) > 1 and fields[1] else None,
        imperative=fields[2] if len(fields) > 2 and fields[2] else None,
        value=value,  # type: ignore[arg-type]
    )


def _find(line: str, topic: str, expert: str) -> Find:
    question, _, tag = line.rpartition(" @")
    entity_type, _, noun = tag.partition(":")
    default_noun = {"person": "person", "element": "element"}.get(entity_type, entity_type)
    return Find(question.strip(), topic, expert, entity_type, noun or default_noun)


def _named(line: str, topic: str, expert: str) -> Named:
    name, _, entity_type = line.rpartition(" @")
    return Named(name.strip(), entity_type.strip(), topic, expert)

"""Multi-expert composite queries in the spirit of the paper's MultiExpertQA.

- *parallel*: 2-4 MMLU questions from different domains, one numbered query; each part is
  scored on its own.
- *dependent*: chains whose later parts need an earlier part's answer, with exactly checkable
  answers: arithmetic chains, and chains that start with an MMLU question and compute with the
  number of its correct option (a cross-domain dependency).

Every item carries its gold plan (parts, dependencies, domains), so the oracle system and the
plan-quality metric need nothing else. Same questions and seed, same suite.
"""

from __future__ import annotations

import operator
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from compllm.mmlu import MMLUQuestion, by_domain
from compllm.plan import Plan, SubQuery

__all__ = ["CompositeItem", "Part", "build_suite", "read_suite", "write_suite"]


class Part(BaseModel):
    """One gold part: its question as a sub-query, and how to check an answer to it."""

    model_config = ConfigDict(frozen=True)

    id: str
    question: str
    kind: Literal["choice", "number"]
    answer: str  # the option letter, or the number
    choices: tuple[str, ...] = ()
    domain: str  # the expert that should answer it
    subject: str = ""
    depends_on: tuple[str, ...] = ()


class CompositeItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    kind: Literal["parallel", "dependent"]
    query: str
    parts: tuple[Part, ...]

    def gold_plan(self) -> Plan:
        return Plan.build(
            [
                SubQuery(id=p.id, question=p.question, depends_on=p.depends_on, expert=p.domain)
                for p in self.parts
            ]
        )


def build_suite(
    questions: Sequence[MMLUQuestion],
    *,
    parallel: int,
    dependent: int,
    seed: int = 0,
    exclude_domains: Sequence[str] = ("general",),
) -> list[CompositeItem]:
    """`parallel` + `dependent` items, the same for the same questions and seed."""
    rng = random.Random(seed)
    pools = {
        domain: sorted(qs, key=lambda q: q.key)
        for domain, qs in by_domain(questions).items()
        if domain not in exclude_domains
    }
    if len(pools) < 2:
        raise ValueError("need questions from at least two domains")
    used: set[str] = set()

    def draw(domain: str) -> MMLUQuestion:
        fresh = [q for q in pools[domain] if q.key not in used] or pools[domain]
        question = rng.choice(fresh)
        used.add(question.key)
        return question

    items = []
    for index in range(parallel):
        domains = rng.sample(sorted(pools), k=min(rng.randint(2, 4), len(pools)))
        items.append(_parallel(f"p{index + 1:03d}", [draw(d) for d in domains]))
    for index in range(dependent):
        item_id = f"d{index + 1:03d}"
        if index % 2 == 0:
            items.append(_arithmetic_chain(item_id, rng))
        else:
            items.append(_choice_then_arithmetic(item_id, draw(rng.choice(sorted(pools))), rng))
    return items


def _choice_part(part_id: str, question: MMLUQuestion) -> Part:
    return Part(
        id=part_id,
        question=question.as_text(),
        kind="choice",
        answer=question.answer_letter,
        choices=question.choices,
        domain=question.domain or "general",
        subject=question.subject,
    )


def _parallel(item_id: str, questions: list[MMLUQuestion]) -> CompositeItem:
    parts = tuple(_choice_part(f"q{i + 1}", q) for i, q in enumerate(questions))
    lines = [f"{i + 1}. {p.question}" for i, p in enumerate(parts)]
    query = "Answer each of these questions with the letter of the correct option.\n" + "\n".join(
        lines
    )
    return CompositeItem(id=item_id, kind="parallel", query=query, parts=parts)


_STEPS: tuple[tuple[str, Callable[[int, int], int]], ...] = (
    ("add {n} to that result", operator.add),
    ("subtract {n} from that result", operator.sub),
    ("multiply that result by {n}", operator.mul),
)


def _arithmetic_chain(item_id: str, rng: random.Random) -> CompositeItem:
    a, b = rng.randint(11, 49), rng.randint(3, 12)
    value = a * b
    first = f"What is {a} multiplied by {b}?"
    parts = [Part(id="q1", question=first, kind="number", answer=str(value), domain="math")]
    sentences = [first]
    for step in range(rng.randint(1, 2)):
        template, apply = _STEPS[rng.randrange(len(_STEPS))]
        n = rng.randint(2, 9) if "multiply" in template else rng.randint(5, 99)
        value = apply(value, n)
        text = template.format(n=n)
        sentences.append(f"Then {text}.")
        parts.append(
            Part(
                id=f"q{step + 2}",
                question=f"{text[0].upper()}{text[1:]}.",
                kind="number",
                answer=str(value),
                domain="math",
                depends_on=(f"q{step + 1}",),
            )
        )
    return CompositeItem(
        id=item_id, kind="dependent", query=" ".join(sentences), parts=tuple(parts)
    )


def _choice_then_arithmetic(
    item_id: str, question: MMLUQuestion, rng: random.Random
) -> CompositeItem:
    first = _choice_part("q1", question)
    n = rng.randint(3, 12)
    position = question.answer + 1
    follow = (
        "Take the position of the correct option of question 1 in the alphabet "
        f"(A=1, B=2, C=3, D=4) and multiply it by {n}."
    )
    second = Part(
        id="q2",
        question=follow,
        kind="number",
        answer=str(position * n),
        domain="math",
        depends_on=("q1",),
    )
    query = f"1. {question.as_text()}\n2. Then {follow[0].lower()}{follow[1:]}"
    return CompositeItem(id=item_id, kind="dependent", query=query, parts=(first, second))


def write_suite(items: Sequence[CompositeItem], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(item.model_dump_json() + "\n" for item in items), encoding="utf-8")


def read_suite(path: Path) -> list[CompositeItem]:
    lines = path.read_text(encoding="utf-8").split("\n")
    return [CompositeItem.model_validate_json(line) for line in lines if line.strip()]

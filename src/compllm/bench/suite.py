"""Multi-expert composite queries in the spirit of the paper's MultiExpertQA.

- *parallel*: 2-4 MMLU questions from different domains in one request; each part is scored
  on its own.
- *dependent*, three families with exactly checkable answers:
  - `chain`: arithmetic on the previous result, 2-4 steps;
  - `letter`: an MMLU question, then arithmetic on the number of its correct option (A=1 ...),
    so an expert's answer must reach another expert (a cross-domain dependency);
  - `branches`: two independent calculations, then one on both results (a DAG, not a chain).

Wording comes from `compllm.bench.phrasing` (many styles per family, rotated so that each
appears about equally often). Questions come from the caller, normally the held-out part of
the MMLU split. Every item carries its gold plan (parts, dependencies, domains), so the oracle
system and the plan-quality metric need nothing else. Same questions and seed, same suite.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from compllm.bench import phrasing
from compllm.mmlu import MMLUQuestion, by_domain
from compllm.plan import Plan, SubQuery

__all__ = ["CompositeItem", "Part", "build_suite", "read_suite", "write_suite"]

# Long passages (professional law, history sources) would make a 4-part query longer than a
# small model's useful context; they are left out of composite queries.
MAX_QUESTION_CHARS = 700


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
    style: str = ""  # how the query is worded: "<family>/<style>"

    @property
    def lettered(self) -> bool:
        """Whether the query labels its parts a), b), ... (replies may too)."""
        return self.style.endswith("/lettered")

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
    max_question_chars: int = MAX_QUESTION_CHARS,
) -> list[CompositeItem]:
    """`parallel` + `dependent` items, the same for the same questions and seed."""
    rng = random.Random(seed)
    pools = {
        domain: sorted(
            (q for q in qs if len(q.as_text()) <= max_question_chars), key=lambda q: q.key
        )
        for domain, qs in by_domain(questions).items()
        if domain not in exclude_domains
    }
    pools = {domain: qs for domain, qs in pools.items() if qs}
    if len(pools) < 2:
        raise ValueError("need questions from at least two domains")
    used: set[str] = set()

    def draw(domain: str) -> MMLUQuestion:
        fresh = [q for q in pools[domain] if q.key not in used] or pools[domain]
        question = rng.choice(fresh)
        used.add(question.key)
        return question

    parallel_styles = _rotation(phrasing.PARALLEL_STYLES, parallel, rng)
    items = []
    for index, style in enumerate(parallel_styles):
        domains = rng.sample(sorted(pools), k=min(rng.randint(2, 4), len(pools)))
        chosen = [draw(d) for d in domains]
        items.append(_parallel(f"p{index + 1:03d}", chosen, style, rng))
    families = _rotation(("chain", "letter", "branches"), dependent, rng)
    chain_styles = _rotation(phrasing.CHAIN_STYLES, dependent, rng)
    other_styles = _rotation([s for s in phrasing.CHAIN_STYLES if s != "take-then"], dependent, rng)
    for index, family in enumerate(families):
        item_id = f"d{index + 1:03d}"
        if family == "chain":
            items.append(_chain(item_id, chain_styles[index], rng))
        elif family == "letter":
            question = draw(rng.choice(sorted(pools)))
            items.append(_letter(item_id, question, other_styles[index], rng))
        else:
            items.append(_branches(item_id, other_styles[index], rng))
    return items


def _rotation(options: Sequence[str], count: int, rng: random.Random) -> list[str]:
    """`count` choices that use every option about equally often, in a shuffled order."""
    cycle = list(options) * (count // len(options) + 1)
    chosen = cycle[:count]
    rng.shuffle(chosen)
    return chosen


def _choice_part(part_id: str, question: MMLUQuestion, text: str) -> Part:
    return Part(
        id=part_id,
        question=text,
        kind="choice",
        answer=question.answer_letter,
        choices=question.choices,
        domain=question.domain or "general",
        subject=question.subject,
    )


def _number_part(part_id: str, step: phrasing.Step, depends_on: tuple[str, ...] = ()) -> Part:
    text = step.text[0].upper() + step.text[1:]
    return Part(
        id=part_id,
        question=text,
        kind="number",
        answer=str(step.value),
        domain="math",
        depends_on=depends_on,
    )


def _parallel(
    item_id: str, questions: list[MMLUQuestion], style: str, rng: random.Random
) -> CompositeItem:
    layout = rng.choice(phrasing.OPTION_LAYOUTS)
    texts = [phrasing.with_options(q, layout) for q in questions]
    parts = tuple(
        _choice_part(f"q{i + 1}", q, t)
        for i, (q, t) in enumerate(zip(questions, texts, strict=True))
    )
    query = phrasing.join_parallel(texts, style, rng)
    return CompositeItem(
        id=item_id, kind="parallel", query=query, parts=parts, style=f"parallel/{style}"
    )


def _chain(item_id: str, style: str, rng: random.Random) -> CompositeItem:
    first = phrasing.start_step(rng)
    if style == "take-then":
        first = phrasing.Step(f"take {first.noun}", first.value, first.noun)
    steps = [first]
    for _ in range(rng.randint(1, 3)):
        steps.append(phrasing.next_step(steps[-1].value, rng))
    parts = [_number_part("q1", steps[0])]
    for index, step in enumerate(steps[1:], start=2):
        parts.append(_number_part(f"q{index}", step, (f"q{index - 1}",)))
    query = phrasing.join_steps([s.text for s in steps], style, rng)
    return CompositeItem(
        id=item_id, kind="dependent", query=query, parts=tuple(parts), style=f"chain/{style}"
    )


def _letter(item_id: str, question: MMLUQuestion, style: str, rng: random.Random) -> CompositeItem:
    text = phrasing.with_options(question, rng.choice(phrasing.OPTION_LAYOUTS))
    step = phrasing.letter_step(question.answer, rng)
    parts = (_choice_part("q1", question, text), _number_part("q2", step, ("q1",)))
    query = phrasing.join_steps([text, step.text], style, rng)
    return CompositeItem(
        id=item_id, kind="dependent", query=query, parts=parts, style=f"letter/{style}"
    )


def _branches(item_id: str, style: str, rng: random.Random) -> CompositeItem:
    first, second = phrasing.start_step(rng), phrasing.start_step(rng)
    last = phrasing.combine_step(first.value, second.value, rng)
    parts = (
        _number_part("q1", first),
        _number_part("q2", second),
        _number_part("q3", last, ("q1", "q2")),
    )
    query = phrasing.join_branches(first.text, second.text, last.text, style, rng)
    return CompositeItem(
        id=item_id, kind="dependent", query=query, parts=parts, style=f"branches/{style}"
    )


def write_suite(items: Sequence[CompositeItem], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(item.model_dump_json() + "\n" for item in items), encoding="utf-8")


def read_suite(path: Path) -> list[CompositeItem]:
    lines = path.read_text(encoding="utf-8").split("\n")
    return [CompositeItem.model_validate_json(line) for line in lines if line.strip()]

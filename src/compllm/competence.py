"""Routing by measured competence (in the spirit of Symbolic-MoE, arXiv 2503.05641): every
expert answers labelled validation questions, how often each is right is recorded per topic,
and routing then prefers an expert that is measurably better on a question's topic.

`compllm fit --profile` writes the profile beside the registry (`<stem>.competence.json`,
named by the registry's `competence` line). The rule `ExpertRouter` applies, after it has
chosen an expert by its scores (similarity or the learned head):

1. The question's topic is the most common topic among the `TOPIC_NEIGHBOURS` validation
   questions most similar to it (by embedding; ties go to the nearest).
2. Another eligible expert replaces the chosen one when it is measurably better on that
   topic: right more often, with a one-sided Fisher exact test at `SIGNIFICANCE` on the two
   experts' (right, wrong) counts. Among several, the most accurate wins.
3. Otherwise the choice stands: an expert with no record on the topic is never chosen by
   competence, and a chosen expert with no record is never replaced (nothing is measured).

So similarity decides what a question is about, measured competence decides who answers it,
and a difference the validation set cannot show (two experts on the same small model, both
at chance) changes nothing. Experts with an applicability check (the built-in calculator) keep
their claims: a check is a statement of competence that needs no measuring.

Scoring: multiple-choice questions by the benchmark's strict extraction
(`compllm.bench.extract`), or, for experts on local weights, by option log-likelihood (the
option the model finds most likely under the expert's own prompt); number questions by the
strict number extraction.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from compllm.bench import phrasing
from compllm.bench.extract import LETTERS, extract_choice, extract_number
from compllm.registry import Expert, Registry

if TYPE_CHECKING:
    from compllm.api import CompLLM
    from compllm.bench.loglik import OptionScorer
    from compllm.mmlu import MMLUQuestion

__all__ = [
    "SIGNIFICANCE",
    "TOPIC_NEIGHBOURS",
    "CompetenceProfile",
    "ValidationQuestion",
    "arithmetic_questions",
    "competence_file",
    "expert_answerer",
    "fisher_greater",
    "mmlu_validation",
    "profile_experts",
    "read_validation",
    "word_problems",
    "write_validation",
]

TOPIC_NEIGHBOURS = 10
SIGNIFICANCE = 0.05
FORMAT = 1


def competence_file(registry_file: Path) -> Path:
    return registry_file.with_name(f"{registry_file.stem}.competence.json")


class ValidationQuestion(BaseModel):
    """A labelled question: `text` as the expert receives it, its `topic`, and its answer
    (an option letter when `choices` are given, else a number)."""

    model_config = ConfigDict(frozen=True)

    text: str = Field(min_length=1)
    topic: str = Field(min_length=1)
    answer: str
    choices: tuple[str, ...] = ()

    def is_right(self, reply: str) -> bool:
        """Whether a free-text reply states the answer (strict extraction)."""
        if self.choices:
            picked = extract_choice(reply, self.choices)
            return picked is not None and LETTERS[picked] == self.answer
        number = extract_number(reply)
        return number is not None and math.isclose(number, float(self.answer), abs_tol=1e-9)


def read_validation(path: Path) -> list[ValidationQuestion]:
    lines = path.read_text(encoding="utf-8").split("\n")
    return [ValidationQuestion.model_validate_json(line) for line in lines if line.strip()]


def write_validation(questions: Iterable[ValidationQuestion], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(q.model_dump_json() + "\n" for q in questions), encoding="utf-8")


@dataclass(frozen=True)
class Record:
    right: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.right / self.total if self.total else 0.0


@dataclass(frozen=True)
class CompetenceProfile:
    """How often each expert was right on each topic, and the profiled questions by topic
    (what a new question's topic is inferred from)."""

    records: Mapping[str, Mapping[str, Record]]  # expert -> topic -> record
    topic_texts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    modes: Mapping[str, str] = field(default_factory=dict)  # expert -> how it was scored

    def record(self, expert: str, topic: str) -> Record | None:
        found = self.records.get(expert, {}).get(topic)
        return found if found is not None and found.total else None

    def better_expert(self, chosen: str, topic: str, eligible: Iterable[str]) -> str:
        """The rule of the module doc (step 2 and 3): `chosen`, or the most accurate
        eligible expert that is measurably better on `topic`."""
        mine = self.record(chosen, topic)
        if mine is None:
            return chosen
        better = []
        for name in eligible:
            theirs = self.record(name, topic)
            if name == chosen or theirs is None or theirs.accuracy <= mine.accuracy:
                continue
            if fisher_greater(theirs, mine) < SIGNIFICANCE:
                better.append((theirs.accuracy, theirs.total, name))
        return max(better)[2] if better else chosen

    @staticmethod
    def topic_of(neighbour_topics: Sequence[str]) -> str:
        """The most common topic among a question's nearest validation questions (given
        nearest first); ties go to the topic that comes first."""
        counts = Counter(neighbour_topics)
        top = max(counts.values())
        return next(t for t in neighbour_topics if counts[t] == top)

    def save(self, path: Path) -> None:
        data = {
            "format": FORMAT,
            "records": {
                expert: {topic: [r.right, r.total] for topic, r in sorted(topics.items())}
                for expert, topics in self.records.items()
            },
            "modes": dict(self.modes),
            "topics": {topic: list(texts) for topic, texts in sorted(self.topic_texts.items())},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> CompetenceProfile:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(f"{path}: competence format {data.get('format')!r}, not {FORMAT}")
        return cls(
            records={
                expert: {topic: Record(*pair) for topic, pair in topics.items()}
                for expert, topics in data["records"].items()
            },
            topic_texts={topic: tuple(texts) for topic, texts in data["topics"].items()},
            modes=dict(data.get("modes", {})),
        )

    def table(self) -> list[str]:
        """Accuracy per expert (down) and topic (across), as text rows."""
        topics = sorted({t for topics in self.records.values() for t in topics})
        width = max([len(e) for e in self.records] + [6]) + 1
        lines = [" " * width + " ".join(f"{t[:14]:>14}" for t in topics)]
        for expert, by_topic in self.records.items():
            cells = []
            for topic in topics:
                r = by_topic.get(topic)
                cells.append(f"{r.right:>4}/{r.total:<4} {r.accuracy:4.0%}" if r else " " * 14)
            lines.append(f"{expert:<{width}}" + " ".join(f"{c:>14}" for c in cells))
        return lines


def fisher_greater(first: Record, second: Record) -> float:
    """One-sided Fisher exact p-value that `first` is right more often than `second`: the
    chance, with the margins fixed, of `first` having at least as many right answers."""
    right = first.right + second.right
    total = first.total + second.total
    denominator = math.comb(total, right)
    upper = min(right, first.total)
    tail = sum(
        math.comb(first.total, k) * math.comb(second.total, right - k)
        for k in range(first.right, upper + 1)
    )
    return tail / denominator


# -- running the experts ---------------------------------------------------------------------

# Whether `expert` answered `question` right; None when it cannot be asked (e.g. no weights
# for log-likelihood): no record then.
Answerer = Callable[[Expert, ValidationQuestion], bool | None]


def profile_experts(
    registry: Registry,
    questions: Sequence[ValidationQuestion],
    answer: Answerer,
    *,
    modes: Mapping[str, str] | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> CompetenceProfile:
    """Every expert of `registry` on every question, counted per topic."""
    records: dict[str, dict[str, Record]] = {}
    for expert in registry.experts:
        counts: dict[str, list[int]] = {}
        for question in questions:
            right = answer(expert, question)
            if right is None:
                continue
            tally = counts.setdefault(question.topic, [0, 0])
            tally[0] += int(right)
            tally[1] += 1
        records[expert.name] = {topic: Record(r, n) for topic, (r, n) in counts.items()}
        if on_progress is not None:
            done = ", ".join(f"{t} {r}/{n}" for t, (r, n) in sorted(counts.items()))
            on_progress(f"profiled {expert.name}: {done or 'nothing it could answer'}")
    texts: dict[str, list[str]] = {}
    for question in questions:
        texts.setdefault(question.topic, []).append(question.text)
    return CompetenceProfile(records, {t: tuple(v) for t, v in texts.items()}, dict(modes or {}))


def expert_answerer(
    app: CompLLM, *, option_scorer: Callable[[str], OptionScorer] | None = None
) -> Answerer:
    """Asks an expert as a routed sub-query is asked: through `app` with a one-part plan that
    names the expert (its prompt, settings and fallback), the reply read strictly. With
    `option_scorer` (a scorer per model reference), multiple-choice questions to experts on
    local weights are scored by option log-likelihood instead, under the expert's own system
    prompt and user message, as `compllm bench`'s log-likelihood mode scores them."""
    from langchain_core.messages import HumanMessage, SystemMessage

    from compllm.bench.loglik import best_option
    from compllm.bench.systems import is_local_model
    from compllm.plan import Plan, SubQuery
    from compllm.prompts import render_prompt

    def answer(expert: Expert, question: ValidationQuestion) -> bool:
        if option_scorer is not None and question.choices and is_local_model(expert.model):
            user = render_prompt("expert.user", question=question.text, parents=[])
            messages = [SystemMessage(expert.prompt), HumanMessage(user)]
            options = [c.strip() for c in question.choices]
            scorer = option_scorer(str(expert.model))
            index, _ = best_option(scorer.option_logprobs(messages, "", options), options)
            return LETTERS[index] == question.answer
        plan = Plan.build([SubQuery(id="q1", question=question.text, expert=expert.name)])
        result = app.invoke(question.text, plan=plan)
        reply = next((a.answer for a in result.answers if a.status == "ok"), "")
        return question.is_right(reply)

    return answer


# -- validation questions ----------------------------------------------------------------------


def arithmetic_questions(count: int, *, seed: int) -> list[ValidationQuestion]:
    """Arithmetic in words and symbols, as the benchmark's chains phrase it ("What is 29
    multiplied by 5?", "find 25 percent of 640"), topic `arithmetic`."""
    rng = random.Random(f"arithmetic\0{seed}")
    questions = []
    for _ in range(count):
        step = phrasing.start_step(rng)
        text = step.text[0].upper() + step.text[1:]
        questions.append(ValidationQuestion(text=text, topic="arithmetic", answer=str(step.value)))
    return questions


_NAMES = ("Maria", "Tom", "Aisha", "Kenji", "Lena", "Omar", "Priya", "Diego", "Sofia", "Ben")
_THINGS = ("apples", "stickers", "books", "marbles", "pencils", "cookies", "stamps", "coins")


def word_problems(count: int, *, seed: int) -> list[ValidationQuestion]:
    """Arithmetic word problems with exact integer answers, in varied wording, topic
    `word-problem`: the same operations as `arithmetic_questions`, told as a story."""
    rng = random.Random(f"word-problem\0{seed}")
    makers = (_gave_away, _bought_more, _boxes, _shared, _discount, _saved, _rows, _left_after)
    return [rng.choice(makers)(rng) for _ in range(count)]


def _problem(text: str, value: int) -> ValidationQuestion:
    return ValidationQuestion(text=text, topic="word-problem", answer=str(value))


def _gave_away(rng: random.Random) -> ValidationQuestion:
    who, thing = rng.choice(_NAMES), rng.choice(_THINGS)
    a, b = rng.randint(20, 90), rng.randint(3, 19)
    return _problem(
        f"{who} had {a} {thing} and gave {b} of them to a friend. How many {thing} does "
        f"{who} have left?",
        a - b,
    )


def _bought_more(rng: random.Random) -> ValidationQuestion:
    who, thing = rng.choice(_NAMES), rng.choice(_THINGS)
    a, b = rng.randint(12, 80), rng.randint(5, 40)
    return _problem(
        f"There are {a} {thing} in {who}'s bag. {who} buys {b} more at the market. How many "
        f"{thing} are in the bag now?",
        a + b,
    )


def _boxes(rng: random.Random) -> ValidationQuestion:
    thing = rng.choice(_THINGS)
    boxes, each = rng.randint(3, 12), rng.randint(6, 24)
    return _problem(
        f"A shop packs {thing} in boxes of {each}. How many {thing} are there in {boxes} "
        f"full boxes?",
        boxes * each,
    )


def _shared(rng: random.Random) -> ValidationQuestion:
    thing = rng.choice(_THINGS)
    people, each = rng.randint(2, 8), rng.randint(3, 15)
    return _problem(
        f"{people * each} {thing} are shared equally among {people} children. How many does "
        f"each child get?",
        each,
    )


def _discount(rng: random.Random) -> ValidationQuestion:
    price = rng.randint(2, 30) * 20
    percent = rng.choice((10, 20, 25, 50))
    return _problem(
        f"A jacket costs {price} dollars and is sold at {percent}% off. How many dollars "
        f"does it cost in the sale?",
        price - price * percent // 100,
    )


def _saved(rng: random.Random) -> ValidationQuestion:
    who = rng.choice(_NAMES)
    weekly, weeks = rng.randint(3, 25), rng.randint(4, 12)
    return _problem(
        f"{who} saves {weekly} dollars every week. How much has {who} saved after {weeks} weeks?",
        weekly * weeks,
    )


def _rows(rng: random.Random) -> ValidationQuestion:
    rows, seats = rng.randint(5, 20), rng.randint(8, 30)
    taken = rng.randint(1, rows * seats - 1)
    return _problem(
        f"A hall has {rows} rows of {seats} seats and {taken} seats are taken. How many "
        f"seats are free?",
        rows * seats - taken,
    )


def _left_after(rng: random.Random) -> ValidationQuestion:
    who, thing = rng.choice(_NAMES), rng.choice(_THINGS)
    start, used, found = rng.randint(30, 99), rng.randint(5, 25), rng.randint(2, 20)
    return _problem(
        f"{who} starts the day with {start} {thing}, loses {used} and then finds {found}. "
        f"How many {thing} does {who} end the day with?",
        start - used + found,
    )


def mmlu_validation(
    questions: Sequence[MMLUQuestion], *, topic: Callable[[MMLUQuestion], str | None]
) -> list[ValidationQuestion]:
    """MMLU questions as multiple-choice validation questions (with their options, as
    benchmark sub-queries show them); `topic` names each one's topic (None: left out)."""
    result = []
    for question in questions:
        name = topic(question)
        if name is not None:
            result.append(
                ValidationQuestion(
                    text=question.as_text(),
                    topic=name,
                    answer=question.answer_letter,
                    choices=question.choices,
                )
            )
    return result

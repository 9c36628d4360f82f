"""Competence profiles: how answers are scored, when one expert counts as measurably better,
the validation questions that ship with compllm, and `compllm fit --profile`."""

from __future__ import annotations

import io
import json
import math

import pytest

from compllm.calculator import Calculator
from compllm.cli import main
from compllm.competence import (
    CompetenceProfile,
    Record,
    ValidationQuestion,
    arithmetic_questions,
    fisher_greater,
    profile_experts,
    word_problems,
)
from compllm.registry import load_registry, parse_registry
from tests.fakes import FakeProvider, ScriptedChatModel, answer_by_question


def test_fisher_exact_p_values():
    # 5 of 40 against 0 of 40: with 5 right answers in all, the chance that all 5 fall in
    # the first group is C(40, 5) / C(80, 5).
    assert fisher_greater(Record(5, 40), Record(0, 40)) == pytest.approx(
        math.comb(40, 5) / math.comb(80, 5)
    )
    assert fisher_greater(Record(0, 40), Record(5, 40)) == 1.0
    assert fisher_greater(Record(20, 20), Record(0, 20)) < 1e-10
    assert 0.3 < fisher_greater(Record(11, 20), Record(9, 20)) < 0.5


def profile(**records: tuple[int, int]) -> CompetenceProfile:
    return CompetenceProfile({name: {"sums": Record(*r)} for name, r in records.items()})


def test_only_a_measurably_better_expert_replaces_the_chosen_one():
    both = ["math", "tool"]
    assert profile(math=(3, 30), tool=(29, 30)).better_expert("math", "sums", both) == "tool"
    assert profile(math=(14, 30), tool=(17, 30)).better_expert("math", "sums", both) == "math"
    # The most accurate of several that are measurably better.
    three = profile(math=(3, 30), tool=(29, 30), other=(25, 30))
    assert three.better_expert("math", "sums", ["math", "tool", "other"]) == "tool"
    # Only eligible experts: one with an applicability check that refused is not.
    assert profile(math=(3, 30), tool=(29, 30)).better_expert("math", "sums", ["math"]) == "math"


def test_without_a_record_nothing_is_replaced():
    measured = profile(math=(3, 30), tool=(29, 30))
    assert measured.better_expert("math", "dates", ["math", "tool"]) == "math"
    assert measured.better_expert("general", "sums", ["general", "tool"]) == "general"


def test_the_topic_is_the_most_common_among_the_nearest_questions():
    assert CompetenceProfile.topic_of(["a", "b", "b", "a", "b"]) == "b"
    assert CompetenceProfile.topic_of(["a", "b", "b", "a"]) == "a"  # tie: the nearest


def test_answers_are_read_strictly():
    number = ValidationQuestion(text="What is 6 times 7?", topic="arithmetic", answer="42")
    assert number.is_right("6 x 7 = 42")
    assert not number.is_right("It is 41 or 42.")
    assert not number.is_right("I cannot compute that.")
    choice = ValidationQuestion(
        text="Which is a prime? Options: (A) 21; (B) 23; (C) 25; (D) 27.",
        topic="mmlu-math",
        answer="B",
        choices=("21", "23", "25", "27"),
    )
    assert choice.is_right("The answer is (B).")
    assert not choice.is_right("(A) 21; (B) 23; (C) 25; (D) 27")  # the options echoed
    assert not choice.is_right("The answer is A or B.")


def test_the_calculator_answers_the_arithmetic_it_accepts_and_refuses_word_problems():
    calculator = Calculator()
    arithmetic = arithmetic_questions(200, seed=3)
    accepted = [q for q in arithmetic if calculator.accepts(q.text)]
    # It cannot read "Take 11 and multiply it by 4" alone ("it" names no earlier answer).
    assert len(accepted) > 0.9 * len(arithmetic)
    assert all(q.is_right(calculator(q.text)) for q in accepted)
    problems = word_problems(40, seed=3)
    assert not any(calculator.accepts(q.text) for q in problems)
    assert all(int(q.answer) >= 0 for q in problems)
    assert len({q.text.split()[1] for q in problems}) >= 6  # many wordings, not one template
    assert word_problems(5, seed=3) == problems[:5]  # reproducible


def test_profiling_counts_right_answers_per_topic():
    registry = parse_registry(
        "generalist: b\nexperts:\n  - {name: a, description: A}\n  - {name: b, description: B}\n",
        source="two",
    )
    questions = [
        ValidationQuestion(text=f"q{i}", topic="odd" if i % 2 else "even", answer="0")
        for i in range(6)
    ]

    def answer(expert, question):
        if expert.name == "b" and question.topic == "odd":
            return None  # b cannot be asked these: no record
        return expert.name == "a" or question.text == "q0"

    measured = profile_experts(registry, questions, answer)
    assert measured.records["a"] == {"even": Record(3, 3), "odd": Record(3, 3)}
    assert measured.records["b"] == {"even": Record(1, 3)}
    assert measured.topic_texts == {"even": ("q0", "q2", "q4"), "odd": ("q1", "q3", "q5")}


REGISTRY = """
generalist: general
experts:
  - name: math
    description: mathematics arithmetic numbers sums
    model: math-model
  - name: general
    description: general everyday questions
    model: general-model
"""


def test_cli_fit_profile_writes_the_profile_and_the_router_uses_it(tmp_path):
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text(
        "".join(
            json.dumps({"text": f"{word} question {n}", "expert": expert}) + "\n"
            for expert, word in (("math", "sums numbers"), ("general", "weather holiday"))
            for n in range(10)
        )
    )
    validation = tmp_path / "validation.jsonl"
    sums = [(a, a + 1) for a in range(2, 14)]
    validation.write_text(
        "".join(
            ValidationQuestion(
                text=f"add {a} and {b}", topic="sums", answer=str(a + b)
            ).model_dump_json()
            + "\n"
            for a, b in sums
        )
    )
    source = tmp_path / "experts.yaml"
    source.write_text(REGISTRY)
    provider = FakeProvider(
        chat={
            # The math model gets every sum wrong; the general model gets them right.
            "math-model": ScriptedChatModel(respond=lambda prompt, call: "= 0"),
            "general-model": ScriptedChatModel(
                respond=answer_by_question({f"add {a} and {b}": f"= {a + b}" for a, b in sums})
            ),
        }
    )
    out = io.StringIO()
    target = tmp_path / "fitted.yaml"
    code = main(
        [
            *("fit", "--data", str(labelled), "--experts", str(source), "--out", str(target)),
            *("--profile", "--profile-data", str(validation)),
        ],
        out=out,
        provider=provider,
    )
    printed = out.getvalue()
    assert code == 0, printed
    assert "profiled math: sums 0/12" in printed and "profiled general: sums 12/12" in printed
    assert 'competence: "fitted.competence.json"' in target.read_text()
    fitted = load_registry(target)
    assert fitted.competence == str(tmp_path / "fitted.competence.json")
    saved = CompetenceProfile.load(tmp_path / "fitted.competence.json")
    assert saved.records["general"]["sums"] == Record(12, 12)

    from compllm.router import ExpertRouter

    (route,) = ExpertRouter(fitted, provider.embeddings("any")).route(["add 20 and 30 sums"])
    assert route.scores["math"] > route.scores["general"] or route.expert == "general"
    assert route.expert == "general"  # measurably better at sums, whatever the scores say

"""The built-in calculator expert: exact arithmetic read from words or symbols, references
to earlier answers, and a clear refusal of anything that is not arithmetic."""

from __future__ import annotations

from decimal import Decimal

import pytest

from compllm import CompLLM, Context
from compllm.calculator import Calculator, CalculatorError, read_expression, stated_number
from compllm.registry import parse_registry
from tests.fakes import make_provider

calculator = Calculator()


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("What is 29 multiplied by 5?", "29 * 5 = 145"),
        ("Compute 12 times 7.", "12 * 7 = 84"),
        ("What is 2+2?", "2 + 2 = 4"),
        ("what's 12 squared?", "12 ** 2 = 144"),
        ("What is 2 plus 3 times 4?", "2 + (3 * 4) = 14"),
        ("what is 5 - 3 - 1?", "(5 - 3) - 1 = 1"),
        ("What is 0.1 + 0.2?", "0.1 + 0.2 = 0.3"),  # decimal, not binary floating point
        ("What is 10 divided by 4?", "10 / 4 = 2.5"),
        ("What is 10 divided by 3?", "10 / 3 = 3.333333333333"),
        ("What is 15% of 240?", "15 / 100 * 240 = 36"),
        ("What is 1,200 minus 15% of 1,200?", "1200 - (15 / 100 * 1200) = 1020"),
        ("Increase 80 by 25%.", "80 * (1 + 25 / 100) = 100"),
        ("What is the square root of 144?", "sqrt(144) = 12"),
        ("What is 3 to the power of 4?", "3 ** 4 = 81"),
        ("What is (3 + 4) * 2^3?", "((3 + 4)) * (2 ** 3) = 56"),
        ("What is -4 times 3?", "-4 * 3 = -12"),
        ("What is twenty plus 3?", "20 + 3 = 23"),
    ],
)
def test_arithmetic_in_words_or_symbols_is_computed_exactly(question, answer):
    assert calculator(question) == answer


@pytest.mark.parametrize(
    ("question", "parent", "answer"),
    [
        ("Then add 17 to that result.", "29 * 5 = 145", "145 + 17 = 162"),
        ("Multiply that result by 6.", "The answer is 145.", "145 * 6 = 870"),
        ("Then add 8 times 7 to that result.", "18 * 3 = 54", "54 + (8 * 7) = 110"),
        ("Subtract 44 from it.", "12 squared is 144", "144 - 44 = 100"),
        ("double it", "= 2.5", "2 * 2.5 = 5"),
        ("Divide it by 4.", "so the total is 1,020", "1020 / 4 = 255"),
    ],
)
def test_references_to_an_earlier_answer_take_the_number_it_states(question, parent, answer):
    assert calculator(question, [{"id": "q1", "question": "...", "answer": parent}]) == answer


def test_an_earlier_answer_is_read_for_its_last_stated_result():
    assert stated_number("12 * 7 = 84, so the result is 84.") == Decimal(84)
    assert stated_number("First 3, then 4; the answer is 12") == Decimal(12)
    assert stated_number("no number here") is None


def test_a_reference_to_a_numbered_step_picks_that_parent():
    parents = [{"answer": "= 10"}, {"answer": "= 3"}]
    assert calculator("Subtract the result of step 2 from the result of step 1.", parents) == (
        "10 - 3 = 7"
    )


@pytest.mark.parametrize(
    "question",
    [
        "Is 221 a prime number?",
        "What is the derivative of x^3 + 2x?",
        "What is the sum of the interior angles of a hexagon?",
        "How many years ago was that from 2020?",
        "What is a derivative?",
        "Who wrote Hamlet?",
    ],
)
def test_what_is_not_arithmetic_is_refused_and_not_claimed(question):
    assert not calculator.accepts(question)
    with pytest.raises(CalculatorError, match="cannot read this as arithmetic"):
        calculator(question, [{"answer": "= 3"}])


def test_arithmetic_is_claimed_even_when_it_refers_to_an_answer_not_known_yet():
    # At routing time the parent's answer is a placeholder, P.
    assert calculator.accepts("Then add 17 to that result.")
    assert read_expression("Then add 17 to that result.") == "(P + Decimal('17'))"


def test_division_by_zero_and_huge_powers_fail_with_a_reason():
    with pytest.raises(CalculatorError, match="division by zero"):
        calculator("What is 7 divided by 0?")
    with pytest.raises(CalculatorError, match="exponent"):
        calculator("What is 2 to the power of 100000?")


def test_a_reference_without_a_number_says_so():
    with pytest.raises(CalculatorError, match="states no number"):
        calculator("Add 17 to that result.", [{"answer": "I do not know."}])


REGISTRY = """
generalist: general
threshold: 0.0
experts:
  - name: calculator
    description: exact arithmetic
    model: builtin:calculator
  - name: medicine
    description: medicine organ insulin pancreas disease
    examples: [which organ produces insulin]
    model: expert-model
  - name: general
    description: everything else
    model: expert-model
"""


def pipeline() -> CompLLM:
    return CompLLM(
        registry=parse_registry(REGISTRY, source="calculator.yaml"),
        provider=make_provider(expert_answers={"insulin": "The pancreas produces insulin."}),
        context=Context(
            planner_mode="rules", embedding_model="words", aggregator_model="aggregator-model"
        ),
    )


def test_a_chain_is_answered_exactly_and_the_other_part_goes_to_its_expert():
    result = pipeline().invoke(
        "What is 29 multiplied by 5? Then add 17 to that result. Also, what organ produces insulin?"
    )
    by_id = {a.id: a for a in result.answers}
    assert [r.expert for r in result.routes] == ["calculator", "calculator", "medicine"]
    assert by_id["q2"].answer == "145 + 17 = 162"
    assert by_id["q3"].answer == "The pancreas produces insulin."


def test_a_sub_question_the_calculator_cannot_compute_fails_with_the_reason_and_the_run_goes_on():
    result = pipeline().invoke(
        "What is 7 divided by 0? Also, what organ produces insulin?", planner_mode="rules"
    )
    failed, answered = result.answers
    assert failed.status == "failed" and "division by zero" in (failed.error or "")
    assert failed.attempts == 1  # the same input fails the same way: not retried
    assert answered.status == "ok"

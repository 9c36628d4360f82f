"""The rule-based decomposer: the plan that always exists."""

import pytest

from compllm.decompose import decompose


def parts(query: str) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(s.id, s.question, s.depends_on) for s in decompose(query).subqueries]


def test_a_single_question_gives_a_one_node_plan():
    assert parts("How does a vaccine train the immune system?") == [
        ("q1", "How does a vaccine train the immune system?", ())
    ]


def test_questions_joined_by_and_become_independent_parts():
    assert parts("What is the derivative of x^2, and what are the symptoms of diabetes?") == [
        ("q1", "What is the derivative of x^2?", ()),
        ("q2", "What are the symptoms of diabetes?", ()),
    ]


def test_then_and_back_references_create_dependencies():
    assert parts("Compute 12 times 7, then tell me whether that result is a prime number.") == [
        ("q1", "Compute 12 times 7.", ()),
        ("q2", "Tell me whether that result is a prime number.", ("q1",)),
    ]
    assert parts("Find x if 2x = 10. Next, square it.")[1][2] == ("q1",)


def test_numbered_lists_split_and_explicit_step_references_are_followed():
    assert parts(
        "Answer these: 1. What is 2+2? 2. Who wrote Hamlet? 3. Is the answer to step 1 even?"
    ) == [
        ("q1", "What is 2+2?", ()),
        ("q2", "Who wrote Hamlet?", ()),
        ("q3", "Is the answer to step 1 even?", ("q1",)),
    ]


def test_bullets_split_and_a_header_line_is_dropped():
    assert [p[1] for p in parts("Questions:\n- what is a tort\n- how do vaccines work")] == [
        "What is a tort?",
        "How do vaccines work?",
    ]


def test_statements_are_kept_as_context_for_the_next_question():
    assert parts("My father is 60. What is a healthy resting heart rate for him?") == [
        ("q1", "My father is 60. What is a healthy resting heart rate for him?", ())
    ]


def test_numbers_inside_sentences_are_not_taken_for_a_list():
    assert len(parts("He is 60. I am 30. How old is he in 5 years?")) == 1


@pytest.mark.parametrize("query", ["Tell me about cats", "hello", "???", "x"])
def test_anything_gives_a_valid_plan(query):
    assert len(decompose(query)) == 1


def test_long_enumerations_respect_the_limit():
    query = " ".join(f"{i}. What is {i} squared?" for i in range(1, 21))
    plan = decompose(query, max_subqueries=5)
    assert len(plan) == 5
    assert "20 squared" in plan.get("q5").question


def test_numbered_questions_stay_whole_and_link_only_when_they_point_back():
    plan = decompose(
        "Answer each question.\n"
        "1. What is the number of moons of Mars? Options: (A) 1; (B) 2.\n"
        "2. Which gas has its value of density lowest? Options: (A) helium; (B) hydrogen.\n"
        "3. Multiply that answer by 3."
    )
    assert [s.question.split("?")[0] for s in plan.subqueries] == [
        "What is the number of moons of Mars",
        "Which gas has its value of density lowest",
        "Multiply that answer by 3.",
    ]
    assert plan.subqueries[0].question.endswith("Options: (A) 1; (B) 2.")
    assert [s.depends_on for s in plan.subqueries] == [(), (), ("q2",)]


def test_answer_options_stay_with_their_question():
    plan = decompose("Which planet is largest? Options: (A) Mars. (B) Jupiter. What is 2 + 2?")
    assert [s.question for s in plan.subqueries] == [
        "Which planet is largest? Options: (A) Mars. (B) Jupiter.",
        "What is 2 + 2?",
    ]

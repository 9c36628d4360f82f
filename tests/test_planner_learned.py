"""The shipped learned planner on the queries the issue reported the rule decomposer and the
LLM planner getting wrong (the real weights: loading takes a few seconds, planning does not)."""

import pytest

from compllm.errors import ModelLoadError
from compllm.models import EMBEDDED_PLANNER, ModelHub, is_learned_planner


@pytest.fixture(scope="module")
def hub():
    return ModelHub()


@pytest.fixture(scope="module")
def planner(hub):
    return hub.planner(EMBEDDED_PLANNER)


def test_the_planner_loads_once_per_reference_and_only_from_a_planner_folder(hub, tmp_path):
    assert hub.planner(EMBEDDED_PLANNER) is hub.planner(EMBEDDED_PLANNER)
    assert not is_learned_planner(str(tmp_path)) and not is_learned_planner("HuggingFaceTB/x")
    with pytest.raises(ModelLoadError, match="is not a learned planner"):
        hub.planner(str(tmp_path))


def shape(planner, query):
    """(number of parts, dependencies as 1-based part numbers)."""
    plan = planner.plan(query)
    index = {s.id: i + 1 for i, s in enumerate(plan.subqueries)}
    return len(plan), {(index[d], index[s.id]) for s in plan.subqueries for d in s.depends_on}


@pytest.mark.parametrize(
    ("query", "parts", "edges"),
    [
        # a leading "First," no longer hides the first part, "Finally" is no dependency
        (
            "First, compute 18 multiplied by 3. Then add 8 times 7 to that result. Finally, in "
            "which country is the city of Mombasa?",
            3,
            {(1, 2)},
        ),
        # an implicit dependency through "that person"
        ("Who discovered penicillin and when did that person win the Nobel prize?", 2, {(1, 2)}),
        (
            "In what year did World War II end, and how many years ago was that from 2020?",
            2,
            {(1, 2)},
        ),
        # "result", "sum", "then" inside parts that need nothing
        ("What is 15% of 240? Also, which vitamin deficiency causes scurvy?", 2, set()),
        ("What is the result of 2 raised to the power of 10?", 1, set()),
        (
            "What is the sum of the interior angles of a hexagon? Then, what is the boiling "
            "point of water?",
            2,
            set(),
        ),
        # statements and options belong to their question
        ("A laptop costs $1,200 and is 15% off. What is the sale price?", 1, set()),
        ("Which of these is a prime number? (1) 21 (2) 23 (3) 27", 1, set()),
        # lists the rules read as one part
        ("a) What is a tort? b) What is inflation? c) Who wrote Hamlet?", 3, set()),
        ("what is a mutex; also how do vaccines work", 2, set()),
    ],
)
def test_the_shipped_planner_splits_and_links_as_a_reader_would(planner, query, parts, edges):
    assert shape(planner, query) == (parts, edges)


def test_questions_the_rules_merged_are_two_parts(planner):
    query = "Define photosynthesis. Then say which gas from that process humans need to breathe."
    assert shape(planner, query)[0] == 2


def test_every_question_keeps_its_own_words(planner):
    query = "hey quick q - whats a roth ira, also who painted the night watch lol"
    questions = [s.question for s in planner.plan(query).subqueries]
    assert len(questions) == 2
    assert "roth ira" in questions[0].lower() and "night watch" in questions[1].lower()
    assert not any("quick q" in q or "lol" in q for q in questions)


def test_a_very_long_query_is_planned_in_pieces(planner):
    query = " ".join(f"What is {n} times 7?" for n in range(200))
    plan = planner.plan(query, max_subqueries=16)
    assert len(plan) == 16  # the tail folded into the last part, nothing lost
    assert "199 times 7" in plan.subqueries[-1].question

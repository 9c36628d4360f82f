"""From token labels to plans, and scoring plans against gold decompositions."""

import math

import numpy as np
import pytest

from compllm.plan import Plan, SubQuery
from compllm.planning.examples import Example, GoldPart
from compllm.planning.metrics import coverage, score_plan, summarise, wilson
from compllm.planning.model import Analysis, transitive_reduction
from compllm.planning.segments import (
    LABELS,
    Segment,
    build_plan,
    decode_labels,
    model_text,
    part_questions,
    repair,
    token_labels,
    word_starts,
)

DROP, BQ, IQ, BC, IC = range(5)


def test_line_breaks_become_a_visible_token_of_the_same_length():
    assert model_text("a\nb") == "a¶b"
    assert len(model_text("x\r\n\ty")) == len("x\r\n\ty")


def test_gold_labels_mark_where_parts_and_context_begin_and_continue():
    query = "I'm 38. Who won? And why?"
    example = Example(query, (GoldPart(8, 16), GoldPart(21, 25, (0,))), context=((0, 7),))
    offsets = [(0, 0), (0, 3), (4, 7), (8, 11), (12, 16), (17, 20), (21, 25), (0, 0)]
    assert token_labels(offsets, example) == [-100, BC, IC, BQ, IQ, DROP, BQ, -100]


def test_words_are_what_spaces_and_line_breaks_separate():
    text = "I'm here¶next"
    offsets = [(0, 1), (1, 2), (2, 3), (4, 8), (8, 9), (9, 13)]
    assert word_starts(text, offsets) == [True, False, False, True, True, True]


def one_hot(labels):
    scores = np.full((len(labels), len(LABELS)), -10.0)
    for row, label in enumerate(labels):
        scores[row, label] = 0.0
    return scores


def test_decoding_groups_labelled_words_into_parts_and_context():
    query = "Hi! I'm 38. Who won? And why?"
    offsets = [(0, 3), (4, 7), (8, 11), (12, 15), (16, 20), (21, 24), (25, 29)]
    labels = [DROP, BC, IC, BQ, IQ, DROP, BQ]
    segments = decode_labels(one_hot(labels), offsets, [True] * len(offsets))
    assert [(s.kind, query[s.start : s.end]) for s in segments] == [
        ("context", "I'm 38."),
        ("part", "Who won?"),
        ("part", "why?"),
    ]


def test_a_continuation_after_a_dropped_word_starts_a_new_part():
    # I-Q may only follow B-Q or I-Q: a likely "O" then "I-Q" is read as "O" then "B-Q".
    scores = one_hot([BQ, DROP, IQ])
    scores[2, BQ] = -5.0
    segments = decode_labels(scores, [(0, 1), (2, 3), (4, 5)], [True] * 3)
    assert [(s.kind, s.start) for s in segments] == [("part", 0), ("part", 4)]


def test_repair_never_loses_a_question_the_model_dropped():
    query = "What is a bond? what is a stock? Thanks!"
    only_first = [Segment("part", 0, 15)]
    repaired = repair(query, only_first)
    assert [query[s.start : s.end] for s in repaired if s.kind == "part"] == [
        "What is a bond?",
        "what is a stock?",
    ]
    # a long unasked stretch becomes context rather than vanishing
    query = "My landlord kept my whole deposit last month. Can he do that?"
    repaired = repair(query, [Segment("part", 46, len(query))])
    assert [s.kind for s in repaired] == ["context", "part"]
    # nothing recognised: the whole query is the one part
    assert repair("tell me about cats", []) == [Segment("part", 0, 18)]


def test_a_two_word_stub_that_runs_into_the_next_part_is_its_start():
    query = "Finally, in which country is Mombasa? Also, who wrote it?"
    segments = [Segment("part", 9, 11), Segment("part", 12, 37), Segment("part", 44, 57)]
    assert [query[s.start : s.end] for s in repair(query, segments)] == [
        "in which country is Mombasa?",
        "who wrote it?",
    ]


@pytest.mark.parametrize(
    ("query", "cuts", "expected"),
    [
        # a question does not start with "by": the part goes on
        (
            "What is 2 squared? Combine both values by multiplying them.",
            [(0, 18), (19, 38), (39, 59)],
            ["What is 2 squared?", "Combine both values by multiplying them."],
        ),
        # a subordinate clause and its comma set up the question after it
        (
            "Supposing we go with the cheaper option, what is 377 minus 11?",
            [(0, 39), (41, 62)],
            ["Supposing we go with the cheaper option, what is 377 minus 11?"],
        ),
    ],
)
def test_parts_cut_where_a_reader_would_not_are_joined(query, cuts, expected):
    segments = [Segment("part", a, b) for a, b in cuts]
    assert [query[s.start : s.end] for s in repair(query, segments)] == expected


def test_a_stray_word_before_context_joins_the_context():
    query = "For context, I'm a teacher. What is judicial review?"
    segments = [Segment("part", 0, 3), Segment("context", 4, 27), Segment("part", 28, 52)]
    assert [(s.kind, query[s.start : s.end]) for s in repair(query, segments)] == [
        ("context", "For context, I'm a teacher."),
        ("part", "What is judicial review?"),
    ]


def test_questions_carry_the_context_before_them_and_trailing_context():
    query = "I'm 38. Should I buy bonds? Or stocks? I live in Ohio."
    segments = [
        Segment("context", 0, 7),
        Segment("part", 8, 27),
        Segment("part", 31, 38),
        Segment("context", 39, 54),
    ]
    assert [q for q, _ in part_questions(query, segments)] == [
        "I'm 38. Should I buy bonds? I live in Ohio.",
        "I'm 38. Stocks? I live in Ohio.",
    ]


def test_the_plan_keeps_edges_and_folds_parts_beyond_the_limit_into_the_last():
    query = "What is 2+2? Double it. What is 3+3? What is 4+4?"
    segments = [Segment("part", a, b) for a, b in ((0, 12), (13, 23), (24, 36), (37, 49))]
    plan = build_plan(query, segments, {(0, 1)}, max_subqueries=3)
    assert [(s.question, s.depends_on) for s in plan.subqueries] == [
        ("What is 2+2?", ()),
        ("Double it.", ("q1",)),
        ("What is 3+3? What is 4+4?", ()),
    ]


# -- scoring -------------------------------------------------------------------------------

GOLD = Example(
    "Who painted The Night Watch? When was he born? What is a bond?",
    (GoldPart(0, 28, (), "humanities"), GoldPart(29, 46, (0,), "humanities"), GoldPart(47, 61)),
)


def plan_of(*items):
    return Plan.build(
        [
            SubQuery(id=f"q{i + 1}", question=q, depends_on=d, expert=e)
            for i, (q, d, e) in enumerate(items)
        ]
    )


def test_a_plan_with_the_right_parts_edges_and_experts_is_fully_right():
    plan = plan_of(
        ("Who painted The Night Watch?", (), "humanities"),
        ("When was he born?", ("q1",), "humanities"),
        ("What is a bond?", (), "economics"),
    )
    score = score_plan(plan, GOLD)
    assert (score.parts_ok, score.edges_ok, score.experts_ok, score.fully_ok) == (
        True,
        True,
        True,
        True,
    )


def test_a_missing_edge_or_a_merged_question_is_counted():
    no_edge = plan_of(
        ("Who painted The Night Watch?", (), None),
        ("When was he born?", (), None),
        ("What is a bond?", (), None),
    )
    assert not score_plan(no_edge, GOLD).edges_ok
    merged = plan_of(
        ("Who painted The Night Watch? When was he born?", (), None),
        ("What is a bond?", (), None),
    )
    score = score_plan(merged, GOLD)
    assert (score.parts_ok, score.merged, score.dropped) == (False, 1, 0)


def test_a_question_no_sub_question_carries_is_dropped():
    assert coverage(["What is a bond?"], ["What is a bond?", "Who painted The Night Watch?"]) == (
        1,
        0,
    )


def test_an_arithmetic_gold_expert_can_stand_for_the_registrys_arithmetic_expert():
    gold = Example("What is 2+2?", (GoldPart(0, 12, (), "calculator"),))
    plan = plan_of(("What is 2+2?", (), "math"))
    assert not score_plan(plan, gold).experts_ok
    assert score_plan(plan, gold, expert_aliases={"calculator": "math"}).experts_ok


def test_wilson_intervals_match_the_textbook_values():
    low, high = wilson(8, 10)
    assert math.isclose(low, 0.4902, abs_tol=1e-4) and math.isclose(high, 0.9433, abs_tol=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)
    rates = summarise([score_plan(plan_of(("What is a bond?", (), None)), GOLD)])
    assert rates["parts"].value == 0 and "experts" not in rates


@pytest.mark.parametrize("hits", [0, 5, 10])
def test_an_interval_always_holds_its_rate(hits):
    low, high = wilson(hits, 10)
    assert low <= hits / 10 <= high


def test_a_part_depends_on_the_part_it_refers_to_not_on_that_parts_parents():
    """ "Which language ...? Which country is it from? What's that country's capital?": the
    linker scores each pair alone and often links the capital to the language too. An edge
    that a longer chain of likely edges implies is dropped; the calls keep their order."""
    analysis = Analysis(
        segments=[],
        edge_probabilities={(0, 1): 0.9, (1, 2): 0.8, (0, 2): 0.7, (0, 3): 0.2},
    )
    assert analysis.edges == {(0, 1), (1, 2)}
    # Two parents that are not on one chain both stay (a diamond's join).
    assert transitive_reduction({(0, 2), (1, 2), (2, 3)}) == {(0, 2), (1, 2), (2, 3)}
    chain = {(0, 1), (1, 2), (2, 3)}
    assert transitive_reduction(chain | {(0, 3), (1, 3)}) == chain

"""The planner: LLM plan -> parse/repair/validate -> one retry with the error -> rules; and
with the learned planner: its plan first, an LLM plan only when it carries every part."""

import json
import re

import pytest

from compllm.plan import PlanError
from compllm.planner import llm_plan_schema, parse_plan, plan_query
from tests.fakes import QuestionMarkPlanner, ScriptedChatModel, plan_json

QUERY = "What is the derivative of x^2, and what are the symptoms of diabetes?"
GOOD = plan_json(
    ("q1", "What is the derivative of x^2?", []),
    ("q2", "What are the symptoms of diabetes?", []),
)


def scripted(*replies: str) -> ScriptedChatModel:
    queue = list(replies)
    return ScriptedChatModel(respond=lambda prompt, call: queue.pop(0))


def plan(llm, query=QUERY, **kwargs):
    return plan_query(query, llm, max_subqueries=16, max_new_tokens=256, **kwargs)


def test_a_valid_llm_plan_is_used_as_is():
    result, path, attempts = plan(scripted(GOOD))
    assert path == "llm"
    assert result.ids == ["q1", "q2"]
    assert [a.source for a in attempts] == ["llm"]


def test_the_llm_is_asked_for_json_constrained_to_the_plan_schema():
    llm = scripted(GOOD)
    plan(llm)
    (call,) = llm.calls
    assert call.kwargs["json_schema"] == llm_plan_schema(QUERY, 16)
    assert 0 < call.kwargs["max_new_tokens"] <= 256
    assert QUERY in call.prompt


def test_json_inside_prose_or_code_fences_is_found():
    result, path, _ = plan(scripted(f"Sure! Here is the plan:\n```json\n{GOOD}\n```"))
    assert (path, len(result)) == ("llm", 2)


def test_an_invalid_plan_is_retried_once_with_the_error_in_the_prompt():
    cyclic = GOOD.replace('"depends_on": []', '"depends_on": ["q2"]', 1).replace(
        '"depends_on": []}]', '"depends_on": ["q1"]}]'
    )
    llm = scripted(cyclic, GOOD)
    _, path, attempts = plan(llm)
    assert path == "llm-retry"
    assert "cycle among sub-queries: q1, q2" in attempts[0].error
    retry_prompt = llm.calls[1].prompt
    assert "cycle among sub-queries: q1, q2" in retry_prompt
    assert cyclic in retry_prompt  # the rejected plan is shown back to the model


def test_when_the_llm_fails_twice_the_rules_make_the_plan():
    result, path, attempts = plan(scripted("not json", '{"subqueries": []}'))
    assert path == "rules"
    assert [a.source for a in attempts] == ["llm", "llm-retry", "rules"]
    assert attempts[0].error == "the output contains no JSON plan"
    assert [s.question for s in result.subqueries] == [
        "What is the derivative of x^2?",
        "What are the symptoms of diabetes?",
    ]


def test_a_crashing_llm_falls_back_to_the_rules():
    def boom(prompt, call):
        raise RuntimeError("CUDA out of memory")

    _, path, attempts = plan(ScriptedChatModel(respond=boom))
    assert path == "rules"
    assert attempts[0].error == "RuntimeError: CUDA out of memory"


def test_llm_mode_refuses_to_fall_back():
    with pytest.raises(PlanError, match="no valid plan"):
        plan(scripted("nope", "nope"), allow_fallback=False)


def test_without_an_llm_the_rules_plan_directly():
    _, path, attempts = plan(None)
    assert (path, len(attempts)) == ("rules", 1)


def test_repairs_drop_self_and_unknown_dependencies_and_add_named_ones():
    text = json.dumps(
        {
            "subqueries": [
                {"id": "q1", "question": "Compute 12 times 7", "depends_on": ["q1", "q7"]},
                {"id": "q2", "question": "Is the result of q1 prime?", "depends_on": []},
            ]
        }
    )
    result = parse_plan(text, "Compute 12 times 7, then is the result prime?", max_subqueries=16)
    assert [s.depends_on for s in result.subqueries] == [(), ("q1",)]


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (
            plan_json(
                ("q1", "What is the capital of Peru?", []),
                ("q2", "What are the symptoms of diabetes?", []),
            ),
            "q1 asks about things the request does not mention (capital, peru)",
        ),
        (
            plan_json(("q1", "What is the derivative of x^2?", [])),
            "the request has 2 explicit parts but the plan has 1",
        ),
        (
            GOOD.replace("What are the symptoms of diabetes?", "What is the derivative of x^2?"),
            "q1 and q2 ask the same question",
        ),
        ('{"subqueries": [{"id": "q1", "question": "What is', "incomplete"),
        ('{"subqueries": [{"id": "q1", "question": "x", "depends_on": "q2"}]}', "must be a list"),
        (
            '{"subqueries": [{"id": "q1", "question": "x", "depends_on": []},'
            ' {"id": "q1", "question": "y", "depends_on": []}]}',
            "duplicate sub-query ids: q1",
        ),
    ],
)
def test_plans_that_do_not_fit_the_query_are_rejected(reply, error):
    with pytest.raises(PlanError, match=re.escape(error)):
        parse_plan(reply, QUERY, max_subqueries=16)


def test_the_schema_only_lets_the_model_use_the_querys_words():
    schema = llm_plan_schema(QUERY, 16)
    items = schema["properties"]["subqueries"]
    pattern = re.compile(items["items"]["properties"]["question"]["pattern"])
    assert pattern.match("What are the symptoms of diabetes?")
    assert pattern.match("Is the result of q1 the derivative?")
    assert not pattern.match("What is the capital of Peru?")
    assert items["minItems"] == 2  # the query has two explicit parts


# -- with the learned planner's parts: the checks and the fallback ---------------------------

THREE = "What is 15% of 240? Also, which vitamin deficiency causes scurvy? Who wrote Hamlet?"


def learned_three():
    return QuestionMarkPlanner()


def test_the_learned_planner_alone_plans_without_any_llm():
    result, path, attempts = plan(None, THREE, learned=learned_three())
    assert path == "learned"
    assert [a.source for a in attempts] == ["learned"]
    assert [s.question for s in result.subqueries] == [
        "What is 15% of 240?",
        "Also, which vitamin deficiency causes scurvy?",
        "Who wrote Hamlet?",
    ]


def test_an_llm_plan_that_carries_every_learned_part_replaces_the_learned_plan():
    reply = plan_json(
        ("q1", "What is 15% of 240?", []),
        ("q2", "Which vitamin deficiency causes scurvy?", []),
        ("q3", "Who wrote Hamlet?", []),
    )
    llm = scripted(reply)
    _, path, attempts = plan(llm, THREE, learned=learned_three())
    assert path == "llm"
    assert [a.source for a in attempts] == ["learned", "llm"]
    assert llm.calls[0].kwargs["json_schema"]["properties"]["subqueries"]["minItems"] == 3


def test_a_plan_that_drops_a_question_falls_back_to_the_learned_plan_after_one_call():
    # The case: the scurvy question replaced by one made of reference words only.
    dropped = plan_json(
        ("q1", "What is 15% of 240?", []),
        ("q2", "Is the result of q1 answer of q2?", ["q1"]),
        ("q3", "Who wrote Hamlet?", []),
    )
    llm = scripted(dropped, dropped)
    result, path, attempts = plan(llm, THREE, learned=learned_three())
    assert path == "learned" and len(result) == 3
    assert [a.source for a in attempts] == ["learned", "llm"]
    assert "only reference words" in attempts[1].error
    assert len(llm.calls) == 1  # auto never spends a second call when a good plan exists


def test_a_plan_that_merges_two_parts_into_one_question_is_rejected():
    merged = plan_json(
        ("q1", "What is 15% of 240, and which vitamin deficiency causes scurvy?", []),
        ("q2", "Who wrote Hamlet?", []),
    )
    with pytest.raises(PlanError, match="no sub-query of its own asks"):
        parse_plan(
            merged,
            THREE,
            max_subqueries=16,
            parts=[
                "What is 15% of 240?",
                "which vitamin deficiency causes scurvy?",
                "Who wrote Hamlet?",
            ],
        )


def test_a_plan_of_statements_is_rejected():
    query = "A right triangle has legs 6 and 8. What is the length of the hypotenuse?"
    reply = plan_json(("q1", "The length of the hypotenuse is 6.", []))
    with pytest.raises(PlanError, match="states something instead of asking"):
        parse_plan(reply, query, max_subqueries=16)


def test_in_llm_mode_the_retry_differs_it_samples_and_shows_the_learned_parts():
    short = plan_json(("q1", "What is 15% of 240?", []))
    llm = scripted(short, short)
    with pytest.raises(PlanError, match="no valid plan"):
        plan(llm, THREE, learned=learned_three(), allow_fallback=False)
    first, retry = llm.calls
    assert "temperature" not in first.kwargs
    assert retry.kwargs["temperature"] > 0
    assert "2. Also, which vitamin deficiency causes scurvy?" in retry.messages[-1].text


def test_a_crashing_llm_is_not_asked_twice():
    calls = []

    def boom(prompt, call):
        calls.append(call)
        raise RuntimeError("CUDA out of memory")

    _, path, attempts = plan(ScriptedChatModel(respond=boom))
    assert (path, len(calls)) == ("rules", 1)
    assert [a.source for a in attempts] == ["llm", "rules"]


def test_the_schema_pattern_has_no_escapes_so_every_grammar_engine_reads_it():
    query = "What is the derivative of x^3 + 2x in calculus? Is an e-mail binding?"
    pattern = llm_plan_schema(query, 4)["properties"]["subqueries"]["items"]["properties"][
        "question"
    ]["pattern"]
    assert "\\" not in pattern  # llama.cpp's grammar rejects "\." and "\^"
    assert re.match(pattern, "What is the derivative of x^3 + 2x in calculus?")
    assert re.match(pattern, "Is an e-mail binding?")
    assert not re.match(pattern, "What is the integral of x^3?")

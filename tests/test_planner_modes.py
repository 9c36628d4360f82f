"""Which planner plans a run: `Context.planner_mode` and `planner_model`, the fallbacks and
the record that stops `auto` from calling an LLM planner that keeps failing."""

import pytest
from langgraph.types import RetryPolicy

from compllm import CompLLM, Context
from compllm.errors import ConfigError
from compllm.models import EMBEDDED_PLANNER
from tests.fakes import (
    FakeProvider,
    PlannerProvider,
    QuestionMarkPlanner,
    ScriptedChatModel,
    plan_json,
)

QUERY = "Who painted The Night Watch? When was he born? What causes inflation?"
FAST_RETRY = RetryPolicy(max_attempts=1)


def provider(planner_reply="not a plan", edges=frozenset({(0, 1)})):
    planner = ScriptedChatModel(respond=lambda prompt, call: planner_reply)
    return PlannerProvider(
        chat={
            "planner-model": planner,
            "expert-model": ScriptedChatModel(respond=lambda prompt, call: "an answer"),
            "aggregator-model": ScriptedChatModel(respond=lambda prompt, call: "final"),
        },
        planners={EMBEDDED_PLANNER: QuestionMarkPlanner(edges)},
    )


def run(models, registry, **context):
    settings = {"aggregator_model": "aggregator-model", "embedding_model": "fake", **context}
    app = CompLLM(registry=registry, provider=models, retry_policy=FAST_RETRY)
    return app, app.invoke(QUERY, **settings)


def test_by_default_the_learned_planner_plans_and_no_llm_is_asked(registry):
    models = provider()
    _, result = run(models, registry)
    assert Context().planner_model == EMBEDDED_PLANNER
    assert result.planner_path == "learned"
    assert [a.source for a in result.planner_attempts] == ["learned"]
    assert [s.depends_on for s in result.plan.subqueries] == [(), ("q1",), ()]
    assert not models.chat["planner-model"].calls


def test_a_learned_planner_that_cannot_load_leaves_the_rules_and_says_why(registry):
    models = provider()
    models.planners.clear()
    _, result = run(models, registry)
    assert result.planner_path == "rules"
    first = result.planner_attempts[0]
    assert (first.source, "no learned planner" in first.error) == ("learned", True)


def test_llm_mode_needs_an_llm_planner_model(registry):
    with pytest.raises(ConfigError, match="needs an LLM planner_model"):
        run(provider(), registry, planner_mode="llm")


def test_learned_mode_uses_the_learned_planner_whatever_the_planner_model(registry):
    models = provider()
    _, result = run(models, registry, planner_mode="learned", planner_model="planner-model")
    assert result.planner_path == "learned"
    assert not models.chat["planner-model"].calls


def test_auto_with_an_llm_keeps_its_plan_when_it_carries_every_part(registry):
    reply = plan_json(
        ("q1", "Who painted The Night Watch?", []),
        ("q2", "When was the painter of The Night Watch born?", ["q1"]),
        ("q3", "What causes inflation?", []),
    )
    _, result = run(provider(reply), registry, planner_model="planner-model")
    assert result.planner_path == "llm"
    assert [a.source for a in result.planner_attempts] == ["learned", "llm"]


def test_auto_stops_asking_an_llm_planner_that_keeps_failing(registry):
    models = provider("I like turtles")
    app = CompLLM(registry=registry, provider=models, retry_policy=FAST_RETRY)
    settings = {
        "planner_model": "planner-model",
        "aggregator_model": "aggregator-model",
        "embedding_model": "fake",
    }
    paths = []
    for _ in range(5):
        result = app.invoke(QUERY, **settings)
        paths.append((result.planner_path, [a.source for a in result.planner_attempts]))
    # Three tries, one call each, each falling back to the learned plan; then not asked.
    assert len(models.chat["planner-model"].calls) == 3
    assert paths[:3] == [("learned", ["learned", "llm"])] * 3
    assert paths[3:] == [("learned", ["llm", "learned"])] * 2
    assert "not asked: 0 of its 3 plans" in result.planner_attempts[0].error


def test_rules_mode_asks_no_model(registry):
    models = provider()
    _, result = run(models, registry, planner_mode="rules")
    assert result.planner_path == "rules"
    assert models.planner_loads == [] and not models.chat["planner-model"].calls


def test_without_a_learned_planner_a_failing_llm_is_also_left_for_the_rules(registry):
    models = provider("I like turtles")
    plain = FakeProvider(chat=models.chat)  # a provider that offers no learned planner
    app = CompLLM(registry=registry, provider=plain, retry_policy=FAST_RETRY)
    settings = {
        "planner_model": "planner-model",
        "aggregator_model": "aggregator-model",
        "embedding_model": "fake",
    }
    results = [app.invoke(QUERY, **settings) for _ in range(4)]
    assert [r.planner_path for r in results] == ["rules"] * 4
    assert [len(r.planner_attempts) for r in results] == [3, 3, 3, 2]  # llm, retry, rules
    assert len(models.chat["planner-model"].calls) == 6

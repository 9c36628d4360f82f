"""Limits with clear errors (query length, plan size, token budgets, run time) and safety
defaults (no remote code, safe registry parsing)."""

import asyncio
import io
import time

import pytest

from compllm import CompLLM, Context, Plan, PlanError, QueryError, SubQuery
from compllm.cli import main
from compllm.errors import ConfigError, RegistryError
from compllm.registry import ExpertSpec, parse_registry
from tests.fakes import make_provider, plan_json

FAKES = {
    "planner_model": "planner-model",
    "aggregator_model": "aggregator-model",
    "embedding_model": "fake",
}


def app(registry, **provider_options):
    return CompLLM(registry=registry, provider=make_provider(**provider_options))


def test_a_query_longer_than_the_limit_is_refused_with_the_limit(registry):
    with pytest.raises(QueryError, match=r"20001 characters long; the limit is 20000"):
        app(registry).invoke("x" * 20_001, **FAKES)
    with pytest.raises(QueryError, match="the limit is 10"):
        app(registry).invoke("What is a felony, exactly?", max_query_chars=10, **FAKES)


def test_a_plan_larger_than_the_limit_is_refused(registry):
    too_many = Plan.build(
        [SubQuery(id=f"q{i}", question=f"Question {i}?") for i in range(6)], max_subqueries=6
    )
    with pytest.raises(PlanError, match="6 sub-queries"):
        app(registry).invoke("Six questions.", plan=too_many, max_subqueries=5, **FAKES)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_parallel_experts": 0}, "max_parallel_experts must be a positive number"),
        ({"planner_max_new_tokens": -1}, "planner_max_new_tokens must be a positive"),
        ({"aggregator_max_new_tokens": 10**6}, "the limit is 32768"),
        ({"max_run_s": 0}, "max_run_s must be a positive"),
        ({"expert_timeout_s": "soon"}, "expert_timeout_s must be a positive"),
    ],
)
def test_impossible_settings_fail_at_once_naming_the_field(settings, message):
    with pytest.raises(ConfigError, match=message):
        Context(**settings)


def test_an_expert_cannot_ask_for_more_tokens_than_the_limit():
    with pytest.raises(RegistryError, match="max_new_tokens"):
        parse_registry(
            "generalist: g\nexperts:\n  - {name: g, description: d, system_prompt: s,"
            " generation: {max_new_tokens: 100000}}\n",
            source="big.yaml",
        )


def test_the_cli_reports_a_limit_as_one_line(tmp_path):
    err = io.StringIO()
    code = main(
        ["ask", "y" * 20_001, "--planner", "rules"],
        out=io.StringIO(),
        err=err,
        provider=make_provider(),
    )
    assert code == 2
    assert err.getvalue().startswith("compllm: error: the query is 20001 characters long")


# -- total run time -------------------------------------------------------------------------

SLOW_PLAN = plan_json(*[(f"q{i}", f"Multiply two numbers, {i} and 7.", []) for i in range(1, 5)])


@pytest.mark.parametrize("executor", ["dataflow", "waves"])
def test_a_run_past_its_time_limit_ends_with_the_answers_it_has(registry, executor):
    pipeline = app(
        registry,
        planner=SLOW_PLAN,
        expert_answers={"Multiply": "a product"},
        aggregate="all four products",
        expert_delay_s=1.0,
    )
    started = time.perf_counter()
    result = pipeline.invoke(
        "Multiply 1 and 7. Multiply 2 and 7. Multiply 3 and 7. Multiply 4 and 7.",
        max_parallel_experts=1,
        max_run_s=1.5,
        executor=executor,
        **FAKES,
    )
    elapsed = time.perf_counter() - started
    statuses = [a.status for a in result.answers]
    assert statuses[0] == "ok" and statuses.count("failed") >= 2
    expired = [a for a in result.answers if a.status == "failed"]
    assert all("time limit (1.5 s, Context.max_run_s)" in (a.error or "") for a in expired)
    assert result.aggregation == "concatenated"  # no time left for the aggregator model
    assert "a product" in result.answer
    # Four calls one at a time would take 4 s; the limit ends the run after at most one
    # more call (a running call is abandoned in sync runs, or its wave finishes).
    assert elapsed < 3.5


def test_an_async_run_past_its_time_limit_cancels_its_calls(registry):
    pipeline = app(
        registry, planner=SLOW_PLAN, expert_answers={"Multiply": "a product"}, expert_delay_s=1.0
    )
    result = asyncio.run(
        pipeline.ainvoke(
            "Multiply 1 and 7. Multiply 2 and 7.", max_parallel_experts=1, max_run_s=1.5, **FAKES
        )
    )
    assert result.answers[0].status == "ok"
    assert any("time limit" in (a.error or "") for a in result.answers)


# -- safety defaults ---------------------------------------------------------------------------


def test_experts_never_run_remote_code_unless_they_ask():
    spec = ExpertSpec(name="x", description="d", system_prompt="s")
    assert spec.trust_remote_code is False


def test_registry_files_are_parsed_safely(tmp_path):
    marker = tmp_path / "executed"
    hostile = (
        "generalist: g\n"
        f"threshold: !!python/object/apply:os.system ['touch {marker}']\n"
        "experts:\n  - {name: g, description: d, system_prompt: s}\n"
    )
    with pytest.raises(RegistryError, match="not valid YAML"):
        parse_registry(hostile, source="hostile.yaml")
    assert not marker.exists()

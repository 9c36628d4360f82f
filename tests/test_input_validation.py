"""Bad input gets a clear error naming the field, before any model runs, through every door:
the LangGraph server (as the SDK and Studio's forms send runs), the library and the CLI.

Cases carry exactly one fault and the name of the field at fault; hypothesis draws them
(wrong types, missing and extra keys, out-of-range numbers, unknown choices, huge and odd
strings, broken plans) and the same checks hold everywhere: either a normal result, or an
error whose message names that field; never a Python exception name and never "internal
error"; and the server still answers afterwards.

Unknown context keys are the one exception: the LangGraph server drops the keys its
published context schema does not list before the graph runs (it logs them), so a run with
one goes on; the library and the CLI reject them."""

from __future__ import annotations

import asyncio
import io
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compllm import CompLLM
from compllm.cli import main as cli_main
from compllm.errors import CompLLMError
from compllm.plan import PlanError
from tests.fakes import make_provider, make_test_registry

langgraph_sdk = pytest.importorskip("langgraph_sdk")

from tests.servers import langgraph_dev  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FAKES = {
    "planner_model": "planner-model",
    "aggregator_model": "aggregator-model",
    "embedding_model": "fake",
    "planner_mode": "rules",
}
INTERNAL_NAMES = (
    "KeyError",
    "TypeError",
    "AttributeError",
    "IndexError",
    "ValidationError",
    "internal error",
    "Traceback",
    "errors.pydantic.dev",
)


@dataclass(frozen=True)
class Case:
    """One run's input and context, and the field at fault (None: nothing is wrong)."""

    input: dict[str, Any]
    context: dict[str, Any] = field(default_factory=dict)
    fault: str | None = None

    def __repr__(self) -> str:  # hypothesis prints failing cases: keep them short
        return f"Case(input={str(self.input)[:120]}, context={self.context}, fault={self.fault})"


def query_faults() -> st.SearchStrategy[Case]:
    bad_query = st.one_of(
        st.integers(-(2**63), 2**63 - 1),  # what JSON clients can send
        st.floats(allow_nan=False, allow_infinity=False),
        st.booleans(),
        st.none(),
        st.lists(st.text(max_size=5), max_size=3),
        st.dictionaries(st.text(max_size=5), st.integers(0, 9), max_size=2),
        st.sampled_from(["", "   ", "\n\t", "x" * 20_001]),
    )
    return st.one_of(
        bad_query.map(lambda q: Case({"query": q}, fault="query")),
        st.just(Case({}, fault="query")),
        st.just(Case({"question": "What is 2+2?"}, fault="query")),
    )


def plan_faults() -> st.SearchStrategy[Case]:
    good_sub = {"id": "q1", "question": "What is 2+2?"}
    broken = st.sampled_from(
        [
            "not a plan",
            7,
            {"subqueries": "q1"},
            {"subqueries": []},
            {"steps": [good_sub]},
            {"subqueries": [42]},
            {"subqueries": [{"id": "q1"}]},
            {"subqueries": [{"question": "a?"}]},
            {"subqueries": [{"id": "q1", "question": ""}]},
            {"subqueries": [{"id": "", "question": "a?"}]},
            {"subqueries": [{"id": "q1", "question": 5}]},
            {"subqueries": [{"id": "q1", "question": "a?", "depends_on": "q0"}]},
            {"subqueries": [{"id": "q1", "question": "a?", "depends_on": ["q9"]}]},
            {"subqueries": [{"id": "q1", "question": "a?", "depends_on": ["q1"]}]},
            {"subqueries": [good_sub, good_sub]},
            {
                "subqueries": [
                    {"id": "a", "question": "a?", "depends_on": ["b"]},
                    {"id": "b", "question": "b?", "depends_on": ["a"]},
                ]
            },
            {"subqueries": [{"id": f"q{i}", "question": "a?"} for i in range(17)]},
            {"subqueries": [{"id": "q1", "question": "a?", "expert": "astrologer"}]},
        ]
    )
    return broken.map(lambda plan: Case({"query": "What is 2+2?", "plan": plan}, fault="plan"))


CONTEXT_FAULTS: dict[str, list[Any]] = {
    "max_subqueries": [0, -3, 10**9, "5", 2.5, None, True],
    "max_parallel_experts": [0, -1, "four", 1.5],
    "max_batch_size": [0, [], 10**6],
    "planner_max_new_tokens": [0, 10**7, "many"],
    "aggregator_max_new_tokens": [-5, 40_000],
    "expert_timeout_s": [0, -1.0, "soon"],
    "max_run_s": [0, -2, "later"],
    "max_query_chars": [0, "long", 10**9],
    "routing_threshold": [2, -1.5, "high"],
    "planner_mode": ["telepathy", "", 3, None],
    "executor": ["warp", "", 0],
    "review_plan": ["yes", 1, None],
    "passthrough_single": ["no", 2],
    "registry_path": [5, ""],
}


def context_faults() -> st.SearchStrategy[Case]:
    return st.sampled_from(sorted(CONTEXT_FAULTS)).flatmap(
        lambda name: st.sampled_from(CONTEXT_FAULTS[name]).map(
            lambda value: Case({"query": "What is 2+2?"}, {name: value}, fault=name)
        )
    )


def good_cases() -> st.SearchStrategy[Case]:
    queries = st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        min_size=1,
        max_size=200,
    ).filter(lambda q: q.strip())
    contexts = st.fixed_dictionaries(
        {},
        optional={
            "max_parallel_experts": st.integers(1, 8),
            "max_subqueries": st.integers(4, 32),
            "executor": st.sampled_from(["dataflow", "waves"]),
            "routing_threshold": st.one_of(st.none(), st.floats(-1, 1)),
            "passthrough_single": st.booleans(),
        },
    )
    return st.builds(lambda q, c: Case({"query": q}, c), queries, contexts)


CASES = st.one_of(query_faults(), plan_faults(), context_faults(), good_cases())


def check(case: Case, error: str | None) -> None:
    """The one rule for every door: a result when nothing is wrong, else an error that
    names the field at fault and shows no internals."""
    if case.fault is None:
        assert error is None, f"{case}: {error}"
        return
    assert error is not None, f"{case} was accepted"
    assert case.fault in error, f"{case}: the error does not name {case.fault!r}: {error}"
    assert not any(name in error for name in INTERNAL_NAMES), f"{case}: {error}"


# -- the LangGraph server ----------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("server") / "dev.log"
    with langgraph_dev(ROOT / "tests" / "server" / "langgraph.json", log) as url:
        yield url


def server_error(url: str, case: Case) -> str | None:
    async def run() -> Any:
        client = langgraph_sdk.get_client(url=url)
        return await client.runs.wait(
            None,
            "compllm-quick",
            input=case.input,
            context={**FAKES, **case.context},
            raise_error=False,
        )

    out = asyncio.run(run())
    if isinstance(out, dict) and "__error__" in out:
        return "{error}: {message}".format(**out["__error__"])
    assert isinstance(out, dict) and out.get("final_answer"), f"{case}: {out}"
    return None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=CASES)
def test_the_server_runs_or_names_the_field_at_fault(server, case):
    check(case, server_error(server, case))


def test_the_server_still_answers_after_the_bad_runs(server):
    with urllib.request.urlopen(f"{server}/ok", timeout=10) as reply:
        assert reply.status == 200
    assert server_error(server, Case({"query": "What is 2+2?"})) is None


def test_the_servers_schemas_offer_only_valid_values(server):
    async def schemas() -> dict[str, Any]:
        client = langgraph_sdk.get_client(url=server)
        (assistant,) = await client.assistants.search(graph_id="compllm-quick")
        return await client.assistants.get_schemas(assistant["assistant_id"])

    published = asyncio.run(schemas())
    fields = published["context_schema"]["properties"]
    assert fields["planner_mode"]["enum"] == ["auto", "learned", "llm", "rules"]
    assert fields["executor"]["enum"] == ["dataflow", "waves"]
    assert fields["max_subqueries"]["exclusiveMinimum"] == 0
    assert fields["max_subqueries"]["maximum"] >= 64
    assert published["input_schema"]["properties"]["query"]["minLength"] == 1


def test_an_unknown_context_key_is_dropped_by_the_server_and_the_run_goes_on(server):
    assert server_error(server, Case({"query": "What is 2+2?"}, {"max_new_tokens": 5})) is None


# -- the library and the CLI: the same cases, the same messages --------------------------


def library_error(case: Case) -> str | None:
    app = CompLLM(registry=make_test_registry(), provider=make_provider(aggregate="done"))
    arguments = dict(case.input)
    try:
        query = arguments.pop("query", None)
        app.invoke(query, **arguments, **{**FAKES, **case.context})  # type: ignore[arg-type]
    except (CompLLMError, PlanError) as exc:
        return f"{type(exc).__name__}: {exc}"
    except TypeError as exc:  # a keyword `invoke` does not take (e.g. "question")
        return f"{type(exc).__name__}: {exc}"
    return None


@settings(max_examples=150, deadline=None)
@given(case=st.one_of(query_faults(), plan_faults(), context_faults(), good_cases()))
def test_the_library_runs_or_names_the_field_at_fault(case):
    error = library_error(case)
    if case.input.get("question") is not None:  # not a parameter of `invoke`: Python says so
        assert error is not None and "question" in error
        return
    check(case, error)


def test_the_library_rejects_an_unknown_context_key_naming_it():
    error = library_error(Case({"query": "What is 2+2?"}, {"max_new_tokens": 5}))
    assert error is not None
    assert "Context has no field 'max_new_tokens'" in error


@pytest.mark.parametrize(
    ("arguments", "fault"),
    [
        (["ask", ""], "query"),
        (["ask", "   "], "query"),
        (["ask", "What is 2+2?", "--max-concurrency", "0"], "max_parallel_experts"),
        (["ask", "What is 2+2?", "--max-batch", "-1"], "max_batch_size"),
        (["ask", "What is 2+2?", "--threshold", "3"], "routing_threshold"),
        (["ask", "What is 2+2?", "--timeout", "0"], "expert_timeout_s"),
    ],
)
def test_the_cli_names_the_field_at_fault(arguments, fault):
    err = io.StringIO()
    status = cli_main(
        [*arguments, "--planner", "rules"], out=io.StringIO(), err=err, provider=make_provider()
    )
    assert status == 2
    message = err.getvalue()
    assert fault in message and message.count("\n") == 1, message
    assert not any(name in message for name in INTERNAL_NAMES)


def test_the_library_and_the_server_say_the_same_thing(server):
    for case in [
        Case({"query": 5}, fault="query"),
        Case({"query": "a?"}, {"executor": "warp"}, fault="executor"),
    ]:
        library = library_error(case)
        assert library is not None
        assert library == server_error(server, case)

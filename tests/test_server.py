"""The LangGraph server (`langgraph dev`, what Studio talks to), started for real on
127.0.0.1 and driven with the official `langgraph-sdk` client: stream a run with its custom
events, read the final state, pause a run for plan review and resume it with an edited plan.

The fast tests serve the graph on fake models (`tests/server/langgraph.json`); the slow one
serves the repository's own `langgraph.json` on the embedded models, as `make studio` does.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

langgraph_sdk = pytest.importorskip("langgraph_sdk")

from tests.servers import langgraph_dev  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FAKE_CONFIG = ROOT / "tests" / "server" / "langgraph.json"
FAKE_CONTEXT = {
    "planner_model": "planner-model",
    "aggregator_model": "aggregator-model",
    "embedding_model": "fake",
}
QUERY = (
    "Multiply two numbers, 12 and 7, then tell me whether that result is prime. "
    "What are the symptoms of diabetes?"
)


async def stream_run(client: Any, thread_id: str, **kwargs: Any) -> list[tuple[str, Any]]:
    parts = []
    async for part in client.runs.stream(
        thread_id, "compllm", stream_mode=["updates", "custom"], **kwargs
    ):
        parts.append((part.event, part.data))
    return parts


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory) -> Iterator[str]:
    # Strict msgpack (LangGraph's announced default): the server's checkpointer then hands
    # compllm's state back as dicts, which the graph must read as well as its own classes.
    log = tmp_path_factory.mktemp("server") / "dev.log"
    with langgraph_dev(FAKE_CONFIG, log, LANGGRAPH_STRICT_MSGPACK="true") as url:
        yield url


def test_the_server_streams_a_run_with_one_event_pair_per_subquery(fake_server):
    async def scenario() -> None:
        client = langgraph_sdk.get_client(url=fake_server)
        assert len(await client.assistants.search(graph_id="compllm")) == 1
        thread = await client.threads.create()
        parts = await stream_run(
            client, thread["thread_id"], input={"query": QUERY}, context=FAKE_CONTEXT
        )
        events = [data for kind, data in parts if kind == "custom"]
        assert sorted((e["event"], e["id"]) for e in events) == [
            ("subquery_end", "q1"),
            ("subquery_end", "q2"),
            ("subquery_end", "q3"),
            ("subquery_start", "q1"),
            ("subquery_start", "q2"),
            ("subquery_start", "q3"),
        ]
        ends = [e for e in events if e["event"] == "subquery_end"]
        assert all(e["status"] == "ok" and e["latency_s"] >= 0.2 for e in ends)
        assert {e["expert"] for e in ends} == {"math", "medicine"}
        nodes = [next(iter(data)) for kind, data in parts if kind == "updates"]
        assert nodes[:2] == ["plan", "route"] and nodes[-1] == "aggregate"
        assert nodes.count("expert") == 3  # each expert call is its own task in the stream

        state = await client.threads.get_state(thread["thread_id"])
        values = state["values"]
        assert values["final_answer"] == "12*7 = 84, not prime; diabetes causes thirst."
        subqueries = values["plan"]["subqueries"]
        assert [s["expert"] for s in subqueries] == ["math", "medicine", "math"]
        assert all(set(s["scores"]) == {"math", "medicine", "law", "general"} for s in subqueries)
        assert values["answers"]["q3"]["answer"] == "84 is not prime."
        assert state["next"] == []

    asyncio.run(scenario())


def test_studio_shows_the_context_fields_with_their_descriptions(fake_server):
    async def scenario() -> None:
        client = langgraph_sdk.get_client(url=fake_server)
        (assistant,) = await client.assistants.search(graph_id="compllm")
        schemas = await client.assistants.get_schemas(assistant["assistant_id"])
        fields = schemas["context_schema"]["properties"]
        assert {"registry_path", "planner_model", "review_plan", "max_parallel_experts"} <= set(
            fields
        )
        assert "approve, edit or cancel" in fields["review_plan"]["description"]
        assert schemas["input_schema"]["required"] == ["query"]

    asyncio.run(scenario())


def test_the_monolithic_baseline_is_served_next_to_compllm(fake_server):
    async def scenario() -> None:
        client = langgraph_sdk.get_client(url=fake_server)
        graphs = {a["graph_id"] for a in await client.assistants.search()}
        assert graphs == {"compllm", "compllm-quick", "monolithic"}
        thread = await client.threads.create()
        final = await client.runs.wait(
            thread["thread_id"],
            "monolithic",
            input={"query": QUERY},
            context={"model": "aggregator-model", "max_new_tokens": 64},
        )
        assert final["final_answer"] == "12*7 = 84, not prime; diabetes causes thirst."
        assert final["latency_s"] >= 0

    asyncio.run(scenario())


def test_a_run_paused_for_review_resumes_with_an_edited_plan(fake_server):
    async def scenario() -> None:
        client = langgraph_sdk.get_client(url=fake_server)
        thread = await client.threads.create()
        context = {**FAKE_CONTEXT, "review_plan": True}
        parts = await stream_run(
            client, thread["thread_id"], input={"query": QUERY}, context=context
        )
        assert not [data for kind, data in parts if kind == "custom"]  # no expert ran
        paused = await client.threads.get_state(thread["thread_id"])
        assert paused["next"] == ["review"]
        (request,) = [i["value"] for task in paused["tasks"] for i in task["interrupts"]]
        assert request["kind"] == "plan_review" and request["error"] is None
        plan = request["plan"]
        assert [s["id"] for s in plan["subqueries"]] == ["q1", "q2", "q3"]

        # The reviewer drops the medicine question and resumes.
        plan["subqueries"] = [s for s in plan["subqueries"] if s["id"] != "q2"]
        parts = await stream_run(
            client, thread["thread_id"], command={"resume": {"plan": plan}}, context=context
        )
        ended = [d["id"] for kind, d in parts if kind == "custom" and d["event"] == "subquery_end"]
        assert sorted(ended) == ["q1", "q3"]
        final = await client.threads.get_state(thread["thread_id"])
        assert sorted(final["values"]["answers"]) == ["q1", "q3"]
        assert final["values"]["final_answer"]
        assert final["next"] == []

    asyncio.run(scenario())


@pytest.mark.slow
def test_the_repository_langgraph_json_serves_the_embedded_models(tmp_path):
    """What `make studio` starts: the built-in experts on SmolLM2 and MiniLM, offline."""

    async def scenario(url: str) -> None:
        client = langgraph_sdk.get_client(url=url, timeout=600)
        thread = await client.threads.create()
        context = {"planner_mode": "rules", "review_plan": True}
        query = "What is 12 times 7? What are the symptoms of flu?"
        await stream_run(client, thread["thread_id"], input={"query": query}, context=context)
        paused = await client.threads.get_state(thread["thread_id"])
        (request,) = [i["value"] for task in paused["tasks"] for i in task["interrupts"]]
        # Arithmetic goes to the built-in calculator, which takes exactly what it can compute.
        assert [s["expert"] for s in request["plan"]["subqueries"]] == ["calculator", "medicine"]
        one = {"subqueries": [request["plan"]["subqueries"][1]]}  # keep it short: one call
        parts = await stream_run(
            client, thread["thread_id"], command={"resume": {"plan": one}}, context=context
        )
        (end,) = [d for kind, d in parts if kind == "custom" and d["event"] == "subquery_end"]
        assert end["status"] == "ok" and end["expert"] == "medicine" and end["output_tokens"]
        final = await client.threads.get_state(thread["thread_id"])
        assert final["values"]["final_answer"].strip()
        assert final["values"]["aggregation"] == "passthrough"

        baseline = await client.runs.wait(
            None, "monolithic", input={"query": query}, context={"max_new_tokens": 16}
        )
        assert baseline["final_answer"].strip() and baseline["output_tokens"] <= 16

    with langgraph_dev(ROOT / "langgraph.json", tmp_path / "dev.log") as url:
        asyncio.run(scenario(url))


RELOAD_CHECK = """
import importlib, importlib.util, sys
import compllm.models, compllm.services
hub, pool = compllm.models.default_hub(), compllm.services.default_pool()
for attempt in range(2):
    spec = importlib.util.spec_from_file_location(f"graph_file_{attempt}", sys.argv[1])
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
importlib.reload(compllm.models)
importlib.reload(compllm.services)
assert compllm.models.default_hub() is hub, "a reload made a new hub"
assert compllm.services.default_pool() is pool, "a reload made a new pool"
assert not hub._chat, "building the graph loaded a model"
print("ok")
"""


def test_reloading_the_graph_code_keeps_the_process_wide_models():
    """`langgraph dev` executes the graph file by path, and code reloads re-execute modules:
    each time must reuse the same hub and pool, and with them the models already loaded.
    (In a child process: reloading modules would disturb the other tests.)"""
    check = subprocess.run(
        [sys.executable, "-c", RELOAD_CHECK, str(ROOT / "graphs" / "compllm_graph.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr[-2000:]
    assert check.stdout.strip() == "ok"

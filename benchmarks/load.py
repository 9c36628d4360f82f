"""Load: many concurrent runs, bounded in count and time, on loopback only.

    .venv/bin/python benchmarks/load.py --target library --runs 400 --concurrency 32
    .venv/bin/python benchmarks/load.py --target server --runs 200 --concurrency 16
    .venv/bin/python benchmarks/load.py --target library --experts engine --runs 24 ...

Each run asks three sub-queries of its own ("Do r17a [0.05 s]. Do r17b ... Then do r17c"),
so a result that came back from another run, or a lost answer, is caught: every run must
end with its own three answers. Reports runs per second, latency percentiles, errors, lost
results, and memory (RSS) after the warm-up runs against the end, plus, for the library, the
count of live compllm objects (a leak shows as growth).

- `--target library`: `CompLLM.invoke` from a thread pool, in this process.
- `--target server`: `langgraph dev` serving the same graph, driven by `langgraph-sdk`
  (stateless runs; RSS is the server's).
- `--experts fake` (default): simulated experts that take the latency written in the
  question; `--experts engine --engine-url http://127.0.0.1:PORT/v1`: real experts on an
  OpenAI-compatible engine (llama.cpp's server with SmolLM2 in the README's figures).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, SIMULATED_REGISTRY, SimulatedExpert, SimulatedProvider, write_json
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from compllm import CompLLM
from compllm.bench.metrics import percentile
from compllm.registry import parse_registry

CONTEXT = {
    "planner_mode": "rules",
    "planner_model": "sim-planner",
    "aggregator_model": "sim-aggregator",
    "embedding_model": "constant",
}


class EchoExpert(SimulatedExpert):
    """A simulated expert whose answer names the sub-query it answers."""

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        super()._generate(messages, *args, **kwargs)
        return _echo(messages)

    async def _agenerate(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> ChatResult:
        await super()._agenerate(messages, *args, **kwargs)
        return _echo(messages)


def _echo(messages: list[BaseMessage]) -> ChatResult:
    question = messages[-1].text.splitlines()[-1]
    tag = question.split()[-3] if "[" in question else question
    return ChatResult(generations=[ChatGeneration(message=AIMessage(content=f"answer {tag}"))])


def query(index: int, latency: float) -> str:
    return (
        f"Do r{index}a [{latency} s]. Do r{index}b [{latency} s]. Then do r{index}c [{latency} s]."
    )


def check(index: int, answers: dict[str, str]) -> bool:
    """Whether a run came back with its own three answers, and nothing else."""
    expected = {f"answer r{index}{part}" for part in "abc"}
    return set(answers.values()) == expected


def engine_registry(url: str) -> Any:
    return parse_registry(
        f"""
generalist: worker
experts:
  - name: worker
    description: answers everything
    model: "openai:smollm2@{url}?timeout=120"
    system_prompt: Answer in one short sentence.
    generation: {{max_new_tokens: 16}}
""",
        source="load-engine",
    )


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of a process and its children (MiB), from /proc."""
    pids = [pid or os.getpid()]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pids[0]}/task/{pids[0]}/children").read_text().split()
        pids += [int(c) for c in children]
    total = 0
    for one in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def live_compllm_objects() -> int:
    gc.collect()
    return sum(
        1 for o in gc.get_objects() if str(getattr(type(o), "__module__", "")).startswith("compllm")
    )


def library(args: argparse.Namespace) -> dict[str, Any]:
    if args.experts == "engine":
        app = CompLLM(registry=engine_registry(args.engine_url))
        context = {**CONTEXT, "aggregator_model": f"openai:smollm2@{args.engine_url}"}
        context.pop("planner_model")
        context.pop("embedding_model")
    else:
        app = CompLLM(registry=SIMULATED_REGISTRY, provider=SimulatedProvider(EchoExpert()))
        context = CONTEXT
    warm_up = max(1, args.runs // 10)
    latencies: list[float] = []
    errors: list[str] = []
    lost = 0
    marks: dict[str, float] = {}

    def one(index: int) -> None:
        nonlocal lost
        started = time.perf_counter()
        try:
            result = app.invoke(query(index, args.latency), **context)
        except Exception as exc:  # counted, not raised: the load goes on
            errors.append(f"{type(exc).__name__}: {exc}")
            return
        latencies.append(time.perf_counter() - started)
        answers = {a.id: a.answer for a in result.answers if a.status == "ok"}
        if args.experts == "engine":
            lost += len(answers) != 3
        else:
            lost += not check(index, answers)

    with concurrent.futures.ThreadPoolExecutor(args.concurrency) as workers:
        list(workers.map(one, range(warm_up)))
        marks["rss_after_warm_up_mb"] = rss_mb()
        marks["objects_after_warm_up"] = live_compllm_objects()
        started = time.perf_counter()
        list(workers.map(one, range(warm_up, args.runs)))
        wall = time.perf_counter() - started
    marks["rss_end_mb"] = rss_mb()
    marks["objects_end"] = live_compllm_objects()
    return _report(args, latencies[warm_up:], errors, lost, wall, args.runs - warm_up, marks)


def server(args: argparse.Namespace) -> dict[str, Any]:
    from langgraph_sdk import get_client

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.servers import langgraph_dev

    config = Path(__file__).parent / "load_server" / "langgraph.json"
    warm_up = max(1, args.runs // 10)
    latencies: list[float] = []
    errors: list[str] = []
    lost = 0
    marks: dict[str, float] = {}

    async def drive(url: str, indexes: range) -> None:
        nonlocal lost
        client = get_client(url=url, timeout=300)
        gate = asyncio.Semaphore(args.concurrency)

        async def one(index: int) -> None:
            nonlocal lost
            async with gate:
                started = time.perf_counter()
                try:
                    values = await client.runs.wait(
                        None, "load", input={"query": query(index, args.latency)}, context=CONTEXT
                    )
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return
                latencies.append(time.perf_counter() - started)
                answers = {k: v["answer"] for k, v in (values.get("answers") or {}).items()}
                lost += not check(index, answers)

        await asyncio.gather(*(one(i) for i in indexes))

    log = RESULTS / "load-server.log" if args.keep_log else Path(os.devnull)
    with langgraph_dev(config, log, LANGGRAPH_STRICT_MSGPACK="true") as url:
        pid = _server_pid(url)
        asyncio.run(drive(url, range(warm_up)))
        marks["rss_after_warm_up_mb"] = rss_mb(pid)
        started = time.perf_counter()
        asyncio.run(drive(url, range(warm_up, args.runs)))
        wall = time.perf_counter() - started
        marks["rss_end_mb"] = rss_mb(pid)
    return _report(args, latencies[warm_up:], errors, lost, wall, args.runs - warm_up, marks)


def _server_pid(url: str) -> int | None:
    """The process listening on the server's port (from /proc/net/tcp)."""
    port = int(url.rsplit(":", 1)[1])
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
            inodes.add(fields[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd).removeprefix("socket:[").rstrip("]") in inodes:
                    return int(proc.name)
    return None


def _report(args, latencies, errors, lost, wall, measured, marks) -> dict[str, Any]:
    report = {
        "target": args.target,
        "experts": args.experts,
        "runs_measured": measured,
        "concurrency": args.concurrency,
        "subqueries_per_run": 3,
        "expert_latency_s": args.latency if args.experts == "fake" else None,
        "wall_s": round(wall, 2),
        "runs_per_s": round(measured / wall, 2) if wall else None,
        "p50_s": round(percentile(latencies, 50), 3) if latencies else None,
        "p95_s": round(percentile(latencies, 95), 3) if latencies else None,
        "errors": len(errors),
        "first_errors": errors[:3],
        "lost_results": lost,
        **{k: round(v, 1) for k, v in marks.items()},
    }
    for key, value in report.items():
        print(f"{key:>24}: {value}")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=["library", "server"], default="library")
    parser.add_argument("--experts", choices=["fake", "engine"], default="fake")
    parser.add_argument("--engine-url", help="http://127.0.0.1:PORT/v1 (with --experts engine)")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.05, help="fake expert seconds")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--keep-log", action="store_true", help="keep the server's log")
    args = parser.parse_args()
    if args.experts == "engine" and (not args.engine_url or args.target != "library"):
        parser.error("--experts engine needs --engine-url and --target library")
    report = library(args) if args.target == "library" else server(args)
    name = f"load-{args.target}-{args.experts}"
    write_json(name, {"report": report}, args.out_dir)


if __name__ == "__main__":
    main()

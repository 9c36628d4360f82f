"""`compllm ask "QUERY"`: plan tree, each answer as it finishes, then the final answer."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, NoReturn, TextIO

from langchain_core.tracers.langchain import wait_for_all_tracers

from compllm import __version__
from compllm import commands as subcommands
from compllm.api import CompLLM, CompLLMResult
from compllm.checkpoint import open_checkpointer
from compllm.errors import CompLLMError
from compllm.models import ModelProvider, default_hub
from compllm.plan import Plan, PlanError
from compllm.planning import command as train_planner
from compllm.pool import parse_bytes
from compllm.state import Context
from compllm.visualize import require_matplotlib, write_trace

__all__ = ["main", "render_plan_tree", "run"]


def render_plan_tree(plan: Plan) -> list[str]:
    """The plan as an indented tree: each sub-query under its first parent, with its expert,
    that expert's routing score and any further parents it needs."""
    lines: list[str] = []

    def walk(sid: str, prefix: str, last: bool) -> None:
        sub = plan.get(sid)
        score = sub.scores.get(sub.expert or "", None)
        expert = f"{sub.expert} {score:.2f}" if score is not None else (sub.expert or "unrouted")
        extra = sub.depends_on[1:]
        needs = f"  (also needs {', '.join(extra)})" if extra else ""
        lines.append(
            f"{prefix}{'└── ' if last else '├── '}{sub.id} [{expert}] {sub.question}{needs}"
        )
        children = [s.id for s in plan.subqueries if s.depends_on[:1] == (sid,)]
        for index, child in enumerate(children):
            walk(child, prefix + ("    " if last else "│   "), index == len(children) - 1)

    roots = [s.id for s in plan.subqueries if not s.depends_on]
    for index, root in enumerate(roots):
        walk(root, "", index == len(roots) - 1)
    return lines


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compllm", description="Composable LLM inference (Comp-LLM) on LangGraph."
    )
    parser.add_argument("--version", action="version", version=f"compllm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    ask = commands.add_parser("ask", help="answer a query with the expert pipeline")
    ask.add_argument("query", help="the question (several parts are fine)")
    ask.add_argument("--experts", metavar="FILE", help="expert registry (YAML or TOML)")
    ask.add_argument(
        "--allow-python",
        action="store_true",
        help="let the registry name Python objects (python:pkg.mod:name): runs that code",
    )
    ask.add_argument("--json", action="store_true", help="print one JSON result, nothing else")
    ask.add_argument(
        "--planner",
        choices=["auto", "learned", "llm", "rules"],
        default="auto",
        help="planning mode",
    )
    ask.add_argument(
        "--planner-model", help="learned planner folder, or an LLM (hub id, path, openai:...)"
    )
    ask.add_argument("--aggregator-model", help="model id/path for the aggregator")
    ask.add_argument("--embedding-model", help="sentence-embedding model id/path for routing")
    ask.add_argument("--threshold", type=float, help="routing threshold (default: registry's)")
    ask.add_argument("--max-concurrency", type=int, help="most expert calls at once")
    ask.add_argument(
        "--executor",
        choices=["dataflow", "waves"],
        help="dataflow (default): each sub-query starts when its own parents are done",
    )
    ask.add_argument("--max-batch", type=int, help="most sub-queries batched on one model")
    ask.add_argument(
        "--memory-budget",
        type=_memory_size,
        metavar="SIZE",
        help="most model weights loaded at once, e.g. 6GB (default: $COMPLLM_MEMORY_BUDGET)",
    )
    ask.add_argument("--timeout", type=float, help="seconds per expert call before a retry")
    ask.add_argument(
        "--thread",
        metavar="ID",
        help="save the run under this id; with an id used before, resume that run (finished "
        "sub-queries are not recomputed) or print its answer",
    )
    ask.add_argument(
        "--checkpoint",
        metavar="TARGET",
        help="where runs are saved: a SQLite file (default with --thread: "
        "$COMPLLM_CHECKPOINT or ~/.local/state/compllm/checkpoints.sqlite), "
        "postgresql://... or memory",
    )
    ask.add_argument(
        "--review",
        action="store_true",
        help="show the routed plan and ask before running it: approve, edit or cancel",
    )
    ask.add_argument(
        "--trace",
        metavar="DIR",
        help="write result.json, plan.mmd, plan.png/.svg and timeline.png/.svg into DIR",
    )
    subcommands.add_commands(commands)
    train_planner.add_command(commands)
    return parser


def _memory_size(text: str) -> int:
    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _context(args: argparse.Namespace) -> Context:
    overrides: dict[str, Any] = {
        "planner_mode": args.planner,
        "planner_model": args.planner_model,
        "aggregator_model": args.aggregator_model,
        "embedding_model": args.embedding_model,
        "routing_threshold": args.threshold,
        "expert_timeout_s": args.timeout,
        "max_parallel_experts": args.max_concurrency,
        "executor": args.executor,
        "max_batch_size": args.max_batch,
        "review_plan": args.review or None,
    }
    return Context(**{k: v for k, v in overrides.items() if v is not None})


def _ask(
    args: argparse.Namespace,
    streams: tuple[TextIO, TextIO, TextIO],
    provider: ModelProvider | None,
) -> int:
    in_, out, err = streams
    if not args.query.strip():
        raise CompLLMError("the query is empty")
    if args.trace:
        require_matplotlib()  # before the run, not after it
    with _checkpointer(args) as saver:
        app = CompLLM(
            registry=args.experts,
            context=_context(args),
            provider=provider or _hub(err),
            memory_budget=args.memory_budget,
            checkpointer=saver,
            allow_python=args.allow_python,
        )
        result = _show_run(app.stream(args.query, thread_id=args.thread), args, out)
        while result.status == "awaiting_review":
            assert result.review is not None
            assert result.thread_id is not None
            decision = _review_decision(result.review, in_, err)
            if decision is None:
                print(
                    f"compllm: no decision; the run stays paused on thread {result.thread_id}",
                    file=err,
                )
                return 1
            result = _show_run(app.stream_resume(result.thread_id, decision), args, out)
    if args.trace:
        for path in write_trace(result, args.trace):
            print(f"· wrote {path}", file=err)
    if args.json:
        print(result.model_dump_json(indent=2), file=out)
        return 0
    print(f"\nFinal answer ({result.aggregation}):", file=out)
    print(result.answer, file=out)
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items() if k != "total")
    print(
        f"\n(planner: {result.planner_path}; total {result.timings['total']:.1f} s: {timings})",
        file=out,
    )
    if saver is not None:
        print(f"(thread {result.thread_id})", file=out)
    return 0


def _checkpointer(args: argparse.Namespace) -> AbstractContextManager[Any]:
    if args.checkpoint or args.thread:
        return open_checkpointer(args.checkpoint)
    if args.review:  # the pause needs one, but nothing outlives this process
        return open_checkpointer("memory")
    return nullcontext(None)


def _show_run(events: Iterator[tuple[str, Any]], args: argparse.Namespace, out: TextIO) -> Any:
    """Print a run's plan and answers as they come; returns its `CompLLMResult`."""
    result: CompLLMResult | None = None
    for kind, payload in events:
        if kind == "result":
            result = payload
        elif args.json:
            continue
        elif kind == "update" and "plan" in (update := _node_update(payload, "route", "review")):
            plan = Plan.from_data(update["plan"])
            print(f"Plan ({len(plan)} sub-queries):", file=out)
            print("\n".join(render_plan_tree(plan)), file=out, flush=True)
            print(file=out)
        elif kind == "event" and payload.get("event") == "subquery_end":
            status = "" if payload["status"] == "ok" else f" {payload['status'].upper()}"
            print(
                f"[{payload['id']}] {payload['expert']} · {payload['latency_s']:.1f} s{status}",
                file=out,
            )
            body = payload["answer"] if payload["status"] == "ok" else payload["error"]
            print(_indent(body), file=out, flush=True)
    assert result is not None
    return result


def _node_update(payload: dict[str, Any], *nodes: str) -> dict[str, Any]:
    for node in nodes:
        if isinstance(payload.get(node), dict):
            return dict(payload[node])
    return {}


def _review_decision(request: dict[str, Any], in_: TextIO, err: TextIO) -> Any:
    """Ask on the terminal what to do with a paused plan; None when stdin has no answer."""
    plan = Plan.model_validate(request["plan"])
    print("Review the plan before it runs:", file=err)
    print("\n".join(render_plan_tree(plan)), file=err)
    if request.get("error"):
        print(f"The last edit could not be used: {request['error']}", file=err)
    while True:
        print("Run it? [Y]es / [n]o, cancel / [e]dit in $EDITOR: ", end="", file=err, flush=True)
        line = in_.readline()
        if not line:
            return None
        answer = line.strip().lower()
        if answer in ("", "y", "yes"):
            return "approve"
        if answer in ("n", "no", "cancel"):
            return "cancel"
        if answer in ("e", "edit"):
            edited = _edit_json(request["plan"], err)
            if edited is not None:
                return {"plan": edited}


def _edit_json(data: Any, err: TextIO) -> Any:
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not editor:
        print("Set $EDITOR (or $VISUAL) to edit the plan.", file=err)
        return None
    with tempfile.NamedTemporaryFile("w+", suffix=".json", delete=False) as handle:
        json.dump(data, handle, indent=2)
    path = Path(handle.name)
    try:
        subprocess.run([*shlex.split(editor), str(path)], check=True)
        return json.loads(path.read_text())
    except (subprocess.CalledProcessError, OSError, json.JSONDecodeError) as exc:
        print(f"Could not read the edited plan: {exc}", file=err)
        return None
    finally:
        path.unlink(missing_ok=True)


def _hub(err: TextIO) -> ModelProvider:
    """The default hub, reporting model loads on stderr."""
    hub = default_hub()
    hub.on_event = lambda message: print(f"· {message}", file=err, flush=True)
    return hub


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.strip().splitlines()) + "\n"


def main(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    in_: TextIO | None = None,
    provider: ModelProvider | None = None,
) -> int:
    """Run the CLI; returns the exit status. `provider` replaces the real models (tests)."""
    in_, out, err = in_ or sys.stdin, out or sys.stdout, err or sys.stderr
    args = _parser().parse_args(argv)
    try:
        if args.command == "ask":
            return _ask(args, (in_, out, err), provider)
        if args.command == "train-planner":
            return train_planner.run(args, out, err)
        return subcommands.run_command(args, out, err, provider or _hub(err))
    except (CompLLMError, PlanError) as exc:
        print(f"compllm: error: {exc}", file=err)
        return 2
    except KeyboardInterrupt:
        print("compllm: interrupted", file=err)
        return 130


def run() -> NoReturn:
    """The `compllm` command: `main`, then exit without the interpreter's teardown. Freeing
    torch, llama.cpp and some 3,000 modules one by one took 1.2 s of a 14 s `compllm ask`
    on 2 cores, for a process that is ending. What must end properly still does: `main`
    closes checkpointers and files, the exit handlers run (LangSmith sends the last traces,
    logging flushes), and the output is flushed."""
    try:
        status = main()
    except BrokenPipeError:  # the reader went away (`compllm ask ... | head`)
        status = 1
    # LangSmith drains its queue of traces once the main thread has ended, which it never
    # does here: send them now. Then every `atexit` handler, as a normal exit runs them.
    wait_for_all_tracers()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be written
            status = status or 1
    os._exit(status)


if __name__ == "__main__":
    run()

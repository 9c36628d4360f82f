"""`compllm ask "QUERY"`: plan tree, each answer as it finishes, then the final answer."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from compllm import __version__
from compllm.api import CompLLM, CompLLMResult
from compllm.bench import commands as bench_commands
from compllm.errors import CompLLMError
from compllm.models import ModelProvider, default_hub
from compllm.plan import Plan, PlanError
from compllm.pool import parse_bytes
from compllm.state import Context

__all__ = ["main", "render_plan_tree"]


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
    ask.add_argument("--json", action="store_true", help="print one JSON result, nothing else")
    ask.add_argument(
        "--planner", choices=["auto", "llm", "rules"], default="auto", help="planning mode"
    )
    ask.add_argument("--planner-model", help="model id/path for the planner")
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
    bench_commands.add_commands(commands)
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
    }
    return Context(**{k: v for k, v in overrides.items() if v is not None})


def _ask(args: argparse.Namespace, out: TextIO, err: TextIO, provider: ModelProvider | None) -> int:
    if not args.query.strip():
        raise CompLLMError("the query is empty")
    app = CompLLM(
        registry=args.experts,
        context=_context(args),
        provider=provider or _hub(err),
        memory_budget=args.memory_budget,
    )
    result: CompLLMResult | None = None
    for kind, payload in app.stream(args.query):
        if kind == "result":
            result = payload
        elif args.json:
            continue
        elif kind == "update" and "route" in payload:
            plan: Plan = payload["route"]["plan"]
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
    return 0


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
    provider: ModelProvider | None = None,
) -> int:
    """Run the CLI; returns the exit status. `provider` replaces the real models (tests)."""
    out, err = out or sys.stdout, err or sys.stderr
    args = _parser().parse_args(argv)
    try:
        if args.command == "ask":
            return _ask(args, out, err, provider)
        return bench_commands.run_command(args, out, err, provider or _hub(err))
    except (CompLLMError, PlanError) as exc:
        print(f"compllm: error: {exc}", file=err)
        return 2
    except KeyboardInterrupt:
        print("compllm: interrupted", file=err)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""`compllm bench build|run|report`: the benchmark harness's command line. Imported only when
`compllm bench` runs (see `compllm.commands`)."""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TextIO

from langchain_core.messages import HumanMessage

from compllm.api import CompLLM
from compllm.bench.loglik import (
    LOGLIK_SYSTEMS,
    OptionScorer,
    TransformersOptionScorer,
    loglik_run,
)
from compllm.bench.metrics import summarize
from compllm.bench.report import markdown_report, write_report
from compllm.bench.runner import RUNS_FILE, Track, load_runs, run_suite, write_runs
from compllm.bench.suite import CompositeItem, build_suite, read_suite, write_suite
from compllm.bench.systems import (
    SYSTEMS,
    Mode,
    SystemName,
    SystemRun,
    is_chat_model_with_weights,
    is_local_model,
    rescore,
    run_system,
)
from compllm.checkpoint import open_checkpointer
from compllm.errors import CompLLMError
from compllm.mmlu import DEFAULT_MMLU_FILE, load_mmlu, split_questions
from compllm.models import ModelProvider, parameter_count
from compllm.plan import Plan
from compllm.pool import ExpertPool
from compllm.registry import Registry, default_registry, load_registry
from compllm.state import Context

__all__ = ["main", "parser"]

MODES: tuple[Mode, ...] = ("generate", "loglik")
SUITE_FILE = "suite.jsonl"  # the items a results folder was run on, copied beside its runs


def parser() -> argparse.ArgumentParser:
    bench = argparse.ArgumentParser(
        prog="compllm bench",
        description="MultiExpertQA-style benchmark: monolithic, comp-llm, sequential and "
        "oracle-plan on the same models and questions, scored on final answers, per-part "
        "answers and option log-likelihood, against naive baselines.",
    )
    steps = bench.add_subparsers(dest="step", required=True)
    build = steps.add_parser("build", help="write a suite of composite queries (JSONL)")
    build.add_argument(
        "--data",
        default=str(DEFAULT_MMLU_FILE),
        help="MMLU JSONL or 'hub' (default: the MMLU questions shipped with compllm)",
    )
    build.add_argument("--out", required=True, metavar="FILE")
    build.add_argument("--parallel", type=int, default=56, help="parallel composites")
    build.add_argument("--dependent", type=int, default=24, help="dependent composites")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument(
        "--all-questions",
        action="store_true",
        help="draw from every question (default: the held-out 20%%, unseen by `compllm fit`)",
    )
    run = steps.add_parser("run", help="run systems on a suite (resumes where it stopped)")
    run.add_argument("suite", metavar="SUITE", help="a suite written by `compllm bench build`")
    run.add_argument(
        "--out", required=True, metavar="DIR", help="runs.jsonl, results and plots go here"
    )
    run.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated")
    run.add_argument(
        "--modes",
        default=",".join(MODES),
        help="generate (answers written by the models), loglik (multiple-choice options "
        "scored by likelihood under each system's prompt; local transformers models only)",
    )
    run.add_argument("--experts", metavar="FILE", help="expert registry (default: built-in)")
    run.add_argument("--planner", choices=["auto", "llm", "rules"], default="auto")
    run.add_argument("--planner-model")
    run.add_argument("--aggregator-model")
    run.add_argument("--expert-model", help="run every expert on this model id/path")
    run.add_argument(
        "--monolithic-model", help="the monolithic baseline (default: the generalist's model)"
    )
    run.add_argument("--max-new-tokens", type=int, default=64, help="per part")
    run.add_argument("--limit", type=int, help="only the first N items")
    run.add_argument("--fresh", action="store_true", help="discard earlier runs in DIR")
    run.add_argument("--no-progress", action="store_true")
    report = steps.add_parser("report", help="write results.json, results.md and plots")
    report.add_argument("folder", metavar="DIR")
    report.add_argument(
        "--rescore",
        action="store_true",
        help="read the kept answers again with the current extraction rules (no model runs)",
    )
    return bench


def main(argv: Sequence[str], out: TextIO, err: TextIO, provider: ModelProvider) -> int:
    args = parser().parse_args(argv)
    if args.step == "build":
        return _build(args, out)
    if args.step == "run":
        _run(args, provider, err)
    folder = Path(args.folder if args.step == "report" else args.out)
    return _report(folder, out, provider, rescoring=getattr(args, "rescore", False))


def _build(args: argparse.Namespace, out: TextIO) -> int:
    loaded = load_mmlu(args.data)
    questions = loaded.questions
    if not args.all_questions:
        _, questions = split_questions(questions)
    items = build_suite(questions, parallel=args.parallel, dependent=args.dependent, seed=args.seed)
    write_suite(items, Path(args.out))
    half = "all of them" if args.all_questions else f"the held-out part ({len(questions)})"
    parts = [p for i in items for p in i.parts]
    choice = sum(p.kind == "choice" for p in parts)
    styles = Counter(i.style for i in items)
    print(
        f"{loaded.describe()}; drew from {half}\nwrote {args.out}: {len(items)} items "
        f"({args.parallel} parallel, {args.dependent} dependent), {len(parts)} parts "
        f"({choice} multiple choice, {len(parts) - choice} arithmetic), {len(styles)} "
        f"wording styles, seed {args.seed}",
        file=out,
    )
    return 0


def _names(text: str, known: Sequence[str], what: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise CompLLMError(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def _run(args: argparse.Namespace, provider: ModelProvider, err: TextIO) -> None:
    items = read_suite(Path(args.suite))[: args.limit]
    systems: list[SystemName] = _names(args.systems, SYSTEMS, "systems")  # type: ignore[assignment]
    modes: list[Mode] = _names(args.modes, MODES, "modes")  # type: ignore[assignment]
    tracks: list[Track] = [("generate", s) for s in systems if "generate" in modes]
    tracks += [("loglik", s) for s in systems if "loglik" in modes and s in LOGLIK_SYSTEMS]
    folder = Path(args.out)
    if args.fresh:
        (folder / RUNS_FILE).unlink(missing_ok=True)
    overrides = {
        "planner_mode": args.planner,
        "planner_model": args.planner_model,
        "aggregator_model": args.aggregator_model,
    }
    context = Context(**{k: v for k, v in overrides.items() if v is not None})
    registry = _bench_registry(
        load_registry(args.experts) if args.experts else default_registry(),
        max_new_tokens=args.max_new_tokens,
        expert_model=args.expert_model,
    )
    pool = ExpertPool(provider)
    app = CompLLM(registry=registry, context=context, pool=pool)
    monolithic = args.monolithic_model or str(registry.expert(registry.generalist).model)
    meta: dict[str, Any] = {
        "suite": f"{args.suite} ({len(items)} items, {sum(len(i.parts) for i in items)} parts)",
        "systems": systems,
        "modes": modes,
        "planner": f"{context.planner_mode} ({context.planner_model})",
        "experts": registry.source,
        "monolithic_model": monolithic,
        "max_new_tokens_per_part": args.max_new_tokens,
    }
    folder.mkdir(parents=True, exist_ok=True)
    write_suite(items, folder / SUITE_FILE)
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    scorer_for = _option_scorers(provider)

    with ExitStack() as stack:
        planning_app: CompLLM | None = None
        if ("loglik", "comp-llm") in tracks:
            # Plans for log-likelihood scoring when no generation run made one: the run
            # pauses for review after routing and is never resumed (no expert runs).
            saver = stack.enter_context(open_checkpointer("memory"))
            planning_app = CompLLM(
                registry=registry, context=context, pool=pool, checkpointer=saver
            )

        def routed_plan(
            item: CompositeItem, reference: SystemRun | None
        ) -> tuple[Plan, float, bool]:
            """(comp-llm's routed plan for the item, its planning time, made now?)."""
            if reference is not None and reference.plan is not None:
                return reference.plan, reference.plan_s, False
            assert planning_app is not None
            started = time.perf_counter()
            paused = planning_app.invoke(item.query, review_plan=True)
            return paused.plan, time.perf_counter() - started, True

        def run_one(
            mode: Mode, system: SystemName, item: CompositeItem, reference: SystemRun | None
        ) -> SystemRun:
            if mode == "generate":
                return run_system(
                    system,
                    item,
                    app,
                    pool,
                    monolithic_model=monolithic,
                    max_new_tokens=args.max_new_tokens,
                    reference=reference,
                )
            plan, plan_s, planned_now = (
                routed_plan(item, reference) if system == "comp-llm" else (None, 0.0, False)
            )
            return loglik_run(
                system,
                item,
                scorer_for=scorer_for,
                registry=registry,
                monolithic_model=monolithic,
                plan=plan,
                plan_s=plan_s,
                planned_now=planned_now,
            )

        def warm_up() -> None:
            """Load every model and the router's profiles: one tiny pipeline run through the
            planner (whatever kind of planner the context names), the monolithic model, and
            the aggregator (a one-part run passes its answer through without it)."""
            app.invoke("Hello?")
            pool.call(monolithic, [HumanMessage("Hello?")], {"max_new_tokens": 1}).result()
            with pool.lease(context.aggregator_model):
                pass
            if any(mode == "loglik" for mode, _ in tracks):
                print("· loading models for log-likelihood scoring ...", file=err, flush=True)
                for ref in {
                    monolithic,
                    *(s.model for s in registry.experts if is_local_model(s.model)),
                }:
                    scorer_for(ref)

        runs = run_suite(
            items, tracks, run_one, folder, progress=not args.no_progress, warm_up=warm_up
        )
    # Counted now, while the models are loaded, so `bench report` never has to load them.
    models = sorted({m for r in runs for m in r.models})
    meta["parameters"] = _parameters(provider, models)
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _option_scorers(provider: ModelProvider) -> Callable[[str], OptionScorer]:
    """One option scorer per model reference, loaded on first use: the provider's own when it
    offers one (`provider.option_scorer(ref)`), else the model loaded through transformers."""
    loaded: dict[str, OptionScorer] = {}
    own = getattr(provider, "option_scorer", None)

    def scorer_for(ref: str) -> OptionScorer:
        if ref not in loaded:
            loaded[ref] = own(ref) if callable(own) else TransformersOptionScorer.load(ref)
        return loaded[ref]

    return scorer_for


def _bench_registry(
    registry: Registry, *, max_new_tokens: int, expert_model: str | None
) -> Registry:
    """Every expert with the benchmark's token budget, and on `expert_model` if given."""
    experts = []
    for spec in registry.experts:
        generation = spec.generation.model_copy(update={"max_new_tokens": max_new_tokens})
        update: dict[str, Any] = {"generation": generation}
        if expert_model:
            update["model"] = expert_model
        experts.append(spec.model_copy(update=update))
    return registry.model_copy(update={"experts": tuple(experts)})


def _parameters(provider: ModelProvider, models: Sequence[str]) -> dict[str, int | None]:
    """Parameter counts of the chat models with local weights (None for the others: remote
    endpoints, tools such as the calculator, a learned planner)."""
    return {
        m: parameter_count(provider, m) if is_chat_model_with_weights(m) else None for m in models
    }


def _report(folder: Path, out: TextIO, provider: ModelProvider, *, rescoring: bool = False) -> int:
    runs = load_runs(folder)
    if not runs:
        raise CompLLMError(f"{folder}: no runs to report")
    if not (folder / SUITE_FILE).is_file():
        raise CompLLMError(f"{folder}: no {SUITE_FILE} (run `compllm bench run` into it again)")
    items = read_suite(folder / SUITE_FILE)
    if rescoring:
        by_id = {item.id: item for item in items}
        runs = [rescore(run, by_id[run.item_id]) if run.item_id in by_id else run for run in runs]
        write_runs(folder, runs)
    meta_file = folder / "meta.json"
    meta = json.loads(meta_file.read_text("utf-8")) if meta_file.is_file() else {}
    parameters = dict(meta.get("parameters") or {})
    missing = sorted({m for r in runs for m in r.models} - set(parameters))
    parameters.update(_parameters(provider, missing))
    summary = summarize(runs, items, parameters)
    written = write_report(folder, summary, runs, meta)
    print(markdown_report(summary), file=out)
    print("wrote " + ", ".join(str(p) for p in written), file=out)
    return 0

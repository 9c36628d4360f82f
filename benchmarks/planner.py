"""Planners side by side: the rule decomposer, the base LLM planner (embedded SmolLM2) and the
learned planner (and any planner you name), on phrasing and topics the learned planner never
saw in training, and on two sets of hand-written queries.

    .venv/bin/python benchmarks/planner.py [--heldout 500] [--llm-sample 30] [--skip-llm]
        [--planner REF ...] [--llm-only | --llm-rows FILE]

Sets: `held-out` (generated with held-out phrasing families, referring words and topics;
`compllm.planning.corpus`), and three hand-written sets in benchmarks/planner_eval/:
`hand-written dev (trained on)` (60, written with the generator's first version; looked at
while developing, and part of the shipped planner's training data), `hand-written dev 2`
(150, written later by someone who had seen neither the generator nor the other sets; its
failures were studied, never trained on) and `hand-written test` (130, written independently
of the generator; run only as a whole, never looked at query by query nor tuned on). The
packaged hand-written training examples (`--data handwritten`) share no query with the last
two (tests/test_train_planner.py checks it). Per set and planner: right number of parts,
exactly right dependency edges, right expert for every part (the plan routed by the default
registry and router), fully right plans (all three), queries where a question was dropped or
merged, and planning time per query (p50/p95). Rates come with Wilson 95% intervals. LLM
planners take 5-15 s a plan on a CPU, so they run on a fixed random sample (`--llm-sample`
per set, seed 0); the others run on every query. An LLM plan that fails the planner's checks
twice counts as no plan (wrong on every measure), as in `planner_mode="llm"`.

The LLM rows do not depend on the learned planner, and they take most of the run's time:
`--llm-only` measures only the LLM planners and writes `planner-llm.json`; `--llm-rows FILE`
then takes those rows from it (same sets, sizes, held-out seed and sample, else it stops)
instead of measuring them again, and says so in the results.

Also measured: routing of dependent parts ("When was he born?") by their own words vs with
their parents' questions (`compllm.router.routing_texts`), on the gold plans of the
hand-written sets.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _common import RESULTS, print_table, pyplot, save_plot, write_json

from compllm.decompose import decompose
from compllm.models import (
    EMBEDDED_CHAT_MODEL,
    EMBEDDED_EMBEDDINGS,
    EMBEDDED_PLANNER,
    ModelHub,
    is_learned_planner,
)
from compllm.plan import Plan, PlanError, SubQuery
from compllm.planner import plan_query
from compllm.planning.corpus import generate
from compllm.planning.examples import Example, read_examples
from compllm.planning.metrics import Rate, score_plan, summarise
from compllm.registry import default_registry
from compllm.router import ExpertRouter, route_plan

EVAL = Path(__file__).parent / "planner_eval"
Planner = Callable[[str], Plan | None]


def learned_planner(hub: ModelHub, ref: str) -> Planner:
    planner = hub.planner(ref)
    return lambda query: planner.plan(query)


def llm_planner(hub: ModelHub, ref: str) -> Planner:
    import torch

    torch.manual_seed(0)  # the retry samples: the same run gives the same plans
    llm = hub.chat_model(ref)

    def plan(query: str) -> Plan | None:
        try:
            return plan_query(
                query, llm, max_subqueries=16, max_new_tokens=320, allow_fallback=False
            )[0]
        except PlanError:
            return None

    return plan


def measure(
    name: str, planner: Planner, examples: Sequence[Example], router: ExpertRouter
) -> dict[str, Any]:
    scores, seconds = [], []
    for example in examples:
        started = time.perf_counter()
        plan = planner(example.query)
        seconds.append(time.perf_counter() - started)
        if plan is None:  # no valid plan: one empty sub-query, wrong on every count
            plan = Plan.build([SubQuery(id="q1", question="(no plan)")])
        scores.append(score_plan(route_plan(plan, router), example))
    rates = summarise(scores)
    ordered = sorted(seconds)
    row: dict[str, Any] = {
        "planner": name,
        "queries": len(examples),
        **{k: v.as_dict() for k, v in rates.items()},
        "seconds_p50": round(statistics.median(ordered), 4),
        "seconds_p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 4),
    }
    print(
        f"  {name:<28} parts {rates['parts']}  edges {rates['edges']}  fully {rates['fully_right']}"
    )
    return row


def dependent_routing(examples: Sequence[Example], router: ExpertRouter) -> dict[str, Any]:
    """Routing accuracy of gold dependent parts: own words vs parents' questions + own."""
    own, with_parents = [], []
    for example in examples:
        plan = Plan.build(
            [
                SubQuery(
                    id=f"q{i + 1}",
                    question=example.text(i),
                    depends_on=tuple(f"q{d + 1}" for d in part.depends_on),
                )
                for i, part in enumerate(example.parts)
            ]
        )
        routed = route_plan(plan, router)
        alone = router.route([s.question for s in plan.subqueries])
        for index, (part, sub) in enumerate(zip(example.parts, routed.subqueries, strict=True)):
            if part.depends_on and part.expert:
                claim = _claimed(router, sub.question)
                own.append((claim or alone[index].expert) == part.expert)
                with_parents.append(sub.expert == part.expert)
    return {
        "dependent_parts": len(own),
        "own_words": Rate(sum(own), len(own)).as_dict(),
        "with_parents": Rate(sum(with_parents), len(with_parents)).as_dict(),
        "routing_texts": "parents' questions, then the part's own question",
    }


def _claimed(router: ExpertRouter, question: str) -> str | None:
    return next(
        (e.name for e in router.registry.experts if e.accepts is not None and e.accepts(question)),
        None,
    )


def plot(rows: list[dict[str, Any]], sets: list[str], out_dir: Path) -> Path:
    plt = pyplot()
    planners = list(dict.fromkeys(r["planner"] for r in rows))
    metrics = [("parts", "right parts"), ("edges", "right edges"), ("fully_right", "fully right")]
    figure, axes = plt.subplots(1, len(sets) + 1, figsize=(4.2 * (len(sets) + 1), 4.2))
    width = 0.8 / len(planners)
    for axis, name in zip(axes, sets, strict=False):
        for k, planner in enumerate(planners):
            row = next((r for r in rows if r["set"] == name and r["planner"] == planner), None)
            if row is None:
                continue
            values = [row[m]["rate"] for m, _ in metrics]
            low = [row[m]["rate"] - row[m]["ci95"][0] for m, _ in metrics]
            high = [row[m]["ci95"][1] - row[m]["rate"] for m, _ in metrics]
            positions = [i + (k - (len(planners) - 1) / 2) * width for i in range(len(metrics))]
            axis.bar(positions, values, width, yerr=[low, high], capsize=2, label=planner)
        axis.set_xticks(range(len(metrics)), [label for _, label in metrics])
        axis.set_ylim(0, 1.05)
        axis.set_title(name)
    for k, planner in enumerate(planners):
        times = [r["seconds_p50"] for r in rows if r["planner"] == planner]
        axes[-1].bar(k, max(times), color=f"C{k}")
    axes[-1].set_yscale("log")
    axes[-1].set_xticks(range(len(planners)), planners, rotation=20, ha="right")
    axes[-1].set_title("seconds per plan (p50, worst set)")
    axes[0].legend(fontsize=8, loc="lower left")
    return save_plot(figure, "planner", out_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heldout", type=int, default=500, help="generated held-out queries")
    parser.add_argument(
        "--seed",
        type=int,
        default=11,
        help="held-out sample (11: a sample not looked at while developing the planner)",
    )
    parser.add_argument("--llm-sample", type=int, default=30, help="queries per set for LLMs")
    parser.add_argument("--skip-llm", action="store_true", help="leave the LLM planner out")
    parser.add_argument("--planner", action="append", default=[], help="another planner ref")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--llm-only", action="store_true", help="measure only LLM planners")
    parser.add_argument("--llm-rows", type=Path, help="LLM rows from an --llm-only run")
    args = parser.parse_args()

    sets = {
        "held-out": generate(args.heldout, "heldout", seed=args.seed),
        "hand-written dev (trained on)": read_examples(EVAL / "handwritten_dev.jsonl"),
    }
    if (EVAL / "handwritten_dev2.jsonl").is_file():
        sets["hand-written dev 2"] = read_examples(EVAL / "handwritten_dev2.jsonl")
    sets["hand-written test"] = read_examples(EVAL / "handwritten_test.jsonl")
    hub = ModelHub(on_event=lambda message: print(f"· {message}"))
    router = ExpertRouter(
        default_registry(), hub.embeddings(EMBEDDED_EMBEDDINGS), embedding_model=EMBEDDED_EMBEDDINGS
    )
    planners: list[tuple[str, Planner, bool]] = []
    if not args.llm_only:
        planners.append(("rules", lambda q: decompose(q), False))
        planners.append(("learned (shipped)", learned_planner(hub, EMBEDDED_PLANNER), False))
    earlier = _earlier_llm_rows(args.llm_rows, sets, args) if args.llm_rows else None
    if not args.skip_llm and earlier is None:
        planners.append(("smollm2-135m (llm mode)", llm_planner(hub, EMBEDDED_CHAT_MODEL), True))
    for ref in args.planner:
        if is_learned_planner(ref):
            if not args.llm_only:
                planners.append((ref, learned_planner(hub, ref), False))
        elif earlier is None:
            planners.append((ref, llm_planner(hub, ref), True))
    for _, planner, _ in planners:  # load and warm every planner outside the timings
        planner("What is 2 + 2?")

    rows = []
    for set_name, examples in sets.items():
        sample = random.Random(0).sample(examples, min(args.llm_sample, len(examples)))
        print(f"{set_name}: {len(examples)} queries ({len(sample)} for LLM planners)")
        for name, planner, slow in planners:
            row = measure(name, planner, sample if slow else examples, router)
            rows.append({"set": set_name, "sample": slow, **row})
        if earlier is not None:
            rows += [r for r in earlier["rows"] if r["set"] == set_name]
        if earlier is not None or any(slow for _, _, slow in planners):
            # the fast ones on the LLMs' sample too
            for name, planner, slow in planners:
                if not slow:
                    row = measure(f"{name} (LLM sample)", planner, sample, router)
                    rows.append({"set": set_name, "sample": True, **row})
    columns = [
        ("set", "set", ">18"),
        ("planner", "planner", ">30"),
        ("n", "queries", ">4"),
        ("parts", "parts_rate", ">6.3f"),
        ("edges", "edges_rate", ">6.3f"),
        ("experts", "experts_rate", ">7.3f"),
        ("fully", "fully_right_rate", ">6.3f"),
        ("drop/merge", "dropped_or_merged_rate", ">10.3f"),
        ("p50 s", "seconds_p50", ">7.3f"),
        ("p95 s", "seconds_p95", ">7.3f"),
    ]
    flat = [
        {**r, **{f"{k}_rate": r[k]["rate"] for k in r if isinstance(r[k], dict) and "rate" in r[k]}}
        for r in rows
    ]
    print_table(flat, columns)
    handwritten = [e for name, items in sets.items() if name != "held-out" for e in items]
    routing = dependent_routing(handwritten, router)
    print(
        f"routing of {routing['dependent_parts']} dependent hand-written parts: own words "
        f"{routing['own_words']['rate']:.3f}, with parents {routing['with_parents']['rate']:.3f}"
    )
    experts = ", ".join(e.name for e in router.registry.experts)
    results: dict[str, Any] = {
        "sets": {name: len(examples) for name, examples in sets.items()},
        "heldout_seed": args.seed,
        "llm_sample": args.llm_sample,
        "experts": experts,
        "rows": rows,
        "dependent_routing": routing,
    }
    if earlier is not None:
        results["llm_rows_from"] = {
            "file": args.llm_rows.name,
            "measured": earlier.get("measured", ""),
            "note": "LLM rows measured in an earlier --llm-only run on the same sample",
        }
    if args.llm_only:
        results["measured"] = time.strftime("%Y-%m-%d %H:%M")
        write_json("planner-llm", results, args.out_dir)
        return
    write_json("planner", results, args.out_dir)
    plot(rows, list(sets), args.out_dir)


def _earlier_llm_rows(
    path: Path, sets: dict[str, list[Example]], args: argparse.Namespace
) -> dict[str, Any]:
    """The rows of an --llm-only run, if it measured the same sets and sample."""
    import json

    earlier: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    same = (
        earlier.get("sets") == {name: len(items) for name, items in sets.items()}
        and earlier.get("heldout_seed") == args.seed
        and earlier.get("llm_sample") == args.llm_sample
    )
    if not same:
        raise SystemExit(f"{path} measured other sets, seed or sample: run --llm-only again")
    earlier["rows"] = [r for r in earlier["rows"] if r.get("sample")]
    return earlier


if __name__ == "__main__":
    main()

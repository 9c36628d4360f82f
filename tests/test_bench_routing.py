"""The benchmark's routing figures: arithmetic parts belong to the calculator when the
registry that ran has one, and their routing accuracy is reported apart."""

from __future__ import annotations

from compllm.bench.metrics import gold_expert, summarize
from compllm.bench.suite import CompositeItem, Part
from compllm.bench.systems import PartOutcome, SystemRun
from compllm.plan import Plan, SubQuery

ITEM = CompositeItem(
    id="d001",
    kind="dependent",
    query="Which is a prime, 21 or 23? Then add 4 to 7.",
    parts=(
        Part(id="q1", question="Which is a prime?", kind="choice", answer="B", domain="math"),
        Part(id="q2", question="Add 4 to 7.", kind="number", answer="11", domain="math"),
    ),
)


def run_routed(experts: dict[str, str], registry: list[str]) -> SystemRun:
    """comp-llm's run of ITEM, its parts routed as `experts` says, under a registry whose
    experts are `registry` (the routes score each of them)."""
    plan = Plan.build(
        [
            SubQuery(
                id=p.id,
                question=p.question,
                expert=experts[p.id],
                scores=dict.fromkeys(registry, 0.1),
            )
            for p in ITEM.parts
        ]
    )
    parts = [
        PartOutcome(
            part_id=p.id,
            domain=p.domain,
            kind=p.kind,
            predicted=None,
            correct=False,
            routed_to=experts[p.id],
        )
        for p in ITEM.parts
    ]
    return SystemRun(
        system="comp-llm",
        item_id=ITEM.id,
        item_kind=ITEM.kind,
        parts=parts,
        latency_s=1.0,
        output_tokens=0,
        models=[],
        plan=plan,
        parts_found=2,
    )


def test_arithmetic_belongs_to_the_calculator_when_the_registry_has_one():
    with_calculator = run_routed({"q1": "math", "q2": "calculator"}, ["calculator", "math"])
    without = run_routed({"q1": "math", "q2": "math"}, ["math", "general"])
    choice, number = with_calculator.parts
    assert gold_expert(number, with_calculator) == "calculator"
    assert gold_expert(choice, with_calculator) == "math"  # questions about mathematics
    assert gold_expert(without.parts[1], without) == "math"


def test_arithmetic_routing_is_reported_apart():
    run = run_routed({"q1": "math", "q2": "math"}, ["calculator", "math"])
    figures = summarize([run], [ITEM])["systems"]["generate/comp-llm"]
    assert figures["routing_accuracy"]["value"] == 0.5
    assert figures["routing_accuracy_by_kind"]["choice"]["value"] == 1.0
    assert figures["routing_accuracy_by_kind"]["number"]["value"] == 0.0  # not the calculator

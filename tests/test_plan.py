"""The plan is a validated DAG; every defect is reported with the ids involved."""

import pytest

from compllm.plan import Plan, PlanError, SubQuery


def sq(sid: str, *deps: str) -> SubQuery:
    return SubQuery(id=sid, question=f"question {sid}", depends_on=deps)


def test_a_diamond_is_a_valid_plan_with_levels_and_order():
    plan = Plan.build([sq("a"), sq("b", "a"), sq("c", "a"), sq("d", "b", "c")])
    assert plan.levels() == [["a"], ["b", "c"], ["d"]]
    assert plan.topological_order() == ["a", "b", "c", "d"]
    assert plan.children("a") == ["b", "c"]


def test_order_follows_dependencies_even_when_listed_backwards():
    plan = Plan.build([sq("c", "b"), sq("b", "a"), sq("a")])
    assert plan.topological_order() == ["a", "b", "c"]


def test_critical_path_counts_nodes_or_weighs_durations():
    plan = Plan.build([sq("slow"), sq("fast"), sq("child", "fast")])
    assert plan.critical_path() == ["fast", "child"]
    assert plan.critical_path({"slow": 5.0, "fast": 1.0, "child": 1.0}) == ["slow"]


@pytest.mark.parametrize(
    ("subqueries", "message"),
    [
        ([], "empty"),
        ([sq("q1"), sq("q1")], "duplicate sub-query ids: q1"),
        ([sq("q1", "q1")], "q1 depends on itself"),
        ([sq("q1", "q9")], "q1 depends on unknown ids: q9"),
        (
            [sq("q1", "q3"), sq("q2", "q1"), sq("q3", "q2"), sq("q4")],
            "cycle among sub-queries: q1, q2, q3",
        ),
    ],
)
def test_structural_defects_are_rejected_naming_the_ids(subqueries, message):
    with pytest.raises(PlanError, match=message):
        Plan.build(subqueries)


def test_the_size_limit_is_configurable():
    many = [sq(f"q{i}") for i in range(1, 18)]
    with pytest.raises(PlanError, match="17 sub-queries; the maximum is 16"):
        Plan.build(many)
    assert len(Plan.build(many, max_subqueries=20)) == 17


def test_validation_also_guards_plans_loaded_from_json():
    with pytest.raises(ValueError, match="cycle"):
        Plan.model_validate(
            {
                "subqueries": [
                    {"id": "a", "question": "x", "depends_on": ["b"]},
                    {"id": "b", "question": "y", "depends_on": ["a"]},
                ]
            }
        )


def test_routes_are_attached_without_touching_the_structure():
    plan = Plan.build([sq("q1"), sq("q2", "q1")])
    routed = plan.with_routes({"q1": ("math", {"math": 0.9}), "q2": ("law", {"law": 0.4})})
    assert [(s.id, s.expert, s.depends_on) for s in routed.subqueries] == [
        ("q1", "math", ()),
        ("q2", "law", ("q1",)),
    ]
    assert routed.get("q1").scores == {"math": 0.9}


def test_a_routed_plan_looks_up_its_routed_subqueries():
    plan = Plan.build([SubQuery(id="q1", question="What is 2+2?")])
    plan.get("q1")  # builds the plan's index
    routed = plan.with_routes({"q1": ("math", {"math": 0.9})})
    assert routed.get("q1").expert == "math"

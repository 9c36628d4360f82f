"""Pictures of a run: the plan as Mermaid text and figures, the execution timeline."""

from compllm import Plan, SubAnswer, SubQuery
from compllm.api import CompLLMResult
from compllm.visualize import expert_colours, plan_figure, plan_mermaid, timeline_figure

SCORES = {"math": 0.5, "medicine": 0.1, "law": 0.2}
PLAN = Plan.build(
    [
        SubQuery(id="q1", question="What is 12 times 7?", expert="math", scores=SCORES),
        SubQuery(id="q2", question='Is "that" <prime>?', depends_on=("q1",), expert="math"),
        SubQuery(id="q 3", question="What is a felony?", expert="law", scores=SCORES),
    ]
)


def answer(sid: str, expert: str, start: float, end: float, status="ok") -> SubAnswer:
    t0 = 1_700_000_000.0
    return SubAnswer(
        id=sid,
        question=PLAN.get(sid).question,
        expert=expert,
        status=status,
        answer="x" if status == "ok" else "",
        started_at=t0 + start,
        finished_at=t0 + end,
    )


RESULT = CompLLMResult(
    query="q",
    answer="a",
    plan=PLAN,
    planner_path="rules",
    planner_attempts=[],
    routes=[],
    answers=[
        answer("q1", "math", 0.0, 2.0),
        answer("q2", "math", 2.1, 3.0),
        answer("q 3", "law", 0.0, 2.5, status="failed"),
    ],
    aggregation="llm",
    timings={"plan": 1.0, "route": 0.2, "aggregate": 0.5},
)


def test_mermaid_has_a_node_per_subquery_an_edge_per_dependency_and_a_colour_per_expert():
    text = plan_mermaid(PLAN)
    assert text.startswith("flowchart TD\n")
    assert "n_q1 --> n_q2" in text
    assert "n_q_20_3" in text  # a space in an id becomes a safe Mermaid id
    assert "Is #quot;that#quot; #lt;prime#gt;?" in text  # quotes cannot break the label
    assert "q1 · math 0.50" in text
    colours = expert_colours(PLAN)
    assert f"classDef e0 fill:{colours['math']}" in text
    assert "class n_q1 e0" in text and "class n_q2 e0" in text
    assert f"classDef e2 fill:{colours['law']}" in text and "class n_q_20_3 e2" in text
    assert "classDef e1" not in text  # medicine has no sub-query


def test_the_plan_figure_has_one_box_per_subquery_and_one_arrow_per_dependency():
    figure = plan_figure(PLAN)
    axes = figure.axes[0]
    boxes = [t for t in axes.texts if t.get_bbox_patch() is not None]
    assert sorted(t.get_text().split(" · ")[0] for t in boxes) == ["q 3", "q1", "q2"]
    arrows = [c for c in axes.get_children() if type(c).__name__ == "Annotation"]
    assert len(arrows) == 1


def test_the_timeline_has_a_lane_per_expert_and_outlines_the_critical_path():
    figure = timeline_figure(RESULT)
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_yticklabels()] == ["math", "law"]
    bars = axes.patches
    assert len(bars) == 3
    outlined = sorted(round(b.get_x(), 1) for b in bars if b.get_linewidth() > 2)
    assert outlined == [0.0, 2.1]  # q1 then q2: 2.9 s, longer than the failed q 3's 2.5 s
    assert "q1 → q2" in axes.get_title()


def test_a_timeline_of_a_run_without_expert_calls_says_so():
    empty = RESULT.model_copy(update={"answers": []})
    assert timeline_figure(empty).axes[0].get_title() == "No sub-query ran"

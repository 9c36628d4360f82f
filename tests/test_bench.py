"""The evaluation harness: composite suites with correct gold answers, answer extraction as
small models write, metric arithmetic, the four systems on fakes, resume, and the CLI."""

from __future__ import annotations

import io
import json
import re

import pytest

from compllm.api import CompLLM
from compllm.bench.extract import extract_choice, extract_number
from compllm.bench.metrics import percentile, summarize
from compllm.bench.runner import RUNS_FILE, load_runs, run_suite
from compllm.bench.suite import CompositeItem, build_suite, read_suite, write_suite
from compllm.bench.systems import PartOutcome, SystemRun, match_parts, run_system
from compllm.cli import main
from compllm.decompose import decompose
from compllm.errors import CompLLMError
from compllm.mmlu import (
    SUBJECT_DOMAINS,
    MMLUQuestion,
    load_mmlu,
    split_questions,
)
from compllm.pool import ExpertPool
from compllm.registry import parse_registry
from tests.fakes import FakeProvider, ScriptedChatModel

SUBJECTS = ["college_physics", "high_school_us_history", "elementary_mathematics", "virology"]


def questions(per_subject: int = 6) -> list[MMLUQuestion]:
    return [
        MMLUQuestion(
            question=f"Question {n} about {subject.replace('_', ' ')}?",
            choices=(f"alpha {n}", f"beta {n}", f"gamma {n}", f"delta {n}"),
            answer=(n + i) % 4,
            subject=subject,
        )
        for i, subject in enumerate(SUBJECTS)
        for n in range(per_subject)
    ]


# -- data -------------------------------------------------------------------------------


def test_every_mmlu_subject_maps_to_exactly_one_builtin_expert():
    from compllm.registry import default_registry

    assert len(SUBJECT_DOMAINS) == 57
    assert set(SUBJECT_DOMAINS.values()) == set(default_registry().names)


def test_loader_says_what_it_loaded_and_points_at_a_bad_line(tmp_path):
    good = tmp_path / "mmlu.jsonl"
    good.write_text("\n".join(q.model_dump_json() for q in questions(2)) + "\n")
    assert load_mmlu(good).describe() == f"8 MMLU questions (4 subjects) from {good}"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(questions(1)[0].model_dump_json() + '\n{"question": "x", "choices": []}\n')
    with pytest.raises(CompLLMError, match=r"bad.jsonl: line 2: choices"):
        load_mmlu(bad)


def test_the_hub_source_says_what_it_needs():
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(CompLLMError, match="pip install datasets"):
            load_mmlu("hub")
    else:
        pytest.skip("datasets is installed: loading would need the network")


def test_split_is_stable_whatever_else_the_file_holds():
    everything = questions(20)
    _, held_out = split_questions(everything)
    _, held_out_of_half = split_questions(everything[::2])
    assert {q.key for q in held_out_of_half} <= {q.key for q in held_out}
    assert 0.1 < len(held_out) / len(everything) < 0.35  # 20% held out by default


# -- composite suites -------------------------------------------------------------------


def arithmetic(query: str) -> list[int]:
    """Recompute an arithmetic chain from its text, independently of the builder."""
    first = re.match(r"What is (\d+) multiplied by (\d+)\?", query)
    assert first
    values = [int(first.group(1)) * int(first.group(2))]
    for step in re.findall(r"Then ([^.]+)\.", query):
        n = int(re.search(r"\d+", step).group())
        last = values[-1]
        values.append(last + n if "add" in step else last - n if "subtract" in step else last * n)
    return values


def test_suites_are_reproducible_and_their_gold_answers_are_right(tmp_path):
    source = {q.key: q for q in questions()}
    items = build_suite(list(source.values()), parallel=5, dependent=6, seed=3)
    assert items == build_suite(list(source.values()), parallel=5, dependent=6, seed=3)
    assert items != build_suite(list(source.values()), parallel=5, dependent=6, seed=4)
    for item in items:
        item.gold_plan()  # a valid DAG
        if item.kind == "parallel":
            assert 2 <= len(item.parts) <= 4
            assert len({p.domain for p in item.parts}) == len(item.parts)
            for part in item.parts:
                original = next(q for q in source.values() if q.as_text() == part.question)
                assert part.answer == "ABCD"[original.answer]
        elif item.parts[0].kind == "number":
            assert [int(p.answer) for p in item.parts] == arithmetic(item.query)
            assert all(p.depends_on == (f"q{i}",) for i, p in enumerate(item.parts[1:], 1))
        else:
            first, second = item.parts
            n = int(re.search(r"multiply it by (\d+)", second.question).group(1))
            assert int(second.answer) == ("ABCD".index(first.answer) + 1) * n
            assert second.depends_on == ("q1",)
    path = tmp_path / "suite.jsonl"
    write_suite(items, path)
    assert read_suite(path) == items


def test_the_rule_decomposer_finds_every_gold_part_with_its_dependencies():
    for item in build_suite(questions(), parallel=4, dependent=4, seed=0):
        plan = decompose(item.query)
        matched = match_parts(plan, item.parts)
        assert len(matched) == len(item.parts), item.query
        for part in item.parts:
            wanted = {matched[d] for d in part.depends_on}
            assert wanted <= set(plan.get(matched[part.id]).depends_on)


# -- answer extraction ------------------------------------------------------------------

CHOICES = ("Paris", "London", "Berlin", "Rome")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("The answer is (B)", 1),
        ("B.", 1),
        ("b) London", 1),
        ("**Answer: C**", 2),
        ("Answer: c.", 2),
        ("The correct option is D because it is the capital.", 3),
        ("(C) Berlin is the capital of Germany.", 2),
        ("A", 0),
        ("I am quite sure it is Rome.", 3),
        ("The answer is a city: Paris.", 0),
        ("A) Paris\nB) London\nC) Berlin\nD) Rome", None),  # the options restated
        ("Both Paris and London are capitals.", None),
        ("I do not know.", None),
    ],
)
def test_choice_extraction_reads_how_small_models_answer(reply, expected):
    assert extract_choice(reply, CHOICES) == expected


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("29 * 5 = 145", 145),
        ("Step 1: 3 + 4 = 7. Step 2: 7 * 2 = 14. The answer is 14.", 14),
        ("The result is -7.5.", -7.5),
        ("That makes 1,234 apples", 1234),
        ("no number here", None),
    ],
)
def test_number_extraction_takes_the_stated_result(reply, expected):
    assert extract_number(reply) == expected


# -- metrics ----------------------------------------------------------------------------


def outcome(part_id: str, domain: str, correct: bool, routed: str | None = None) -> PartOutcome:
    return PartOutcome(
        part_id=part_id, domain=domain, predicted=None, correct=correct, routed_to=routed
    )


def test_metric_arithmetic():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10.0], 95) == 10.0
    runs = [
        SystemRun(
            system="comp-llm",
            item_id="p1",
            item_kind="parallel",
            parts=[outcome("q1", "math", True, "math"), outcome("q2", "law", True, "general")],
            latency_s=2.0,
            output_tokens=10,
            models=["small"],
            plan_size=2,
            parts_found=2,
        ),
        SystemRun(
            system="comp-llm",
            item_id="d1",
            item_kind="dependent",
            parts=[outcome("q1", "math", False, "math"), outcome("q2", "math", True)],
            latency_s=4.0,
            output_tokens=30,
            models=["small", "tiny"],
            plan_size=1,
            parts_found=1,
        ),
    ]
    row = summarize(runs, {"small": 100, "tiny": 20})["comp-llm"]
    assert row["part_accuracy"] == 3 / 4
    assert row["query_accuracy"] == 1 / 2
    assert row["query_accuracy_by_kind"] == {"dependent": 0.0, "parallel": 1.0}
    assert row["part_accuracy_by_domain"] == {"law": 1.0, "math": 2 / 3}
    assert row["routing_accuracy"] == 2 / 3  # the unmatched part has no route
    assert row["plan_recall"] == 3 / 4
    assert row["latency_p50_s"] == 3.0
    assert row["mean_output_tokens"] == 20
    assert row["parameters"] == 120
    assert summarize(runs, {"small": 100})["comp-llm"]["parameters"] is None  # unknown size


# -- the systems on fake models ---------------------------------------------------------

BENCH_REGISTRY = """
generalist: general
threshold: 0.0
experts:
""" + "".join(
    f"""  - name: {name}
    description: {name} questions
    examples: ["{example}"]
    model: expert-model
    system_prompt: You are the {name} expert.
"""
    for name, example in [
        ("science", "question about college physics"),
        ("humanities", "question about high school us history"),
        ("math", "question about elementary mathematics multiplied"),
        ("medicine", "question about virology"),
        ("general", "anything"),
    ]
)


def knowing_provider(items: list[CompositeItem]) -> FakeProvider:
    """Experts that know every gold answer; a monolithic model that knows only part 1."""
    gold = {p.question.rstrip("?."): p for item in items for p in item.parts}

    def expert(prompt: str, call) -> str:
        asked = call.messages[-1].text.rpartition("Question: ")[2]  # not the parents' block
        for question, part in sorted(gold.items(), key=lambda kv: -len(kv[0])):
            if question in asked:
                return f"The answer is ({part.answer})" if part.kind == "choice" else part.answer
        return "I do not know."

    def monolithic(prompt: str, call) -> str:
        item = next(i for i in items if i.query in call.messages[-1].text)
        return f"Part 1: {item.parts[0].answer}\nPart 2: no idea"

    return FakeProvider(
        chat={
            "expert-model": ScriptedChatModel(respond=expert),
            "mono-model": ScriptedChatModel(respond=monolithic),
        }
    )


def run_all(
    items, provider, folder, systems=("monolithic", "comp-llm", "sequential", "oracle-plan")
):
    registry = parse_registry(BENCH_REGISTRY, source="bench.yaml")
    pool = ExpertPool(provider)
    app = CompLLM(registry=registry, pool=pool)
    app.context.planner_mode = "rules"
    app.context.aggregator_model = "expert-model"

    def run_one(system, item, reference):
        return run_system(
            system,
            item,
            app,
            pool,
            monolithic_model="mono-model",
            max_new_tokens=16,
            reference=reference,
        )

    return run_suite(items, systems, run_one, folder, progress=False)


def test_pipelines_score_each_part_on_its_own_experts_answer(tmp_path):
    items = build_suite(questions(), parallel=3, dependent=2, seed=1)
    runs = run_all(items, knowing_provider(items), tmp_path)
    summary = summarize(runs)
    for system in ("comp-llm", "sequential", "oracle-plan"):
        assert summary[system]["part_accuracy"] == 1.0, system
        assert summary[system]["plan_recall"] == 1.0
        assert summary[system]["items"] == len(items)
    assert summary["oracle-plan"]["routing_accuracy"] == 1.0
    parts = sum(len(i.parts) for i in items)
    assert summary["monolithic"]["part_accuracy"] == len(items) / parts  # only part 1 right
    comp = {r.item_id: r for r in runs if r.system == "comp-llm"}
    for run in (r for r in runs if r.system == "sequential"):
        assert run.plan == comp[run.item_id].plan  # same plan, executed one at a time


class Killed(BaseException):
    """Like KeyboardInterrupt or SIGTERM: not an error the runner records and skips."""


def test_a_monolithic_reply_without_part_markers_scores_every_part_wrong(tmp_path):
    items = build_suite(questions(), parallel=2, dependent=0, seed=0)
    provider = knowing_provider(items)
    provider.chat["mono-model"] = ScriptedChatModel(respond=lambda prompt, call: "No idea.")
    runs = run_all(items, provider, tmp_path, systems=("monolithic",))
    assert [r.error for r in runs] == [None, None]
    assert not any(p.correct for r in runs for p in r.parts)


def test_monolithic_sections_go_to_their_parts():
    from compllm.bench.systems import _sections

    reply = "Part 1: (B) because...\nPart 2: 42\n3. C"
    assert _sections(reply, 3) == ["(B) because...", "42", "C"]
    assert _sections("Part 2: 7", 2) == ["", "7"]


def test_an_interrupted_run_resumes_without_recomputing_finished_items(tmp_path):
    items = build_suite(questions(), parallel=3, dependent=1, seed=2)
    calls: list[tuple[str, str]] = []
    kill_at = [5]

    def run_one(system, item, reference):
        if len(calls) == kill_at[0]:
            raise Killed  # the process is stopped mid-way
        calls.append((system, item.id))
        return SystemRun.empty(system, item)

    with pytest.raises(Killed):
        run_suite(items, ["monolithic", "comp-llm"], run_one, tmp_path, progress=False)
    with (tmp_path / RUNS_FILE).open("a") as sink:
        sink.write('{"system": "monolithic", "item_')  # a write cut short by a kill
    assert len(load_runs(tmp_path)) == 5
    first = list(calls)
    calls.clear()
    kill_at[0] = -1
    runs = run_suite(items, ["monolithic", "comp-llm"], run_one, tmp_path, progress=False)
    assert not set(calls) & set(first)
    assert len(runs) == 2 * len(items) == len(load_runs(tmp_path))


def test_one_failing_item_is_recorded_and_the_run_goes_on(tmp_path):
    items = build_suite(questions(), parallel=2, dependent=0, seed=0)

    def run_one(system, item, reference):
        if item.id == "p001":
            raise RuntimeError("model crashed")
        return SystemRun.empty(system, item)

    runs = run_suite(items, ["monolithic"], run_one, tmp_path, progress=False)
    assert [r.error for r in runs] == ["RuntimeError: model crashed", None]


# -- CLI ----------------------------------------------------------------------------------


def test_cli_builds_runs_resumes_and_reports(tmp_path):
    data = tmp_path / "mmlu.jsonl"
    data.write_text("\n".join(q.model_dump_json() for q in questions(12)))
    registry = tmp_path / "experts.yaml"
    registry.write_text(BENCH_REGISTRY.replace("model: expert-model", "model: expert-model"))
    suite, out = tmp_path / "suite.jsonl", tmp_path / "results"
    printed = io.StringIO()
    assert (
        main(
            [
                "bench",
                "build",
                "--data",
                str(data),
                "--out",
                str(suite),
                "--parallel",
                "2",
                "--dependent",
                "2",
            ],
            out=printed,
        )
        == 0
    )
    assert "wrote" in printed.getvalue() and "4 items" in printed.getvalue()
    items = read_suite(suite)
    provider = knowing_provider(items)
    provider.chat["embedded:smollm2-135m-instruct"] = provider.chat["mono-model"]
    command = [
        "bench",
        "run",
        str(suite),
        "--out",
        str(out),
        "--experts",
        str(registry),
        "--planner",
        "rules",
        "--aggregator-model",
        "expert-model",
        "--no-progress",
    ]
    printed = io.StringIO()
    assert main(command, out=printed, provider=provider) == 0
    table = printed.getvalue()
    assert "| comp-llm | 4 | 100.0% |" in table and "| oracle-plan | 4 | 100.0% |" in table
    assert main(command, out=io.StringIO(), provider=provider) == 0  # resumes: nothing to do
    assert len(load_runs(out)) == 4 * 4
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["planner"].startswith("rules")
    assert {p.name for p in out.glob("*.png")} == {
        "accuracy_by_domain.png",
        "latency.png",
        "accuracy_vs_parameters.png",
    }
    assert (out / "results.md").read_text().startswith("| system |")

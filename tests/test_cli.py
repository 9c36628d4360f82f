"""`compllm ask`: plan tree, answers as they finish, final answer; clean errors."""

import io
import json

import pytest

from compllm.cli import main, render_plan_tree
from compllm.plan import Plan, SubQuery
from tests.fakes import TEST_REGISTRY_YAML, make_provider

QUERY = (
    "Multiply two numbers, 12 and 7, then tell me whether that result is prime. What is a felony?"
)
PLAN = json.dumps(
    {
        "subqueries": [
            {"id": "q1", "question": "Multiply two numbers, 12 and 7.", "depends_on": []},
            {"id": "q2", "question": "Is the result of q1 prime?", "depends_on": ["q1"]},
            {"id": "q3", "question": "What is a felony?", "depends_on": []},
        ]
    }
)


@pytest.fixture
def registry_file(tmp_path):
    path = tmp_path / "experts.yaml"
    path.write_text(TEST_REGISTRY_YAML)
    return path


def run(*argv, provider=None):
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err, provider=provider)
    return code, out.getvalue(), err.getvalue()


def fake_args(registry_file):
    return [
        "--experts",
        str(registry_file),
        "--planner-model",
        "planner-model",
        "--aggregator-model",
        "aggregator-model",
        "--embedding-model",
        "fake",
    ]


def provider():
    return make_provider(
        planner=PLAN,
        expert_answers={"Multiply": "84", "prime": "84 is not prime", "felony": "A serious crime."},
        aggregate="12*7 = 84, which is not prime; a felony is a serious crime.",
    )


def test_ask_prints_the_plan_tree_each_answer_and_the_final_answer(registry_file):
    code, out, err = run("ask", QUERY, *fake_args(registry_file), provider=provider())
    assert code == 0, err
    assert "Plan (3 sub-queries):" in out
    assert "├── q1 [math " in out
    assert "│   └── q2 [" in out and "Is the result of q1 prime?" in out
    assert "└── q3 [law " in out
    assert "[q3] law · " in out and "    A serious crime." in out
    assert "Final answer (llm):\n12*7 = 84, which is not prime; a felony is a serious crime." in out
    assert "(planner: llm; total " in out


def test_ask_json_prints_one_machine_readable_result(registry_file):
    code, out, _ = run("ask", QUERY, "--json", *fake_args(registry_file), provider=provider())
    assert code == 0
    result = json.loads(out)
    assert result["answer"].startswith("12*7 = 84")
    assert [r["expert"] for r in result["routes"]][::2] == ["math", "law"]
    assert [a["status"] for a in result["answers"]] == ["ok", "ok", "ok"]
    assert result["plan"]["subqueries"][1]["depends_on"] == ["q1"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ask", "   "], "compllm: error: the query is empty"),
        (
            ["ask", "hi", "--experts", "/nonexistent/experts.yaml"],
            "compllm: error: /nonexistent/experts.yaml: cannot read registry file",
        ),
        (
            [
                "ask",
                "What is 2+2?",
                "--planner",
                "rules",
                "--embedding-model",
                "/nonexistent/model",
            ],
            "compllm: error: cannot load embedding model '/nonexistent/model'",
        ),
    ],
)
def test_bad_input_exits_non_zero_with_one_line(argv, message):
    code, _, err = run(*argv)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in err


def test_the_tree_shows_further_parents():
    plan = Plan.build(
        [
            SubQuery(id="a", question="A?", expert="math", scores={"math": 0.5}),
            SubQuery(id="b", question="B?", expert="law", scores={"law": 0.25}),
            SubQuery(
                id="c", question="C?", depends_on=("a", "b"), expert="math", scores={"math": 0.4}
            ),
        ]
    )
    assert render_plan_tree(plan) == [
        "├── a [math 0.50] A?",
        "│   └── c [math 0.40] C?  (also needs b)",
        "└── b [law 0.25] B?",
    ]


def test_executor_batching_and_memory_options_reach_the_run(registry_file):
    options = ["--executor", "waves", "--max-batch", "2", "--memory-budget", "1GB"]
    code, out, err = run(
        "ask", QUERY, "--json", *options, *fake_args(registry_file), provider=provider()
    )
    assert code == 0, err
    assert [a["status"] for a in json.loads(out)["answers"]] == ["ok", "ok", "ok"]


def test_a_memory_budget_that_is_not_a_size_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["ask", "hi", "--memory-budget", "lots"])
    assert exit_info.value.code == 2
    assert "not a memory size: 'lots'" in capsys.readouterr().err

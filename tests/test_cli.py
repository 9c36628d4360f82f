"""`compllm ask`: plan tree, answers as they finish, final answer; clean errors."""

import io
import json
import os
import subprocess
import sys

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


# -- plan review, threads and traces --------------------------------------------------------


def run_with_input(*argv, stdin="", provider=None):
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err, in_=io.StringIO(stdin), provider=provider)
    return code, out.getvalue(), err.getvalue()


def test_review_shows_the_plan_and_runs_it_when_approved(registry_file):
    models = provider()
    code, out, err = run_with_input(
        "ask", QUERY, "--review", *fake_args(registry_file), stdin="y\n", provider=models
    )
    assert code == 0, err
    assert "Review the plan before it runs:" in err and "└── q3 [law " in err
    assert "Run it? [Y]es / [n]o, cancel / [e]dit in $EDITOR:" in err
    assert "Final answer (llm):\n12*7 = 84" in out
    assert len(models.chat["expert-model"].calls) == 3


def test_review_cancel_calls_no_expert(registry_file):
    models = provider()
    code, out, _ = run_with_input(
        "ask", QUERY, "--review", *fake_args(registry_file), stdin="n\n", provider=models
    )
    assert code == 0
    assert "Final answer (none):\nThe plan was cancelled" in out
    assert not models.chat["expert-model"].calls


def test_review_edit_opens_the_editor_on_the_plan_json(registry_file, tmp_path, monkeypatch):
    # The "editor" is a script that keeps only the felony question.
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import json, sys\n"
        "plan = json.load(open(sys.argv[1]))\n"
        "plan['subqueries'] = [s for s in plan['subqueries'] if 'felony' in s['question']]\n"
        "json.dump(plan, open(sys.argv[1], 'w'))\n"
    )
    monkeypatch.setenv("EDITOR", f"{sys.executable} {editor}")
    models = provider()
    code, out, err = run_with_input(
        "ask", QUERY, "--review", "--json", *fake_args(registry_file), stdin="e\n", provider=models
    )
    assert code == 0, err
    result = json.loads(out)
    assert [a["question"] for a in result["answers"]] == ["What is a felony?"]
    assert [c.messages[-1].text for c in models.chat["expert-model"].calls] == ["What is a felony?"]


def test_review_without_an_answer_leaves_the_run_paused_on_its_thread(registry_file, tmp_path):
    database = tmp_path / "runs.sqlite"
    common = [*fake_args(registry_file), "--checkpoint", str(database), "--thread", "t7"]
    code, _, err = run_with_input("ask", QUERY, "--review", *common, stdin="", provider=provider())
    assert code == 1 and "the run stays paused on thread t7" in err
    models = provider()
    code, out, err = run_with_input("ask", QUERY, *common, stdin="y\n", provider=models)
    assert code == 0, err
    assert "Final answer (llm):" in out and "(thread t7)" in out
    assert not models.chat["planner-model"].calls  # planned in the first process


def test_thread_returns_a_finished_answer_without_running_again(registry_file, tmp_path):
    common = [*fake_args(registry_file), "--checkpoint", str(tmp_path / "c.sqlite")]
    code, first, _ = run("ask", QUERY, *common, "--thread", "t1", provider=provider())
    assert code == 0
    models = provider()
    code, again, _ = run("ask", QUERY, *common, "--thread", "t1", provider=models)
    assert code == 0
    assert again.split("Final answer")[1].split("(planner")[0] in first
    assert not any(m.calls for m in models.chat.values())
    code, _, err = run("ask", "Another question?", *common, "--thread", "t1", provider=models)
    assert code == 2 and "holds another query" in err


def test_trace_writes_the_result_the_plan_and_the_timeline(registry_file, tmp_path):
    trace = tmp_path / "trace"
    code, _, err = run(
        "ask", QUERY, *fake_args(registry_file), "--trace", str(trace), provider=provider()
    )
    assert code == 0, err
    assert sorted(p.name for p in trace.iterdir()) == [
        "plan.mmd",
        "plan.png",
        "plan.svg",
        "result.json",
        "timeline.png",
        "timeline.svg",
    ]
    assert json.loads((trace / "result.json").read_text())["answer"].startswith("12*7 = 84")
    assert "n_q1 --> n_q2" in (trace / "plan.mmd").read_text()
    assert (trace / "plan.png").read_bytes()[:4] == b"\x89PNG"
    assert "<svg" in (trace / "timeline.svg").read_text()


def command(*argv: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter, with stdout buffered as it is for a user's pipe."""
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, env=buffered, timeout=120
    )


def patched_run(code: str) -> subprocess.CompletedProcess[str]:
    """`compllm.cli.run` (the `compllm` command) after `code`."""
    return command("-c", f"import compllm.cli as cli\n{code}\ncli.run()")


def test_the_command_exits_with_mains_status_and_flushed_output():
    # No newline at the end: the text sits in stdout's buffer until `run` flushes it, and
    # `run` ends the process without the interpreter's own flush.
    done = patched_run("cli.main = lambda: print('an answer', end='') or 3")
    assert (done.returncode, done.stdout) == (3, "an answer")
    empty = command("-m", "compllm.cli", "ask", " ")
    assert (empty.returncode, empty.stderr) == (2, "compllm: error: the query is empty\n")


def test_exit_handlers_still_run_and_what_they_write_is_kept():
    # LangSmith, OpenTelemetry and logging finish their work in `atexit` handlers.
    done = patched_run(
        "import atexit, sys\n"
        "atexit.register(lambda: print('sent the last traces', end='', file=sys.stdout))\n"
        "cli.main = lambda: 0"
    )
    assert (done.returncode, done.stdout) == (0, "sent the last traces")


def test_a_reader_that_goes_away_ends_the_command_quietly():
    done = patched_run("def main():\n    raise BrokenPipeError\ncli.main = main")
    assert (done.returncode, done.stderr) == (1, "")

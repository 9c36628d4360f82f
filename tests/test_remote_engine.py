"""Remote experts on a real engine: llama.cpp's OpenAI-compatible server
(`llama-cpp-python[server]`), started here on 127.0.0.1, serving the same SmolLM2 GGUF file
the embedded default loads through transformers.

`make test` builds the engine (`make engine`) and points `COMPLLM_ENGINE_PYTHON` at it, so
these run in CI; without either, they are skipped with the command to run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("langchain_openai")

from compllm import CompLLM
from compllm.models import _SMOLLM2_DIST, _SMOLLM2_FILE, _packaged
from compllm.registry import parse_registry
from tests.servers import free_port, serving

pytestmark = [pytest.mark.slow, pytest.mark.engine]

ROOT = Path(__file__).resolve().parents[1]
QUERY = "What is 12 times 7? What are the common symptoms of influenza?"


def engine_python() -> Path:
    configured = os.environ.get("COMPLLM_ENGINE_PYTHON")
    candidate = Path(configured) if configured else ROOT / ".venv-engine" / "bin" / "python"
    if candidate.exists():
        return candidate
    if configured:  # `make test` asked for the engine: missing is a failure, not a skip
        pytest.fail(f"COMPLLM_ENGINE_PYTHON={configured} does not exist (run `make engine`)")
    pytest.skip("llama.cpp's server is not installed: run `make engine`")


@contextlib.contextmanager
def llama_server(log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    gguf = _packaged(_SMOLLM2_DIST, _SMOLLM2_FILE)
    command = [
        str(engine_python()),
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "4096",
    ]
    url = f"http://127.0.0.1:{port}/v1"
    with serving(
        command,
        log,
        probe_url=f"{url}/models",
        ready=lambda reply: json.load(reply)["data"][0]["id"] == "smollm2",
        name="the engine",
        timeout_s=120,
    ) as engine:
        yield url, engine


def registry(url: str, *, fallback: str = "") -> object:
    return parse_registry(
        f"""
generalist: general
threshold: 0.2
experts:
  - name: math
    description: Mathematics, arithmetic and multiplication.
    examples: ["What is 17 multiplied by 23?", "What is 9 times 8?"]
    model: "openai:smollm2@{url}?stream=true&timeout=60"
    system_prompt: You are a careful mathematician. Answer briefly.
    generation: {{max_new_tokens: 48}}
    {fallback}
  - name: medicine
    description: Medicine, diseases and their symptoms.
    examples: ["What are the symptoms of diabetes?", "How is the flu treated?"]
    model: "openai:smollm2@{url}?timeout=60"
    system_prompt: You are a physician. Answer briefly.
    generation: {{max_new_tokens: 48}}
  - name: general
    description: Everyday questions.
    model: embedded:smollm2-135m-instruct
    system_prompt: You are a helpful assistant. Answer briefly.
    generation: {{max_new_tokens: 32}}
""",
        source="engine.yaml",
    )


def test_remote_planner_experts_and_aggregator_on_llama_cpp(tmp_path):
    with llama_server(tmp_path / "engine.log") as (url, _):
        app = CompLLM(registry=registry(url))  # type: ignore[arg-type]
        started = time.perf_counter()
        result = app.invoke(
            QUERY,
            planner_model=f"openai:smollm2@{url}?json=object",
            aggregator_model=f"openai:smollm2@{url}",
            aggregator_max_new_tokens=64,
        )
        elapsed = time.perf_counter() - started
    assert [(a.expert, a.status) for a in result.answers] == [("math", "ok"), ("medicine", "ok")]
    assert all(a.answer.strip() for a in result.answers)
    medicine = result.answers[1]
    assert medicine.output_tokens is not None and 0 < medicine.output_tokens <= 48
    # The learned planner plans first; then the remote planner is asked (with llama.cpp's
    # schema form) and its plan is used: its attempt has no error (a failed call or a
    # rejected plan would name one).
    sources = [a.source for a in result.planner_attempts]
    assert sources == ["learned", "llm"], result.planner_attempts
    assert result.planner_attempts[1].error is None, result.planner_attempts[1].error
    assert result.planner_path == "llm"
    assert result.answer.strip()
    log = (tmp_path / "engine.log").read_text()
    assert log.count('"POST /v1/chat/completions HTTP/1.1" 200') >= 3
    print(f"remote run: {elapsed:.1f} s, planner path {result.planner_path}")


def test_an_engine_that_is_gone_falls_back_to_the_local_expert(tmp_path):
    with llama_server(tmp_path / "engine.log") as (url, engine):
        os.killpg(engine.pid, signal.SIGKILL)  # the engine dies before the run
        engine.wait()
        app = CompLLM(registry=registry(url, fallback="fallback: general"))  # type: ignore[arg-type]
        result = app.invoke(QUERY, planner_mode="rules", aggregator_max_new_tokens=32)
    math, medicine = result.answers
    assert math.status == "ok" and math.expert == "general" and math.fallback_from == "math"
    assert "Connection" in (math.fallback_reason or "")
    assert medicine.status == "failed" and "Connection" in (medicine.error or "")
    assert result.answer.strip()


def test_concurrent_runs_on_the_engine_lose_nothing(tmp_path):
    """The load benchmark with real experts, small: 10 runs, 4 at once, on one engine."""
    import sys

    with llama_server(tmp_path / "engine.log") as (url, _):
        subprocess.run(
            [
                sys.executable,
                "load.py",
                *("--target", "library", "--experts", "engine", "--engine-url", url),
                *("--runs", "10", "--concurrency", "4", "--out-dir", str(tmp_path)),
            ],
            cwd=ROOT / "benchmarks",
            check=True,
            capture_output=True,
            timeout=600,
        )
    report = json.loads((tmp_path / "load-library-engine.json").read_text())["report"]
    assert report["runs_measured"] == 9
    assert report["errors"] == 0 and report["lost_results"] == 0
    assert report["objects_end"] <= report["objects_after_warm_up"]

"""The benchmark scripts still run (tiny settings; their figures are not checked here)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_benchmark(script: str, *args: str, out_dir: Path) -> None:
    subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args, "--out-dir", str(out_dir)],
        check=True,
        cwd=BENCHMARKS,
        capture_output=True,
        timeout=300,
    )


def test_the_scheduling_benchmark_writes_its_table_json_and_plot(tmp_path):
    run_benchmark("scheduling.py", "--unit", "0.002", out_dir=tmp_path)
    rows = json.loads((tmp_path / "scheduling.json").read_text())["rows"]
    assert {"slow-branch", "random-30", "deep-chain-50"} <= {r["shape"] for r in rows}
    assert all(r["dataflow_over_bound"] >= 0.95 for r in rows)  # nothing beats the bound
    assert (tmp_path / "scheduling.png").stat().st_size > 0


def test_the_streaming_benchmark_writes_its_table_json_and_plot(tmp_path):
    run_benchmark("streaming.py", "--unit", "0.01", "--speeds", "2000", out_dir=tmp_path)
    rows = json.loads((tmp_path / "streaming.json").read_text())["rows"]
    assert {r["shape"] for r in rows} == {"fan-out-4", "chain-4", "diamond", "two-chains-6"}
    assert all(r["stream_makespan_s"] >= 0.95 * r["stream_bound_s"] for r in rows)
    assert (tmp_path / "streaming.png").stat().st_size > 0


def test_the_overhead_benchmark_writes_its_table_json_and_plot(tmp_path):
    run_benchmark(
        "overhead.py", "--sizes", "5,10", "--repeats", "1", "--parallel", "4", out_dir=tmp_path
    )
    rows = json.loads((tmp_path / "overhead.json").read_text())["rows"]
    assert [(r["shape"], r["subqueries"]) for r in rows] == [
        ("fan-out", 5),
        ("fan-out", 10),
        ("chain", 5),
        ("chain", 10),
    ]
    assert (tmp_path / "overhead.png").stat().st_size > 0


@pytest.mark.slow
def test_the_expert_pool_benchmark_runs_on_random_weights(tmp_path):
    run_benchmark("expert_pool.py", "--preset", "cpu", out_dir=tmp_path)
    result = json.loads((tmp_path / "expert_pool_cpu.json").read_text())
    assert result["budget"]["within_budget"] and result["budget"]["evictions"] > 0
    assert result["budget"]["answers_ok"] == result["budget"]["subqueries"]

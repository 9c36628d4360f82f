"""Load, bounded: many concurrent runs on simulated experts, through the library and through
the LangGraph server (`benchmarks/load.py`, which prints the throughput figures). Every run
must come back with its own answers, none may fail, and memory must not grow with the runs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(tmp_path: Path, *args: str) -> dict:
    subprocess.run(
        [sys.executable, "load.py", *args, "--out-dir", str(tmp_path)],
        check=True,
        cwd=BENCHMARKS,
        capture_output=True,
        timeout=600,
    )
    (report_file,) = tmp_path.glob("load-*.json")
    return json.loads(report_file.read_text())["report"]


def test_concurrent_library_runs_lose_nothing_and_leak_nothing(tmp_path):
    report = load(tmp_path, "--target", "library", "--runs", "200", "--concurrency", "16")
    assert report["runs_measured"] == 180
    assert report["errors"] == 0 and report["lost_results"] == 0
    # Live compllm objects after the warm-up and at the end (after a full collection). A
    # leaked run grows the count by its result's plan, sub-queries and answers (about eight
    # compllm objects, so over a thousand for 180 runs). What happens to be alive at either
    # moment (a cache entry, a pool thread's last call) is a handful, depending on timing,
    # so the check allows fewer new objects than runs, not none.
    growth = report["objects_end"] - report["objects_after_warm_up"]
    assert growth < report["runs_measured"], f"{growth} more live compllm objects"
    assert report["rss_end_mb"] - report["rss_after_warm_up_mb"] < 64


@pytest.mark.slow
def test_concurrent_server_runs_lose_nothing(tmp_path):
    report = load(tmp_path, "--target", "server", "--runs", "60", "--concurrency", "8")
    assert report["runs_measured"] == 54
    assert report["errors"] == 0 and report["lost_results"] == 0
    assert report["rss_end_mb"] - report["rss_after_warm_up_mb"] < 64

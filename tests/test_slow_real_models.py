"""The embedded real models, offline: MiniLM routing and a whole `compllm ask` run.

Minutes on a CPU, so marked slow (`pytest -m "not slow"` skips them); the README's test
command runs them.
"""

import json
import os
import subprocess
import sys

import pytest

from compllm.models import EMBEDDED_EMBEDDINGS, ModelHub
from compllm.registry import default_registry
from compllm.router import ExpertRouter

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def router() -> ExpertRouter:
    embeddings = ModelHub().embeddings(EMBEDDED_EMBEDDINGS)
    return ExpertRouter(default_registry(), embeddings, embedding_model=EMBEDDED_EMBEDDINGS)


@pytest.mark.parametrize(
    ("question", "expert"),
    [
        ("What is the integral of 3x^2 with respect to x?", "math"),
        ("Solve for y: 5y - 3 = 17.", "math"),
        ("What is the probability of drawing an ace from a deck of cards?", "math"),
        ("What are the early symptoms of a heart attack?", "medicine"),
        ("Which antibiotics are used to treat a urinary tract infection?", "medicine"),
        ("How is asthma diagnosed in children?", "medicine"),
        ("Can my employer fire me without giving a reason?", "law"),
        ("What is the difference between theft and robbery under criminal law?", "law"),
        ("Is a verbal agreement enforceable as a contract?", "law"),
    ],
)
def test_clear_questions_reach_the_right_expert(router, question, expert):
    (route,) = router.route([question])
    assert route.expert == expert, route.scores


def test_compllm_ask_runs_offline_end_to_end_on_the_embedded_models():
    query = (
        "What is the derivative of x^3 + 2x, and what are the common symptoms of type 2 diabetes?"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "compllm.cli", "ask", query, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout)
    experts = [route["expert"] for route in result["routes"]]
    assert len(experts) >= 2 and len(set(experts)) >= 2
    assert {"math", "medicine"} <= set(experts)
    assert all(a["status"] == "ok" and a["answer"].strip() for a in result["answers"])
    assert result["answer"].strip()

"""Routing accuracy of the built-in registry on MMLU questions, by threshold.

    .venv/bin/python benchmarks/routing_accuracy.py [--data ../shared/data/mmlu/mmlu_dev.jsonl]

MMLU subjects are mapped to the registry's domains below (subjects without a clear domain are
left out). The profiles' example questions are not MMLU questions, so every question counts as
held out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from compllm.models import EMBEDDED_EMBEDDINGS, ModelHub
from compllm.registry import default_registry
from compllm.router import ExpertRouter

DOMAINS = {
    "math": "elementary_mathematics high_school_mathematics college_mathematics abstract_algebra "
    "high_school_statistics",
    "medicine": "clinical_knowledge college_medicine professional_medicine anatomy "
    "medical_genetics nutrition virology",
    "law": "professional_law international_law jurisprudence",
    "science": "high_school_physics college_physics high_school_chemistry college_chemistry "
    "high_school_biology college_biology astronomy conceptual_physics",
    "computing": "college_computer_science high_school_computer_science computer_security "
    "machine_learning",
    "humanities": "high_school_world_history high_school_us_history high_school_european_history "
    "philosophy world_religions high_school_macroeconomics high_school_geography "
    "high_school_government_and_politics prehistory",
}
SUBJECT_DOMAIN = {s: d for d, subjects in DOMAINS.items() for s in subjects.split()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/mmlu/mmlu_dev.jsonl"))
    args = parser.parse_args()
    # split("\n"), not splitlines(): questions may contain Unicode line separators.
    lines = args.data.read_text(encoding="utf-8").split("\n")
    rows = [json.loads(line) for line in lines if line.strip()]
    rows = [r for r in rows if r["subject"] in SUBJECT_DOMAIN]
    gold = [SUBJECT_DOMAIN[r["subject"]] for r in rows]
    router = ExpertRouter(default_registry(), ModelHub().embeddings(EMBEDDED_EMBEDDINGS))
    scores = router.scores([r["question"] for r in rows])
    best = [max(s, key=lambda name: s[name]) for s in scores]
    print(f"{len(rows)} questions from {args.data} ({len(SUBJECT_DOMAIN)} subjects, 6 domains)")
    print(f"{'threshold':>9} {'accuracy':>9} {'to generalist':>14}")
    for threshold in (0.0, 0.05, 0.1, 0.15, 0.2, 0.3):
        routed = [b if s[b] >= threshold else "general" for s, b in zip(scores, best, strict=True)]
        accuracy = sum(r == g for r, g in zip(routed, gold, strict=True)) / len(rows)
        general = routed.count("general") / len(rows)
        print(f"{threshold:>9.2f} {accuracy:>9.3f} {general:>14.3f}")


if __name__ == "__main__":
    main()

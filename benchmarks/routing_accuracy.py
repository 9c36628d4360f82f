"""Routing accuracy on MMLU with embeddings only (all-MiniLM-L6-v2), on questions the router
has not seen as examples.

    .venv/bin/python benchmarks/routing_accuracy.py [--data FILE]

The data defaults to the MMLU questions shipped with compllm (`compllm.mmlu.DEFAULT_MMLU_FILE`).

Two measurements:
1. the shipped registry (fitted by `compllm fit` on the fit part, 80%, of the file) on the
   held-out 20%, which is where `compllm bench build` takes its questions from;
2. k-fold cross-validation over the whole file: each question is routed by a registry whose
   routing examples are the other folds' questions.
Each is given for the eight domain experts (gold by `compllm.mmlu.SUBJECT_DOMAINS`) and
with the generalist's subjects (miscellaneous, global facts) included; for questions with their
options (as benchmark sub-queries show them) and for the bare question.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Callable, Sequence

from _common import write_json
from langchain_core.embeddings import Embeddings

from compllm.calibrate import LabelledQuestion, routing_report, with_examples
from compllm.mmlu import DEFAULT_MMLU_FILE, MMLUQuestion, load_mmlu, split_questions
from compllm.models import EMBEDDED_EMBEDDINGS, ModelHub
from compllm.registry import default_registry, default_registry_path, load_registry
from compllm.router import ExpertRouter


class MemoEmbeddings(Embeddings):
    """Embeds each distinct text once (folds re-use the same questions)."""

    def __init__(self, inner: Embeddings) -> None:
        self.inner = inner
        self.memo: dict[str, list[float]] = {}

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        missing = list(dict.fromkeys(t for t in texts if t not in self.memo))
        if missing:
            self.memo.update(zip(missing, self.inner.embed_documents(missing), strict=True))
        return [self.memo[t] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def counts(
    router: ExpertRouter, questions: Sequence[MMLUQuestion], text: Callable[[MMLUQuestion], str]
) -> dict[str, tuple[int, int]]:
    """(correct, total) for the eight domain experts, and with the generalist's subjects."""
    scores = router.scores([text(q) for q in questions])
    gold = [q.domain or "" for q in questions]
    registry = router.registry
    mapped = [i for i, g in enumerate(gold) if g != registry.generalist]
    result = {}
    for key, rows in (("eight_domains", mapped), ("with_general", range(len(gold)))):
        report = routing_report(
            [scores[i] for i in rows],
            [gold[i] for i in rows],
            threshold=registry.threshold,
            generalist=registry.generalist,
        )
        result[key] = (report.correct, report.total)
    return result


def summary(parts: Sequence[dict[str, tuple[int, int]]]) -> dict[str, float]:
    row: dict[str, float] = {}
    for key in ("eight_domains", "with_general"):
        correct = sum(p[key][0] for p in parts)
        total = sum(p[key][1] for p in parts)
        row[key], row[f"{key}_n"] = round(correct / total, 4), total
    return row


def fold_of(question: MMLUQuestion, folds: int) -> int:
    return hashlib.sha256(question.key.encode()).digest()[0] % folds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_MMLU_FILE))
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    loaded = load_mmlu(args.data)
    questions = [q for q in loaded.questions if q.domain is not None]
    print(loaded.describe())
    embeddings = MemoEmbeddings(ModelHub().embeddings(EMBEDDED_EMBEDDINGS))
    texts: dict[str, Callable[[MMLUQuestion], str]] = {
        "with options": MMLUQuestion.as_text,
        "question only": lambda q: q.question,
    }
    results: dict[str, dict[str, dict[str, float]]] = {"held_out_part": {}, "cross_validation": {}}

    _, held_out = split_questions(questions)
    shipped = ExpertRouter(default_registry(), embeddings)
    for name, text in texts.items():
        results["held_out_part"][name] = summary([counts(shipped, held_out, text)])

    bare = load_registry(default_registry_path(), routing_examples=False).model_copy(
        update={"threshold": default_registry().threshold}
    )
    for name, text in texts.items():
        parts = []
        for fold in range(args.folds):
            train = [q for q in questions if fold_of(q, args.folds) != fold]
            test = [q for q in questions if fold_of(q, args.folds) == fold]
            examples = [LabelledQuestion(q.as_text(), q.domain or "") for q in train]
            parts.append(
                counts(ExpertRouter(with_examples(bare, examples), embeddings), test, text)
            )
        results["cross_validation"][name] = summary(parts)

    print(f"{'measurement':<34} {'8 domains':>10} {'n':>5} {'+ general':>10} {'n':>5}")
    for where, by_text in results.items():
        for name, row in by_text.items():
            print(
                f"{where + ', ' + name:<34} {row['eight_domains']:>10.3f} "
                f"{row['eight_domains_n']:>5.0f} {row['with_general']:>10.3f} "
                f"{row['with_general_n']:>5.0f}"
            )
    write_json("routing_accuracy", {"data": loaded.describe(), "folds": args.folds, **results})


if __name__ == "__main__":
    main()

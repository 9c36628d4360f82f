"""`compllm fit`: calibrate routing on labelled questions (see `compllm.calibrate`) and write
the fitted registry. Labelled questions are the packaged MMLU file by default (only its fit
part, so benchmark suites drawn from the held-out part stay unseen), any MMLU JSONL, the
public dataset (`--data hub`), or a JSONL of `{"text", "expert"}` lines."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TextIO

from compllm.calibrate import LabelledQuestion, fit_router, write_fitted_registry
from compllm.errors import CompLLMError
from compllm.mmlu import DEFAULT_MMLU_FILE, load_mmlu, split_questions
from compllm.models import EMBEDDED_EMBEDDINGS, ModelProvider
from compllm.registry import default_registry_path, load_registry

__all__ = ["add_command", "run"]


def add_command(commands: Any) -> None:
    fit = commands.add_parser(
        "fit",
        help="calibrate routing: fit examples and the threshold on labelled questions",
        description="Fit routing examples and the threshold, report held-out routing accuracy "
        "with a confusion matrix, and write the fitted registry.",
    )
    fit.add_argument(
        "--data",
        default=str(DEFAULT_MMLU_FILE),
        help="MMLU JSONL (labelled by the subject map), 'hub' for the public MMLU, or JSONL of "
        "{'text', 'expert'} (default: the MMLU questions shipped with compllm)",
    )
    fit.add_argument("--experts", metavar="FILE", help="registry to fit (default: built-in)")
    fit.add_argument("--out", metavar="FILE", required=True, help="fitted registry to write")
    fit.add_argument(
        "--all-questions",
        action="store_true",
        help="use every MMLU question (default: only the fit part, 80%%, of the split in "
        "compllm.mmlu, so suites built from the other 20%% stay held out)",
    )
    fit.add_argument("--holdout", type=float, default=0.5, help="share held out for the report")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--max-examples", type=int, help="most routing examples per expert")
    fit.add_argument("--embedding-model", default=EMBEDDED_EMBEDDINGS)


def run(args: argparse.Namespace, out: TextIO, provider: ModelProvider) -> int:
    source = Path(args.experts) if args.experts else default_registry_path()
    # Without its current routing examples: the fit replaces them.
    registry = load_registry(source, routing_examples=False)
    questions, described = labelled_questions(args.data, all_questions=args.all_questions)
    print(described, file=out)
    result = fit_router(
        registry,
        provider.embeddings(args.embedding_model),
        questions,
        holdout=args.holdout,
        seed=args.seed,
        max_examples_per_expert=args.max_examples,
    )
    report = result.held_out
    print(
        f"held out: {report.total} questions; routing accuracy {report.accuracy:.3f} at "
        f"threshold {report.threshold:.2f} ({report.to_generalist} to the generalist)",
        file=out,
    )
    print("\n".join(report.render()), file=out)
    target = Path(args.out)
    examples = write_fitted_registry(source, target, result)
    print(f"wrote {target} and {examples} ({len(result.examples)} routing examples)", file=out)
    return 0


def labelled_questions(data: str, *, all_questions: bool) -> tuple[list[LabelledQuestion], str]:
    """The labelled questions in `data` and a line saying what they are."""
    if data != "hub" and not data.startswith("hub:"):
        path = Path(data)
        first = _first_row(path)
        if "text" in first and "expert" in first:
            lines = path.read_text("utf-8").split("\n")
            rows = [json.loads(line) for line in lines if line.strip()]
            questions = [LabelledQuestion(str(r["text"]), str(r["expert"])) for r in rows]
            return questions, f"{len(questions)} labelled questions from {path}"
    loaded = load_mmlu(data)
    mmlu = loaded.questions
    if not all_questions:
        mmlu, _ = split_questions(mmlu)
    questions = [LabelledQuestion(q.as_text(), q.domain) for q in mmlu if q.domain is not None]
    half = "all" if all_questions else "the fit part"
    return questions, f"{loaded.describe()}; {half}: {len(questions)} labelled by subject"


def _first_row(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    return row if isinstance(row, dict) else {}
    except (OSError, ValueError) as exc:
        raise CompLLMError(f"{path}: cannot read labelled questions ({exc})") from None
    raise CompLLMError(f"{path}: no questions")

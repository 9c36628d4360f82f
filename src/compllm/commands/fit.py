"""`compllm fit`: calibrate routing on labelled questions (see `compllm.calibrate`) and write
the fitted registry, its routing examples and its learned head. Labelled questions are the
packaged MMLU file by default (only its fit part, so benchmark suites drawn from the held-out
part stay unseen; each question labelled by its subject's expert, with its subject as topic
and its stem without options as a variant), any MMLU JSONL, the public dataset
(`--data hub`), or a JSONL of `{"text", "expert"}` lines (optionally `"topic"` and
`"variants"`).

`--profile` then measures every expert on labelled validation questions and writes the
competence profile (`compllm.competence`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from compllm.calibrate import (
    FitResult,
    LabelledQuestion,
    RoutingReport,
    fit_router,
    write_fitted_registry,
)
from compllm.errors import CompLLMError
from compllm.mmlu import DEFAULT_MMLU_FILE, MMLUQuestion, load_mmlu, split_questions
from compllm.models import EMBEDDED_EMBEDDINGS, ModelProvider
from compllm.registry import Registry, default_registry_path, load_registry

if TYPE_CHECKING:
    from compllm.competence import ValidationQuestion

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
    fit.add_argument(
        "--similarity-only",
        action="store_true",
        help="fit no learned head: route by similarity to the examples",
    )
    fit.add_argument(
        "--allow-python",
        action="store_true",
        help="let the registry name Python objects (python:pkg.mod:name), as in compllm ask",
    )
    profile = fit.add_argument_group("competence profile (--profile)")
    profile.add_argument(
        "--profile",
        action="store_true",
        help="also run every expert on labelled validation questions and write the "
        "competence profile beside the registry",
    )
    profile.add_argument(
        "--profile-data",
        metavar="FILE",
        help="validation questions, JSONL of {'text', 'topic', 'answer', 'choices'?} "
        "(default: arithmetic, word problems and MMLU questions of the fit part by expert)",
    )
    profile.add_argument(
        "--profile-size", type=int, default=20, help="default validation questions per topic"
    )
    profile.add_argument(
        "--generate-choices",
        action="store_true",
        help="score multiple choice by the experts' generated answers even for local models "
        "(default: option log-likelihood for them)",
    )


def run(args: argparse.Namespace, out: TextIO, provider: ModelProvider) -> int:
    source = Path(args.experts) if args.experts else default_registry_path()
    # Without its current routing examples and head: the fit replaces them.
    registry = load_registry(source, routing_examples=False, allow_python=args.allow_python)
    questions, described = labelled_questions(args.data, all_questions=args.all_questions)
    print(described, file=out)
    result = fit_router(
        registry,
        provider.embeddings(args.embedding_model),
        questions,
        holdout=args.holdout,
        seed=args.seed,
        max_examples_per_expert=args.max_examples,
        learned=not args.similarity_only,
        embedding_model=args.embedding_model,
        on_progress=lambda message: print(message, file=out, flush=True),
    )
    _print_reports(result, out)
    target = Path(args.out)
    examples = write_fitted_registry(source, target, result)
    head = f" and the learned head ({len(result.head.labels):,} examples)" if result.head else ""
    print(f"wrote {target}, {examples} ({len(result.examples)} routing examples){head}", file=out)
    if args.profile:
        _profile(args, target, out, provider)
    return 0


def _print_reports(result: FitResult, out: TextIO) -> None:
    def line(name: str, report: RoutingReport) -> str:
        how = (
            f"threshold {report.threshold:.2f}"
            if report.threshold is not None
            else "per-expert thresholds"
        )
        return (
            f"  {name}: {report.accuracy:.3f} of {report.total} ({how}; "
            f"{report.to_generalist} to the generalist)"
        )

    print("routing accuracy on the held-out part (never fitted or chosen on):", file=out)
    if result.similarity is not None:
        print(line("similarity", result.similarity), file=out)
    if result.learned is not None:
        print(line("learned head", result.learned), file=out)
    kept = "learned head" if result.head is not None else "similarity"
    print(f"kept: {kept}", file=out)
    print("\n".join(result.held_out.render()), file=out)


def _profile(args: argparse.Namespace, target: Path, out: TextIO, provider: ModelProvider) -> None:
    from compllm.api import CompLLM
    from compllm.calibrate import set_registry_line
    from compllm.competence import (
        competence_file,
        expert_answerer,
        profile_experts,
        read_validation,
    )

    fitted = load_registry(target, allow_python=args.allow_python)
    validation = (
        read_validation(Path(args.profile_data))
        if args.profile_data
        else default_validation(fitted, args.profile_size, args.data)
    )
    topics = sorted({q.topic for q in validation})
    print(
        f"profiling {len(fitted.experts)} experts on {len(validation)} validation questions "
        f"({len(topics)} topics) ...",
        file=out,
    )
    scorers: dict[str, Any] = {}

    def scorer_for(ref: str) -> Any:
        from compllm.bench.loglik import TransformersOptionScorer

        if ref not in scorers:
            scorers[ref] = TransformersOptionScorer.load(ref)
        return scorers[ref]

    with CompLLM(registry=fitted, provider=provider) as app:
        answer = expert_answerer(app, option_scorer=None if args.generate_choices else scorer_for)
        profile = profile_experts(
            fitted, validation, answer, on_progress=lambda m: print(m, file=out)
        )
    path = competence_file(target)
    profile.save(path)
    set_registry_line(target, "competence", json.dumps(path.name))
    print("\n".join(profile.table()), file=out)
    print(f"wrote {path}", file=out)


def default_validation(registry: Registry, per_topic: int, data: str) -> list[ValidationQuestion]:
    """Arithmetic and word problems, and MMLU questions of the fit part for each expert
    the subject map names (topic: the expert's domain)."""
    from compllm.competence import arithmetic_questions, mmlu_validation, word_problems

    questions = [
        *arithmetic_questions(per_topic, seed=1),
        *word_problems(per_topic, seed=1),
    ]
    if data != "hub" and not data.startswith("hub:") and not _is_labelled_jsonl(Path(data)):
        fit_part, _ = split_questions(load_mmlu(data).questions)
        names = set(registry.names)
        picked: dict[str, list[MMLUQuestion]] = {}
        for question in sorted(fit_part, key=lambda q: q.key):
            domain = question.domain
            if domain in names and len(picked.setdefault(domain, [])) < per_topic:
                picked[domain].append(question)
        chosen = [q for group in picked.values() for q in group]
        questions.extend(mmlu_validation(chosen, topic=lambda q: f"mmlu:{q.domain}"))
    return questions


def _is_labelled_jsonl(path: Path) -> bool:
    first = _first_row(path)
    return "text" in first and "expert" in first


def labelled_questions(data: str, *, all_questions: bool) -> tuple[list[LabelledQuestion], str]:
    """The labelled questions in `data` and a line saying what they are."""
    if data != "hub" and not data.startswith("hub:"):
        path = Path(data)
        if _is_labelled_jsonl(path):
            lines = path.read_text("utf-8").split("\n")
            rows = [json.loads(line) for line in lines if line.strip()]
            questions = [
                LabelledQuestion(
                    str(r["text"]),
                    str(r["expert"]),
                    topic=str(r["topic"]) if r.get("topic") is not None else None,
                    variants=tuple(str(v) for v in r.get("variants", ())),
                )
                for r in rows
            ]
            return questions, f"{len(questions)} labelled questions from {path}"
    loaded = load_mmlu(data)
    mmlu = loaded.questions
    if not all_questions:
        mmlu, _ = split_questions(mmlu)
    questions = [
        LabelledQuestion(q.as_text(), q.domain, topic=q.subject, variants=(q.question.strip(),))
        for q in mmlu
        if q.domain is not None
    ]
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

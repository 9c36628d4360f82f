"""MMLU questions: loading (the packaged file, any JSONL in the MMLU schema, or the public
dataset), the map from MMLU subjects to the built-in experts' domains, and a reproducible
held-out split.

The package ships 3,476 MMLU test questions (`compllm/data/mmlu/`, MIT licence; its README
says where they come from), so `compllm fit` and `compllm bench build` work from a fresh
install. The subject map is the ground truth for routing accuracy. Subjects that belong to no
single domain (`miscellaneous`, `global_facts`) map to the generalist. The split is shared by
both commands: `compllm fit` learns routing examples from the fit part, benchmark suites draw
from the held-out part.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from compllm.calibrate import split_by_hash
from compllm.errors import CompLLMError

__all__ = [
    "DEFAULT_MMLU_FILE",
    "SUBJECT_DOMAINS",
    "LoadedQuestions",
    "MMLULoadError",
    "MMLUQuestion",
    "by_domain",
    "domain_of",
    "load_mmlu",
    "split_questions",
]

# Inside the package (wheel and source checkout alike): nothing outside the install is needed.
DEFAULT_MMLU_FILE = Path(__file__).resolve().parent / "data" / "mmlu" / "mmlu_dev.jsonl"
PACKAGED_NAME = "compllm/data/mmlu/mmlu_dev.jsonl (shipped with compllm)"
LETTERS = "ABCDEFGHIJ"

# Each built-in expert's MMLU subjects. Every one of MMLU's 57 subjects appears exactly once.
_DOMAIN_SUBJECTS = {
    "math": "abstract_algebra college_mathematics elementary_mathematics high_school_mathematics "
    "high_school_statistics",
    "science": "astronomy college_biology college_chemistry college_physics conceptual_physics "
    "electrical_engineering high_school_biology high_school_chemistry high_school_physics",
    "medicine": "anatomy clinical_knowledge college_medicine human_aging medical_genetics "
    "nutrition professional_medicine virology",
    "law": "international_law jurisprudence professional_law",
    "computing": "college_computer_science computer_security high_school_computer_science "
    "machine_learning",
    "humanities": "formal_logic high_school_european_history high_school_us_history "
    "high_school_world_history logical_fallacies moral_disputes moral_scenarios philosophy "
    "prehistory world_religions",
    "social-science": "high_school_geography high_school_government_and_politics "
    "high_school_psychology human_sexuality professional_psychology public_relations "
    "security_studies sociology us_foreign_policy",
    "economics": "business_ethics econometrics high_school_macroeconomics "
    "high_school_microeconomics management marketing professional_accounting",
    "general": "global_facts miscellaneous",
}
SUBJECT_DOMAINS: dict[str, str] = {
    subject: domain for domain, subjects in _DOMAIN_SUBJECTS.items() for subject in subjects.split()
}


def domain_of(subject: str) -> str | None:
    """The built-in expert for an MMLU subject (None for a subject MMLU does not have)."""
    return SUBJECT_DOMAINS.get(subject)


class MMLUQuestion(BaseModel):
    """One multiple-choice question, in the usual MMLU schema."""

    model_config = ConfigDict(frozen=True)

    question: str = Field(min_length=1)
    choices: tuple[str, ...] = Field(min_length=2, max_length=len(LETTERS))
    answer: int = Field(ge=0)
    subject: str = ""

    @property
    def key(self) -> str:
        """A stable id: the same question gets the same key in every file."""
        digest = hashlib.sha256(json.dumps([self.question, self.choices]).encode())
        return digest.hexdigest()[:12]

    @property
    def domain(self) -> str | None:
        return domain_of(self.subject)

    @property
    def answer_letter(self) -> str:
        return LETTERS[self.answer]

    def as_text(self) -> str:
        """The question with its options, as experts and the router see it."""
        options = "; ".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(self.choices))
        return f"{self.question.strip()} Options: {options.rstrip('.')}."


@dataclass(frozen=True)
class LoadedQuestions:
    questions: list[MMLUQuestion]
    source: str

    def describe(self) -> str:
        subjects = len({q.subject for q in self.questions})
        return f"{len(self.questions)} MMLU questions ({subjects} subjects) from {self.source}"


class MMLULoadError(CompLLMError):
    """The MMLU source could not be read."""


def load_mmlu(source: str | Path = DEFAULT_MMLU_FILE, *, split: str = "test") -> LoadedQuestions:
    """Questions from a JSONL file in the MMLU schema, or from the public dataset when
    `source` is `hub` or `hub:DATASET` (needs the `datasets` package and the network)."""
    text = str(source)
    if text == "hub" or text.startswith("hub:"):
        return _load_hub(text.partition(":")[2] or "cais/mmlu", split)
    path = Path(source)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines(): see README
    except OSError as exc:
        raise MMLULoadError(f"{path}: cannot read MMLU file ({exc.strerror or exc})") from None
    questions = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            questions.append(MMLUQuestion.model_validate_json(line))
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"]) or "line"
            raise MMLULoadError(f"{path}: line {number}: {where}: {problem['msg']}") from None
    if not questions:
        raise MMLULoadError(f"{path}: no questions")
    packaged = path.resolve() == DEFAULT_MMLU_FILE
    # The packaged file is named the same on every machine (results record this string).
    return LoadedQuestions(questions, PACKAGED_NAME if packaged else str(path))


def _load_hub(dataset: str, split: str) -> LoadedQuestions:
    try:
        from datasets import load_dataset  # type: ignore[import-not-found]
    except ImportError:
        raise MMLULoadError(
            "loading MMLU from the hub needs `pip install datasets`; or pass a JSONL file"
        ) from None
    try:
        rows = load_dataset(dataset, "all", split=split)
    except Exception as exc:  # datasets raises many kinds (network, missing config)
        raise MMLULoadError(f"cannot load {dataset} ({split}) from the hub: {exc}") from None
    questions = [MMLUQuestion.model_validate(dict(row)) for row in rows]
    return LoadedQuestions(questions, f"hub:{dataset} ({split} split)")


def split_questions(
    questions: Sequence[MMLUQuestion], *, holdout: float = 0.2, seed: int = 0
) -> tuple[list[MMLUQuestion], list[MMLUQuestion]]:
    """(fit, held-out): about `holdout` of the questions are held out, by a hash of each
    question's key, so a question stays on its side whatever else the file holds."""
    return split_by_hash(questions, lambda q: q.key, holdout=holdout, seed=seed)


def by_domain(questions: Iterable[MMLUQuestion]) -> dict[str, list[MMLUQuestion]]:
    grouped: dict[str, list[MMLUQuestion]] = {}
    for question in questions:
        if question.domain is not None:
            grouped.setdefault(question.domain, []).append(question)
    return grouped

"""Expert registries: which experts exist, what they know, and which model runs each.

Registries are YAML or TOML files validated by pydantic. A bad file fails as a whole, with one
message naming the file, the expert and the field, so nothing runs half configured.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import tomllib
from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from compllm.errors import RegistryError

__all__ = [
    "EMBEDDED_CHAT_MODEL",
    "Expert",
    "GenerationSettings",
    "Registry",
    "default_registry",
    "default_registry_path",
    "load_registry",
    "parse_registry",
    "read_routing_examples",
]

EMBEDDED_CHAT_MODEL = "embedded:smollm2-135m-instruct"
MAX_NEW_TOKENS = 32_768  # most tokens one answer may ask for (expert, planner or aggregator)


class GenerationSettings(BaseModel):
    """Decoding settings for one expert. Temperature 0 means greedy decoding."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(default=160, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    repetition_penalty: float = Field(default=1.1, ge=1.0, le=2.0)


class Expert(BaseModel):
    """One domain expert: its routing profile and what answers for it.

    `model` is any of:
    - a reference string: a hub id, a local path, `embedded:*`, `openai:MODEL@URL`, the
      built-in `builtin:calculator`, or (only when the registry is loaded with
      `allow_python=True`) `python:package.module:name` / `python:package.module:factory()`;
    - a LangChain chat model object (`ChatOpenAI(...)`, `ChatHuggingFace(...)`, ...);
    - any `Runnable`: a chain, a `@tool`, a compiled LangGraph graph (a ReAct agent);
    - a plain Python function, sync or async.
    `compllm.experts` documents what each kind receives and may return.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,39}$")
    description: str = Field(min_length=1)
    examples: tuple[str, ...] = Field(default=(), description="Example questions for routing.")
    model: Any = Field(
        default=EMBEDDED_CHAT_MODEL,
        description="Reference string, chat model, Runnable or function (see the class doc).",
    )
    system_prompt: str | None = Field(
        default=None,
        min_length=1,
        description="System message of a chat-model expert (default: from the description).",
    )
    generation: GenerationSettings = Field(
        default_factory=GenerationSettings,
        description="Decoding settings. For a chat model object only the fields set here are "
        "applied (through its own fields); its other settings stay as the object has them.",
    )
    trust_remote_code: bool = False
    max_concurrency: int | None = Field(
        default=None, ge=1, description="Most calls of this expert running at once in a run."
    )
    fallback: str | None = Field(
        default=None,
        description="Expert that answers when this one's calls all fail (e.g. a local model "
        "behind a remote endpoint).",
    )
    accepts: Callable[[str], bool] | None = Field(
        default=None,
        exclude=True,
        description="Applicability check: when set, the router sends a sub-query to this "
        "expert exactly when it returns True (before any similarity), and never otherwise.",
    )

    @field_validator("model", mode="before")
    @classmethod
    def _model_kind(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("must not be empty")
            return value.strip()
        if callable(value) or _is_runnable(value):
            return value
        raise ValueError(
            "must be a reference string, a LangChain chat model, a Runnable or a function, "
            f"not {type(value).__name__}"
        )

    @model_validator(mode="before")
    @classmethod
    def _builtin(cls, data: object) -> object:
        # `builtin:*` names a model that ships with compllm; its applicability check comes
        # with it unless the expert names its own.
        if isinstance(data, dict) and isinstance(data.get("model"), str):
            builtin = _builtin_model(data["model"])
            if builtin is not None:
                model, accepts = builtin
                data = {**data, "model": model, "accepts": data.get("accepts") or accepts}
        return data

    @property
    def reference(self) -> str | None:
        """The model's reference string (loaded by the model hub), or None for an object."""
        return self.model if isinstance(self.model, str) else None

    @property
    def prompt(self) -> str:
        """The system message a chat-model expert gets."""
        return self.system_prompt or (
            f"You are an expert in: {self.description} Answer the question precisely and briefly."
        )

    @property
    def profile_texts(self) -> list[str]:
        """What the router embeds for this expert."""
        return [self.description, *self.examples]


class Registry(BaseModel):
    """The experts of one deployment, plus routing settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    generalist: str = Field(description="Expert that takes sub-queries no expert matches well.")
    threshold: float = Field(
        default=0.1, ge=-1.0, le=1.0, description="Minimum routing score; below it, generalist."
    )
    experts: tuple[Expert, ...] = Field(min_length=1)
    routing_examples: str | None = Field(
        default=None,
        description="JSONL file of more example questions ({'expert', 'text'} per line), "
        "relative to the registry file; written by `compllm fit`.",
    )
    routing_head: str | None = Field(
        default=None,
        description="File of the learned router (`compllm.routing_head`), relative to the "
        "registry file; written by `compllm fit`. Once loaded, the absolute path (None when "
        "the file's routing examples are not read).",
    )
    competence: str | None = Field(
        default=None,
        description="File of measured competence per expert and topic "
        "(`compllm.competence`), relative to the registry file; written by "
        "`compllm fit --profile`. Once loaded, the absolute path (None as above).",
    )
    source: str = Field(default="<memory>", exclude=True)

    @model_validator(mode="after")
    def _names(self) -> Registry:
        names = [e.name for e in self.experts]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate expert names: {', '.join(duplicates)}")
        if self.generalist not in names:
            raise ValueError(
                f"generalist '{self.generalist}' is not one of the experts ({', '.join(names)})"
            )
        for spec in self.experts:
            if spec.fallback is not None and (
                spec.fallback not in names or spec.fallback == spec.name
            ):
                raise ValueError(
                    f"expert '{spec.name}': fallback '{spec.fallback}' must be another expert "
                    f"({', '.join(names)})"
                )
        return self

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.experts]

    def expert(self, name: str) -> Expert:
        for spec in self.experts:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def fingerprint(self) -> str:
        """Changes whenever the routing profiles change (used to cache their embeddings)."""
        profiles = [[e.name, *e.profile_texts] for e in self.experts]
        return hashlib.sha256(json.dumps(profiles).encode()).hexdigest()[:16]


def load_registry(
    path: str | Path, *, routing_examples: bool = True, allow_python: bool = False
) -> Registry:
    """Read and validate a registry file (`.yaml`, `.yml` or `.toml`); `routing_examples`
    False leaves out the examples of its `routing_examples` file (to fit new ones).
    `allow_python` lets experts name Python objects (`model: "python:pkg.mod:name"`), which
    imports and runs that code: like `trust_remote_code`, only for files you trust."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(
            f"{path}: cannot read registry file ({exc.__class__.__name__}: {exc})"
        ) from None
    return parse_registry(
        text,
        source=str(path),
        fmt=path.suffix.lower().lstrip("."),
        base=path.parent if routing_examples else None,
        allow_python=allow_python,
    )


def parse_registry(
    text: str,
    *,
    source: str,
    fmt: str = "yaml",
    base: Path | None = None,
    allow_python: bool = False,
) -> Registry:
    """Validate registry text. `fmt` is 'yaml', 'yml' or 'toml'; `base` is the folder that
    a `routing_examples` file is relative to (None: do not read that file); `allow_python`
    as in `load_registry`."""
    try:
        data: Any = tomllib.loads(text) if fmt == "toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise RegistryError(f"{source}: not valid {fmt.upper()}: {_syntax_problem(exc)}") from None
    if not isinstance(data, dict):
        raise RegistryError(
            f"{source}: expected a mapping with 'experts', got {type(data).__name__}"
        )
    if base is not None and isinstance(data.get("routing_examples"), str):
        data = _with_routing_examples(data, base / data["routing_examples"], source)
    data = _with_router_files(data, base)
    data = _with_python_models(data, source, allow=allow_python)
    try:
        return Registry.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise RegistryError(_describe(exc, data, source)) from None


def read_routing_examples(path: Path) -> list[tuple[str, str]]:
    """(expert, text) pairs from a routing-examples JSONL file."""
    pairs = []
    # split("\n"), not splitlines(): questions may contain Unicode line separators.
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pairs.append((str(row["expert"]), str(row["text"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(
                f"{path}: line {number}: expected {{'expert': ..., 'text': ...}} ({exc})"
            ) from None
    return pairs


def _with_routing_examples(data: dict[str, Any], path: Path, source: str) -> dict[str, Any]:
    """The registry data with the file's examples appended to each expert's own."""
    try:
        pairs = read_routing_examples(path)
    except OSError as exc:
        raise RegistryError(
            f"{source}: cannot read routing_examples ({exc.__class__.__name__}: {exc})"
        ) from None
    experts = data.get("experts")
    if not isinstance(experts, list):
        return data  # validation reports the missing experts
    names = {e.get("name") for e in experts if isinstance(e, dict)}
    unknown = sorted({expert for expert, _ in pairs} - names)
    if unknown:
        raise RegistryError(f"{path}: examples for unknown experts: {', '.join(unknown)}")
    merged = []
    for entry in experts:
        if isinstance(entry, dict):
            extra = [text for expert, text in pairs if expert == entry.get("name")]
            entry = {**entry, "examples": [*(entry.get("examples") or []), *extra]}
        merged.append(entry)
    return {**data, "experts": merged}


def _with_router_files(data: dict[str, Any], base: Path | None) -> dict[str, Any]:
    """The registry data with its router files as absolute paths. Without `base` (the
    routing examples are not read, e.g. to fit new ones) they are left out: the learned
    router was fitted on those examples, and neither file can be found."""
    resolved = dict(data)
    for key in ("routing_head", "competence"):
        value = data.get(key)
        if isinstance(value, str):
            resolved[key] = str((base / value).resolve()) if base is not None else None
    return resolved


_PYTHON_PREFIX = "python:"


def _with_python_models(data: dict[str, Any], source: str, *, allow: bool) -> dict[str, Any]:
    """The registry data with `python:` model references replaced by the objects they name."""
    experts = data.get("experts")
    if not isinstance(experts, list):
        return data
    resolved = []
    for entry in experts:
        ref = entry.get("model") if isinstance(entry, dict) else None
        if isinstance(ref, str) and ref.startswith(_PYTHON_PREFIX):
            name = entry.get("name", "?")
            if not allow:
                raise RegistryError(
                    f"{source}: expert '{name}': model {ref!r} imports and runs Python code; "
                    "load the registry with allow_python=True (CLI: --allow-python, server: "
                    "COMPLLM_ALLOW_PYTHON=1) if you trust it"
                )
            entry = {**entry, "model": _import_object(ref, f"{source}: expert '{name}'")}
        resolved.append(entry)
    return {**data, "experts": resolved}


def _import_object(ref: str, where: str) -> Any:
    """`python:pkg.mod:name` -> the object; `python:pkg.mod:factory()` -> what it returns."""
    target = ref.removeprefix(_PYTHON_PREFIX).strip()
    module_name, _, attribute = target.partition(":")
    call = attribute.endswith("()")
    attribute = attribute.removesuffix("()")
    if not module_name or not attribute.isidentifier():
        raise RegistryError(f"{where}: expected python:package.module:name, got {ref!r}")
    try:
        module = importlib.import_module(module_name)
        value = getattr(module, attribute)
        return value() if call else value
    except (ImportError, AttributeError) as exc:
        raise RegistryError(f"{where}: cannot import {ref!r}: {exc}") from None


def _builtin_model(ref: str) -> tuple[Any, Callable[[str], bool] | None] | None:
    """The object and applicability check of a `builtin:*` reference (None otherwise)."""
    if not ref.startswith("builtin:"):
        return None
    name = ref.removeprefix("builtin:")
    if name == "calculator":
        from compllm.calculator import Calculator

        calculator = Calculator()
        return calculator, calculator.accepts
    raise ValueError(f"unknown built-in model {ref!r} (built-in: builtin:calculator)")


def _is_runnable(value: object) -> bool:
    from langchain_core.runnables import Runnable

    return isinstance(value, Runnable)


def _syntax_problem(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _describe(exc: ValidationError, data: dict[str, Any], source: str) -> str:
    """'file: expert 'math': field 'examples': Input should be a valid list' (first error)."""
    error = exc.errors()[0]
    loc = list(error["loc"])
    where = []
    if len(loc) >= 2 and loc[0] == "experts" and isinstance(loc[1], int):
        experts = data.get("experts") or []
        entry = experts[loc[1]] if loc[1] < len(experts) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        where.append(f"expert '{name}'" if name else f"expert #{loc[1] + 1}")
        loc = loc[2:]
    if loc:
        where.append("field '" + ".".join(str(p) for p in loc) + "'")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    message = error["msg"].removeprefix("Value error, ")
    return f"{source}: {': '.join([*where, message])}{more}"


def default_registry_path() -> Path:
    """The shipped registry file (its routing examples lie beside it)."""
    return Path(str(resources.files("compllm").joinpath("data/experts.yaml")))


@cache
def default_registry() -> Registry:
    """The shipped registry: seven domain experts, all on the embedded default model."""
    path = default_registry_path()
    text = path.read_text(encoding="utf-8")
    return parse_registry(text, source="compllm:data/experts.yaml", base=path.parent)


ExpertSpec = Expert  # transitional alias while the expert-call path moves to `Expert`

"""Expert registries: which experts exist, what they know, and which model runs each.

Registries are YAML or TOML files validated by pydantic. A bad file fails as a whole, with one
message naming the file, the expert and the field, so nothing runs half configured.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from compllm.errors import RegistryError

__all__ = [
    "EMBEDDED_CHAT_MODEL",
    "ExpertSpec",
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


class ExpertSpec(BaseModel):
    """One domain expert: its routing profile and the model that answers for it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,39}$")
    description: str = Field(min_length=1)
    examples: tuple[str, ...] = Field(default=(), description="Example questions for routing.")
    model: str = Field(
        default=EMBEDDED_CHAT_MODEL, min_length=1, description="Hub id, local path or embedded:*"
    )
    backend: Literal["transformers"] = "transformers"
    system_prompt: str = Field(min_length=1)
    generation: GenerationSettings = GenerationSettings()
    trust_remote_code: bool = False
    max_concurrency: int | None = Field(
        default=None, ge=1, description="Most calls of this expert running at once in a run."
    )
    fallback: str | None = Field(
        default=None,
        description="Expert that answers when this one's calls all fail (e.g. a local model "
        "behind a remote endpoint).",
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
    experts: tuple[ExpertSpec, ...] = Field(min_length=1)
    routing_examples: str | None = Field(
        default=None,
        description="JSONL file of more example questions ({'expert', 'text'} per line), "
        "relative to the registry file; written by `compllm fit`.",
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

    def expert(self, name: str) -> ExpertSpec:
        for spec in self.experts:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def fingerprint(self) -> str:
        """Changes whenever the routing profiles change (used to cache their embeddings)."""
        profiles = [[e.name, *e.profile_texts] for e in self.experts]
        return hashlib.sha256(json.dumps(profiles).encode()).hexdigest()[:16]


def load_registry(path: str | Path, *, routing_examples: bool = True) -> Registry:
    """Read and validate a registry file (`.yaml`, `.yml` or `.toml`); `routing_examples`
    False leaves out the examples of its `routing_examples` file (to fit new ones)."""
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
    )


def parse_registry(
    text: str, *, source: str, fmt: str = "yaml", base: Path | None = None
) -> Registry:
    """Validate registry text. `fmt` is 'yaml', 'yml' or 'toml'; `base` is the folder that
    a `routing_examples` file is relative to (None: do not read that file)."""
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

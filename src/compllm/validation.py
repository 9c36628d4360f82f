"""What a client sends, checked before any model runs: the graph's input and its `Context`.

Every entry point (the library, the CLI, the LangGraph server and Studio) gets the same
one-line errors, naming the field, the value and what is allowed:

    Context.planner_mode must be one of 'auto', 'learned', 'llm', 'rules', not 'telepathy'
    input.query must be a string, not int (123)

Errors are `QueryError` (the input) and `ConfigError` (the context), both `ValueError`s, so
the LangGraph server passes their message to the client intact (it replaces the message of
other exception types with "An internal error occurred").
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from compllm.errors import ConfigError, QueryError

__all__ = ["check_fields", "check_query", "describe_value", "unknown_fields"]

_models: dict[type, type[BaseModel]] = {}
_models_lock = threading.Lock()


def check_fields(instance: Any, owner: str) -> None:
    """Check a dataclass instance's fields against their annotations (types, `Literal`
    values, `Annotated` constraints) strictly: `ConfigError` for the first one that fails."""
    model = _fields_model(type(instance))
    values = {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance)}
    try:
        model.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0], owner)) from None


def unknown_fields(cls: type, given: Mapping[str, Any], owner: str) -> None:
    """`ConfigError` naming the keys of `given` that are not fields of the dataclass `cls`."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ConfigError(
            f"{owner} has no field {', '.join(repr(k) for k in unknown)} (fields: "
            f"{', '.join(sorted(known))})"
        )


def check_query(value: object, max_chars: int) -> str:
    """The query as given, or `QueryError` saying what is wrong with it."""
    if value is None:
        raise QueryError("input.query is missing: send the question to answer, as a string")
    if not isinstance(value, str):
        raise QueryError(f"input.query must be a string, not {describe_value(value)}")
    if not value.strip():
        raise QueryError("the query is empty: send the question to answer (input.query)")
    if len(value) > max_chars:
        raise QueryError(
            f"the query is {len(value)} characters long; the limit is {max_chars} "
            "(Context.max_query_chars)"
        )
    return value


def describe_value(value: object) -> str:
    """`int (123)`, `str ('five')`: a value's type and a short form of it."""
    text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{type(value).__name__} ({text})"


def _fields_model(cls: type) -> type[BaseModel]:
    with _models_lock:
        if cls not in _models:
            hints = get_type_hints(cls, include_extras=True)
            fields: dict[str, Any] = {f.name: (hints[f.name], ...) for f in dataclasses.fields(cls)}
            _models[cls] = create_model(
                f"{cls.__name__}Fields",
                __config__=ConfigDict(strict=True, arbitrary_types_allowed=True),
                **fields,
            )
        return _models[cls]


_RULES = {
    "int_type": "must be a whole number",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
}


def _describe(error: Mapping[str, Any], owner: str) -> str:
    name = str(error["loc"][0]) if error["loc"] else "?"
    kind, limits = error["type"], error.get("ctx") or {}
    if kind == "literal_error":
        rule = f"must be one of {limits['expected']}"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        words = {
            "greater_than": "greater than",
            "greater_than_equal": "at least",
            "less_than": "less than",
            "less_than_equal": "at most",
        }[kind]
        bound = next(iter(limits.values()))
        rule = f"must be {words} {bound}"
    elif kind in _RULES:
        rule = _RULES[kind]
    else:
        rule = str(error["msg"]).removeprefix("Value error, ").lower()
    value = error.get("input")
    shown = repr(value) if isinstance(value, bool | int | float | str) else describe_value(value)
    return f"{owner}.{name} {rule}, not {shown}"

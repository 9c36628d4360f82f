"""Errors users can act on. Each message is one line that names what is wrong.

Errors about what a caller sent (a query, a setting, a registry) are also `ValueError`s:
the LangGraph server passes a `ValueError`'s message to its client and hides the message of
other exception types behind "An internal error occurred"."""

from __future__ import annotations

__all__ = [
    "CompLLMError",
    "ConfigError",
    "ModelBudgetError",
    "ModelLoadError",
    "PromptError",
    "QueryError",
    "RegistryError",
]


class CompLLMError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero."""


class RegistryError(CompLLMError, ValueError):
    """An expert registry file that cannot be used (names the file, expert and field)."""


class ModelLoadError(CompLLMError, ValueError):
    """A model id or path that cannot be loaded."""


class PromptError(CompLLMError):
    """A prompt file that is missing, or rendered without one of its variables."""


class QueryError(CompLLMError, ValueError):
    """A query that cannot be answered as given (for example an empty one)."""


class ModelBudgetError(CompLLMError, ValueError):
    """A model that cannot fit in the memory budget even with every other model unloaded."""


class ConfigError(CompLLMError, ValueError):
    """A setting (environment variable, option) with a value that cannot be used."""

"""Prompts live as Jinja files in `prompts/` and ship inside the wheel.

Rendering is strict: a variable the template uses but the caller did not pass raises
`PromptError` instead of silently producing an empty string.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

import jinja2

from compllm.errors import PromptError

__all__ = ["load_prompt", "render_prompt"]

_SUFFIX = ".md.j2"


def _prompt_dirs() -> list[Traversable]:
    # Installed wheels carry the prompts inside the package; a source checkout (editable
    # install) reads them from the repository's top-level prompts/ folder.
    return [
        resources.files("compllm").joinpath("prompts"),
        Path(__file__).resolve().parents[2] / "prompts",
    ]


_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=False,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)


@cache
def load_prompt(name: str) -> jinja2.Template:
    """The template `prompts/<name>.md.j2`."""
    for folder in _prompt_dirs():
        candidate = folder.joinpath(name + _SUFFIX)
        if candidate.is_file():
            source = candidate.read_text(encoding="utf-8")
            try:
                return _ENV.from_string(source)
            except jinja2.TemplateSyntaxError as exc:
                raise PromptError(f"prompt '{name}': line {exc.lineno}: {exc.message}") from None
    raise PromptError(f"prompt '{name}' not found (looked for {name}{_SUFFIX})")


def render_prompt(name: str, **variables: Any) -> str:
    """Render a prompt; fails loudly when a variable is missing."""
    try:
        return load_prompt(name).render(**variables).strip()
    except jinja2.UndefinedError as exc:
        raise PromptError(f"prompt '{name}': missing variable ({exc.message})") from None

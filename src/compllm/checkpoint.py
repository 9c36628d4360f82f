"""Checkpointers: where a run's state is saved after every step, so a run that stopped (a
crash, Ctrl-C, a review pause) resumes on its thread without recomputing finished sub-queries.

- SQLite, the embedded default: a file path or `sqlite:///path` (one file, no server).
- PostgreSQL, for teams: `postgresql://...`, through LangGraph's own saver
  (`pip install "comp-llm[postgres]"`).
- `memory`: in this process only (tests, notebooks).

Every saver gets a serializer that names compllm's state types, so restoring them neither
warns nor breaks when LangGraph's strict deserialization is switched on.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from compllm.errors import ConfigError
from compllm.plan import Plan, SubQuery
from compllm.state import PlannerAttempt, SubAnswer

__all__ = ["checkpoint_serializer", "default_checkpoint_target", "open_checkpointer"]

_STATE_TYPES = (Plan, SubQuery, SubAnswer, PlannerAttempt)


def checkpoint_serializer() -> JsonPlusSerializer:
    """LangGraph's serializer, allowed to restore compllm's state types (and no others
    beyond LangGraph's safe built-ins)."""
    return JsonPlusSerializer(allowed_msgpack_modules=list(_STATE_TYPES))


def default_checkpoint_target() -> str:
    """`$COMPLLM_CHECKPOINT`, else `$XDG_STATE_HOME/compllm/checkpoints.sqlite`
    (`~/.local/state/...`)."""
    if os.environ.get("COMPLLM_CHECKPOINT"):
        return os.environ["COMPLLM_CHECKPOINT"]
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return str(Path(base) / "compllm" / "checkpoints.sqlite")


@contextmanager
def open_checkpointer(target: str | Path | None = None) -> Iterator[BaseCheckpointSaver[Any]]:
    """A checkpointer for `target` (see the module's doc; default `default_checkpoint_target()`),
    closed when the block ends."""
    text = str(target if target is not None else default_checkpoint_target()).strip()
    if text in ("memory", ":memory:"):
        yield InMemorySaver(serde=checkpoint_serializer())
    elif text.startswith(("postgresql://", "postgres://")):
        with _postgres(text) as saver:
            yield saver
    else:
        path = Path(text.removeprefix("sqlite:///")).expanduser()
        with _sqlite(path) as saver:
            yield saver


@contextmanager
def _sqlite(path: Path) -> Iterator[BaseCheckpointSaver[Any]]:
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver
    except ImportError:
        raise ConfigError(
            'SQLite checkpoints need langgraph-checkpoint-sqlite: pip install "comp-llm[sqlite]"'
        ) from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The saver serializes access itself; the graph's worker threads share the connection.
        connection = sqlite3.connect(path, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(f"cannot open the checkpoint database {path}: {exc}") from None
    try:
        yield SqliteSaver(connection, serde=checkpoint_serializer())
    finally:
        connection.close()


@contextmanager
def _postgres(url: str) -> Iterator[BaseCheckpointSaver[Any]]:
    try:
        from langgraph.checkpoint.postgres import PostgresSaver
    except ImportError:
        raise ConfigError(
            "PostgreSQL checkpoints need langgraph-checkpoint-postgres: "
            'pip install "comp-llm[postgres]"'
        ) from None
    with PostgresSaver.from_conn_string(url) as saver:
        saver.serde = checkpoint_serializer()
        saver.setup()  # creates its tables on first use; idempotent
        yield saver

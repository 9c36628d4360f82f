"""Knowing, without polling, when expert answers are in a checkpoint: `SavedAnswers` wraps a
checkpointer's `put` and `put_writes` and wakes whoever waits for a number of answers."""

from __future__ import annotations

import threading
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver


class SavedAnswers:
    """Expert answers a resumed run would find in `saver`: each saved as its task's result
    (a `__return__` write), with the checkpoint it belongs to saved too (a saver may write a
    step's task results before the step's checkpoint itself)."""

    def __init__(self, saver: BaseCheckpointSaver[Any]) -> None:
        self._changed = threading.Condition()
        self._checkpoints: set[str] = set()
        self._answers: dict[str, str] = {}  # sub-query id -> its checkpoint's id
        put, put_writes = saver.put, saver.put_writes

        def put_and_tell(config: Any, checkpoint: Any, *args: Any, **kwargs: Any) -> Any:
            saved = put(config, checkpoint, *args, **kwargs)
            with self._changed:
                self._checkpoints.add(checkpoint["id"])
                self._changed.notify_all()
            return saved

        def put_writes_and_tell(config: Any, writes: Any, *args: Any, **kwargs: Any) -> None:
            put_writes(config, writes, *args, **kwargs)
            with self._changed:
                for channel, value in writes:
                    if channel == "__return__":
                        self._answers[value.id] = config["configurable"]["checkpoint_id"]
                self._changed.notify_all()

        saver.put = put_and_tell  # type: ignore[method-assign]
        saver.put_writes = put_writes_and_tell  # type: ignore[method-assign]

    def wait_for(self, count: int, timeout: float = 60) -> bool:
        """Wait until at least `count` answers are saved; whether they were in time."""
        with self._changed:
            return self._changed.wait_for(lambda: self._saved() >= count, timeout=timeout)

    def _saved(self) -> int:
        return sum(checkpoint in self._checkpoints for checkpoint in self._answers.values())

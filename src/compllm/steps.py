"""Logic written once for sync and async runs.

A piece of logic that must wait for something (an expert call) is written as a generator:
it yields a step (an object with `wait()` and `wait_async()`) and receives the step's result,
or has its exception thrown in at the `yield`. `run_steps` drives it blocking, `arun_steps`
on the event loop; nothing else differs between the two. (The two drivers have the same
shape on purpose: one blocks, the other awaits, and Python has no way to write both at once.)
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Protocol, TypeVar

__all__ = ["Step", "arun_steps", "run_steps"]

T = TypeVar("T")


class Step(Protocol):
    def wait(self) -> Any: ...

    async def wait_async(self) -> Any: ...


def run_steps(steps: Generator[Step, Any, T]) -> T:
    """Run the generator, waiting for each step on this thread."""
    try:
        step = next(steps)
        while True:
            try:
                result = step.wait()
            except Exception as exc:
                step = steps.throw(exc)
            else:
                step = steps.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def arun_steps(steps: Generator[Step, Any, T]) -> T:
    """Run the generator, awaiting each step (a cancelled wait cancels the step)."""
    try:
        step = next(steps)
        while True:
            try:
                result = await step.wait_async()
            except Exception as exc:
                step = steps.throw(exc)
            else:
                step = steps.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]

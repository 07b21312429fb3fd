"""Drivers for logic written once as a generator of I/O steps (sans-I/O).

A flow is a generator that yields the I/O it needs and receives each reply, or has the
exception that I/O raised thrown in at the ``yield``; its return value is the result.
``drive`` executes the steps with blocking calls and ``adrive`` awaits them, so the
logic has one copy and each driver is a few lines (httpx drives its auth flows so).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

Step = TypeVar("Step")
T = TypeVar("T")


class Stepper:
    """Advances a flow by one step with a reply or an error; keeps its result."""

    def __init__(self, flow: Generator[Any, Any, Any]) -> None:
        self.flow = flow
        self.result: Any = None

    def advance(self, reply: Any = None, error: BaseException | None = None) -> Any:
        """The next step, or None when the flow has returned (see ``result``)."""
        try:
            return self.flow.throw(error) if error is not None else self.flow.send(reply)
        except StopIteration as done:
            self.result = done.value
            return None


def drive(flow: Generator[Step, Any, T], execute: Callable[[Step], Any]) -> T:
    """Run ``flow``, executing each step with a blocking call."""
    stepper = Stepper(flow)
    step = stepper.advance()
    while step is not None:
        try:
            reply = execute(step)
        except BaseException as exc:  # thrown into the flow, which decides
            step = stepper.advance(error=exc)
        else:
            step = stepper.advance(reply)
    return stepper.result  # type: ignore[no-any-return]


async def adrive(flow: Generator[Step, Any, T], execute: Callable[[Step], Awaitable[Any]]) -> T:
    """Run ``flow``, awaiting each step (a cancellation is thrown in like any error)."""
    stepper = Stepper(flow)
    step = stepper.advance()
    while step is not None:
        try:
            reply = await execute(step)
        except BaseException as exc:
            step = stepper.advance(error=exc)
        else:
            step = stepper.advance(reply)
    return stepper.result  # type: ignore[no-any-return]

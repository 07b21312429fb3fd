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
    """A flow and its current step: advanced with each reply or error; keeps the result."""

    def __init__(self, flow: Generator[Any, Any, Any]) -> None:
        self.flow = flow
        self.result: Any = None
        self.step: Any = None
        self.advance()

    def advance(self, reply: Any = None, error: BaseException | None = None) -> None:
        """Move to the next step (None once the flow has returned its ``result``)."""
        try:
            self.step = self.flow.throw(error) if error is not None else self.flow.send(reply)
        except StopIteration as done:
            self.step, self.result = None, done.value


def drive(flow: Generator[Step, Any, T], execute: Callable[[Step], Any]) -> T:
    """Run ``flow``, executing each step with a blocking call."""
    stepper = Stepper(flow)
    while stepper.step is not None:
        try:
            reply = execute(stepper.step)
        except BaseException as exc:  # thrown into the flow, which decides
            stepper.advance(error=exc)
        else:
            stepper.advance(reply)
    return stepper.result  # type: ignore[no-any-return]


async def adrive(flow: Generator[Step, Any, T], execute: Callable[[Step], Awaitable[Any]]) -> T:
    """Run ``flow``, awaiting each step (a cancellation is thrown in like any error)."""
    stepper = Stepper(flow)
    while stepper.step is not None:
        try:
            reply = await execute(stepper.step)
        except BaseException as exc:
            stepper.advance(error=exc)
        else:
            stepper.advance(reply)
    return stepper.result  # type: ignore[no-any-return]

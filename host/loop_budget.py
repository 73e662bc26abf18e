"""How long a blocking call may hold the event loop when a function runs inline (issue 16).

A function whose imports are pure or replayable reads (abi/imports/_registry.py: a state read,
`proxy_invoke_service` of such a function) may run inline on the event loop once it has proven fast
(host/functions/policy.py): a Redis GET on a warm connection then costs one round trip on the loop,
less than handing the request to a guest thread and back. While such a run is on the loop, its
deadline is set here, and every blocking client checks it: the Redis client waits at most the time
left and uses only an already connected idle connection; a client that cannot bound its wait
(PostgreSQL) refuses at once. A refusal or a timeout raises `LoopBudgetExceeded`, which abandons
the run (nothing it did had an outside effect) and replays the request in a guest thread, where the
call waits as long as it needs (host/functions/dispatch.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class LoopBudgetExceeded(Exception):
    """A blocking call made on the event loop could not finish within the inline budget."""


class InlineBusy(LoopBudgetExceeded):
    """What the run needs is in use right now (every instance of the function it invokes, every
    connected idle connection): a moment's contention, not a slow function."""


class _Budget(threading.local):
    deadline = 0.0  # time.monotonic() by which the inline run must be done; 0: not inline


BUDGET = _Budget()


def inline_remaining() -> float | None:
    """Seconds left to the running inline run on this thread (raising when none are), or None when
    this thread is not running one (a guest thread: wait as configured)."""
    deadline = BUDGET.deadline
    if not deadline:
        return None
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise LoopBudgetExceeded("the inline budget is spent")
    return remaining


def open_budget(budget_s: float) -> float:
    """Start an inline budget of `budget_s` on this thread, unless one runs already (a nested call
    shares its caller's); returns the deadline to put back (`BUDGET.deadline = ...`) when done."""
    outer = BUDGET.deadline
    if not outer:
        BUDGET.deadline = time.monotonic() + budget_s
    return outer


def run_within(budget_s: float, call: Callable[[], T]) -> T:
    """`call()` on this thread with an inline budget of `budget_s` (or its caller's, when one runs)."""
    outer = open_budget(budget_s)
    try:
        return call()
    finally:
        BUDGET.deadline = outer


class InlineGate:
    """Whether calls of one kind (reads of one store through the runtime API) try the event loop
    first. One that could not finish within its budget, or took longer than SLOW_S, closes the gate
    for the next calls — 1, 2, 4 … up to MAX_SKIP of them while that keeps happening — so a slow or
    refusing backend costs the loop a try now and then, not on every call."""

    SLOW_S = 0.001
    MAX_SKIP = 1024

    def __init__(self) -> None:
        self._skip = 0
        self._penalty = 1

    def open(self) -> bool:
        if self._skip:
            self._skip -= 1
            return False
        return True

    def took(self, seconds: float) -> None:
        if seconds > self.SLOW_S:
            self.failed()
        elif self._penalty > 1:
            self._penalty //= 2  # quick again: back to trying every call, gradually

    def failed(self) -> None:
        self._skip = self._penalty
        self._penalty = min(self._penalty * 2, self.MAX_SKIP)


def refuse_inline(what: str) -> None:
    """For a client that cannot bound its wait: refuse to run on the event loop."""
    if BUDGET.deadline:
        raise LoopBudgetExceeded(f"{what} does not run on the event loop")

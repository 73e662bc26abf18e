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


def refuse_inline(what: str) -> None:
    """For a client that cannot bound its wait: refuse to run on the event loop."""
    if BUDGET.deadline:
        raise LoopBudgetExceeded(f"{what} does not run on the event loop")

"""Where a function's requests run (event loop or guest thread), learned from observed guest times.

Guest code runs in guest threads, so a slow function never stalls the listener. Handing a request
to a thread costs tens of microseconds on a small VM, more than a simple function takes, so a
function whose module only imports pure host calls (recorded on each import's registration,
abi/imports/_registry.py), and which has proven fast (`PROMOTE_AFTER` consecutive requests under
`FAST_REQUEST_NS`), is run inline on the event loop with a short epoch deadline. If an inline run
overruns it, the function goes back to guest threads (with exponential back-off before it may be
inlined again) and the request is replayed in a thread (host/functions/dispatch.py) — safe because
such a module can have no effect outside its own (discarded) instance.

A module whose imports are pure or replayable reads (a state read, invoking such a function) is
eligible too, as a `blocking` function: inline, its reads wait on the loop, at most what is left of
the run's inline deadline (host/loop_budget.py; past it the run is abandoned and replayed in a
thread), and its inline runs are timed by the wall clock, since waiting stalls the loop as much as
computing does.
"""

from __future__ import annotations

import time

INLINE_DEADLINE_S = 0.01  # epoch ticks of 10 ms: an inline overrun stalls the loop for 10-20 ms, once
FAST_REQUEST_NS = 200_000  # guest-thread CPU time (not wall time: waiting for the GIL does not count)
# A blocking function's CPU time includes the functions it invokes and its clients' work: a chain
# this cheap still costs less on the loop than its thread hop and GIL hand-overs.
FAST_BLOCKING_REQUEST_NS = 500_000
SLOW_INLINE_NS = 1_000_000  # inline requests this costly, several in a row, go back to guest threads
SLOW_INLINE_LIMIT = 3  # (one slow run may be a GC pause; a runaway one is cut by the deadline anyway)
CHEAP_REQUEST_NS = 1_000_000  # requests this light (CPU) keep the GIL across their guest calls...
HEAVY_REQUEST_NS = 2_000_000  # ...and one this heavy hands it back, so heavy guests run in parallel
PROMOTE_AFTER = 64
MAX_PROMOTE_AFTER = 1 << 20
# Inline requests are timed one in this many (host/functions/dispatch.py): a thread's CPU clock is a
# system call, a real cost for a microsecond function; a slow streak still shows within a few dozen.
INLINE_SAMPLE_EVERY = 8
# Inline runs abandoned for a moment's contention (host/loop_budget.py InlineBusy) before the
# function is demoted all the same: right after a promotion, requests still running in guest
# threads hold the instances and connections an inline run needs.
BUSY_ABANDON_LIMIT = 32

class ExecutionPolicy:
    """Per function version: run inline or in a guest thread, learned from observed guest times."""

    def __init__(self, eligible: bool, blocking: bool = False):
        self.eligible = eligible
        self.blocking = blocking
        # How an inline run is timed: CPU time, or wall time for a function that may wait on the loop.
        self.inline_clock = time.perf_counter_ns if blocking else time.thread_time_ns
        self._fast_ns = FAST_BLOCKING_REQUEST_NS if blocking else FAST_REQUEST_NS
        self.inline = False
        self._streak = 0
        self._needed = PROMOTE_AFTER
        self._slow_inline = 0
        self._busy_abandons = 0
        self.demotions = 0
        # Any function (pure or not) whose requests cost microseconds of CPU keeps the GIL across
        # its guest calls; one heavy request hands it back, so heavy guests run in parallel.
        self.cheap = False
        self._cheap_streak = 0
        self._unsampled = 0

    def sample(self) -> bool:
        """Whether this inline request is timed (one in INLINE_SAMPLE_EVERY)."""
        self._unsampled += 1
        if self._unsampled < INLINE_SAMPLE_EVERY:
            return False
        self._unsampled = 0
        return True

    def observe(self, cpu_ns: int) -> None:
        self._observe_cost(cpu_ns)
        if not self.eligible:
            return
        if self.inline:
            self._busy_abandons = 0
            self._slow_inline = self._slow_inline + 1 if cpu_ns > SLOW_INLINE_NS else 0
            if self._slow_inline >= SLOW_INLINE_LIMIT:
                self.demote()
            return
        if cpu_ns > self._fast_ns:
            self._streak //= 2  # one slow request (a GC pause, a cold cache) sets promotion back, not to zero
            return
        self._streak += 1
        if self._streak >= self._needed:
            self.inline = True

    def _observe_cost(self, cpu_ns: int) -> None:
        if cpu_ns > HEAVY_REQUEST_NS:
            self.cheap, self._cheap_streak = False, 0
        elif cpu_ns > CHEAP_REQUEST_NS:
            self._cheap_streak //= 2
        else:
            self._cheap_streak += 1
            if self._cheap_streak >= PROMOTE_AFTER:
                self.cheap = True

    def observe_overrun(self) -> None:
        """A request ran until its deadline: certainly not cheap."""
        self.cheap, self._cheap_streak = False, 0

    def abandoned(self, transient: bool) -> bool:
        """An inline run was abandoned and will be replayed in a thread; whether that demoted the
        function (always, unless the cause was `transient` contention that has not kept on)."""
        if transient:
            self._busy_abandons += 1
            if self._busy_abandons < BUSY_ABANDON_LIMIT:
                return False
        self.demote()
        return True

    def demote(self) -> None:
        self.inline = False
        self._streak = 0
        self._slow_inline = 0
        self._busy_abandons = 0
        self._needed = min(self._needed * 4, MAX_PROMOTE_AFTER)
        self.demotions += 1

"""Running one request on one instance: where (event loop or guest thread) and how.

Guest code runs in guest threads, so a slow function never stalls the listener. Handing a request
to a thread costs tens of microseconds on a small VM, more than a simple function takes, so a
function whose module only imports pure, non-blocking host calls, and which has proven fast
(`PROMOTE_AFTER` consecutive requests under `FAST_REQUEST_NS`), is run inline on the event loop
with a short epoch deadline. If an inline run overruns it, it is interrupted, the function goes
back to guest threads (with exponential back-off before it may be inlined again), and the request
is replayed in a thread on a fresh instance — safe because such a module can have no effect
outside its own (discarded) instance.

A thread-local call chain records the instances this thread holds, so a nested
`proxy_invoke_service` can tell a call cycle (which would wait forever) from a busy pool.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Iterable, Sequence

from abi import GuestTrap, HttpRequest, HttpResponse
from abi.chain import run_chain
from abi.vm import ProxyWasmVM

from .function import FunctionVersion

log = logging.getLogger(__name__)

INLINE_DEADLINE_S = 0.01  # epoch ticks of 10 ms: an inline overrun stalls the loop for 10-20 ms, once
FAST_REQUEST_NS = 200_000  # guest-thread CPU time (not wall time: waiting for the GIL does not count)
SLOW_INLINE_NS = 1_000_000  # inline requests this costly, several in a row, go back to guest threads
SLOW_INLINE_LIMIT = 3  # (one slow run may be a GC pause; a runaway one is cut by the deadline anyway)
CHEAP_REQUEST_NS = 1_000_000  # requests this light (CPU) keep the GIL across their guest calls...
HEAVY_REQUEST_NS = 2_000_000  # ...and one this heavy hands it back, so heavy guests run in parallel
PROMOTE_AFTER = 64
MAX_PROMOTE_AFTER = 1 << 20

# Host imports that neither block nor have effects outside the instance. (proxy_get_state may
# block on Redis; proxy_invoke_service runs another function; http/gRPC calls, shared data, queues,
# metrics and timers have effects a replay would repeat: modules importing any of those always run
# in guest threads.)
INLINE_SAFE_IMPORTS = frozenset({
    "env.proxy_log", "env.proxy_get_log_level", "env.proxy_get_current_time_nanoseconds",
    "env.proxy_get_buffer_bytes", "env.proxy_set_buffer_bytes", "env.proxy_get_buffer_status",
    "env.proxy_get_header_map_pairs", "env.proxy_set_header_map_pairs", "env.proxy_get_header_map_value",
    "env.proxy_add_header_map_value", "env.proxy_replace_header_map_value",
    "env.proxy_remove_header_map_value", "env.proxy_get_header_map_size", "env.proxy_get_property",
    "env.proxy_set_property", "env.proxy_send_local_response", "env.proxy_continue_stream",
    "env.proxy_close_stream", "env.proxy_done", "env.proxy_set_effective_context",
    "env.proxy_continue_request", "env.proxy_continue_response", "env.proxy_clear_route_cache",
    "env.proxy_get_configuration",
    *(f"{wasi}.{name}" for wasi in ("wasi_snapshot_preview1", "wasi_unstable") for name in (
        "fd_write", "fd_read", "fd_close", "fd_seek", "fd_fdstat_get", "fd_prestat_get", "fd_prestat_dir_name",
        "args_get", "args_sizes_get", "environ_get", "environ_sizes_get", "clock_res_get", "clock_time_get",
        "random_get", "proc_exit", "sched_yield")),
})


def inline_eligible(imports: Iterable[str]) -> bool:
    return all(name in INLINE_SAFE_IMPORTS for name in imports)


class ExecutionPolicy:
    """Per function version: run inline or in a guest thread, learned from observed guest times."""

    def __init__(self, eligible: bool):
        self.eligible = eligible
        self.inline = False
        self._streak = 0
        self._needed = PROMOTE_AFTER
        self._slow_inline = 0
        self.demotions = 0
        # Any function (pure or not) whose requests cost microseconds of CPU keeps the GIL across
        # its guest calls; one heavy request hands it back, so heavy guests run in parallel.
        self.cheap = False
        self._cheap_streak = 0

    def observe(self, cpu_ns: int) -> None:
        self._observe_cost(cpu_ns)
        if not self.eligible:
            return
        if self.inline:
            self._slow_inline = self._slow_inline + 1 if cpu_ns > SLOW_INLINE_NS else 0
            if self._slow_inline >= SLOW_INLINE_LIMIT:
                self.demote()
            return
        if cpu_ns > FAST_REQUEST_NS:
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

    def demote(self) -> None:
        self.inline = False
        self._streak = 0
        self._slow_inline = 0
        self._needed = min(self._needed * 4, MAX_PROMOTE_AFTER)
        self.demotions += 1


class InlineOverrun(Exception):
    """An inline run hit its short deadline; the request must be replayed in a guest thread."""


def run_queued(version: FunctionVersion, request: HttpRequest, vm: ProxyWasmVM) -> HttpResponse:
    """A pool job (InstancePool.submit): the pool releases the instance or runs its next job on it."""
    return run_request(version, vm, request, release=False)


def release_filters(version: FunctionVersion, filters: Sequence[ProxyWasmVM]) -> None:
    for pool, member in zip(version.filter_pools, filters):
        pool.release(member)


class _CallChain(threading.local):
    def __init__(self) -> None:
        self.held: list[int] = []


CHAIN = _CallChain()


def run_request(version: FunctionVersion, vm: ProxyWasmVM, request: HttpRequest,
                inline: bool = False, filters: Sequence[ProxyWasmVM] = (), release: bool = True) -> HttpResponse:
    """Run `request` through `filters` (one instance per filter pool) and `vm`, all already acquired;
    gives the instances back to their pools (`vm` only with `release`: a queued job's pool does).

    Raises GuestTrap when a guest trapped or ran past its deadline (that instance is then
    discarded and replaced by its pool), InlineOverrun when an inline run must be replayed.
    """
    chain = [*filters, vm]
    hold_gil = inline or version.policy.cheap
    for member in chain:
        member.guest.hold_gil = hold_gil
    held = CHAIN.held
    held.extend(id(member) for member in chain)
    # CPU time, inline too: on a busy or virtual machine, wall time also counts the moments the OS
    # gave the CPU to someone else, which says nothing about the function (and in a thread, CPU
    # time excludes waits for the GIL). A run that really stalls the loop is cut by its deadline.
    clock = time.thread_time_ns
    started = clock()
    try:
        response = run_chain(chain, request, INLINE_DEADLINE_S if inline else version.timeout_s)
    except GuestTrap as trap:
        if inline and trap.interrupted:
            version.policy.demote()
            log.info("function %s overran the inline budget; moved to guest threads, replaying the request",
                     version.function_id)
            raise InlineOverrun() from None
        version.stats.record(False)
        if trap.interrupted:
            version.policy.observe_overrun()
        kind = "exceeded its deadline" if trap.interrupted else "trapped"
        version.failure_log.warning("function %s %s: %s", version.function_id, kind, trap)
        raise
    except Exception:
        version.stats.record(False)
        log.exception("function %s: host error while running a request", version.function_id)
        raise
    finally:
        del held[len(held) - len(chain):]
        release_filters(version, filters)
        if release:
            version.pool.release(vm)
    version.policy.observe(clock() - started)
    version.stats.record(response.status < 500)
    return response

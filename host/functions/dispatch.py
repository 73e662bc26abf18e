"""The one call path. Every caller that runs something on a function comes through here: the HTTP
listener, `proxy_invoke_service`, event deliveries, the runtime APIs' InvokeService, timers and
queue deliveries. None of them touches a pool.

One rule for instances: whoever acquires an instance gives it back, in the same function. Requests
acquired here are released here (in a `finally`); requests queued with `InstancePool.submit` are
acquired by the pool for its job and released by the pool.

Where a request runs (host/functions/policy.py): an inline function with an idle instance runs at
once on the event loop (`try_now`, no task or coroutine); an inline run that overruns its short
deadline is replayed in a guest thread; everything else waits for an instance and runs in a guest
thread. A reload that retires the version a request was waiting for is followed to the new one.

A thread-local call chain records the instances this thread holds, so a nested call can tell a
cycle (which would wait forever) from a busy pool.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import CollectorRegistry

from abi import GuestTrap, HttpRequest, HttpResponse
from abi.chain import run_chain, run_one
from abi.vm import ProxyWasmVM
from host.functions.policy import INLINE_DEADLINE_S
from host.functions.pool import InstancePool, PoolClosed, PoolDown, PoolTimeout, PoolWouldDeadlock
from host.functions.router import Router
from host.functions.threads import GuestThreads
from host.functions.version import FunctionVersion
from host.logs import REQUEST_SCOPE, next_request_number  # issue 14: log lines name their request
from host.loop_budget import BUDGET, InlineBusy, LoopBudgetExceeded, open_budget  # issue 16: reads inline
from host.metrics import RequestMetrics  # issue 14: per-function request metrics
from host.tracing import spans as tracing  # issue 14: server spans, only while exporting

if TYPE_CHECKING:
    from host.functions.components import ComponentInstance

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRIES_ACROSS_RELOADS = 3


class DispatchError(Exception):
    """Why a call did not produce the function's answer. `status` is the HTTP status the HTTP entry
    points answer with; the other entry points map the subclass."""

    status = 500
    kind = "host"  # the metrics' error kind (wasm_faas_errors_total{kind})

    def __init__(self, message: str, function_id: str = "", retry_after: str | None = None):
        super().__init__(message)
        self.function_id = function_id
        self.retry_after = retry_after


class FunctionNotFound(DispatchError):
    status = 404
    kind = "not_found"


class FunctionUnavailable(DispatchError):
    """Busy (queue full, no instance in time), down (instances cannot start) or being replaced."""

    status = 503
    kind = "busy"


class CallCycle(DispatchError):
    """Every instance is held by the calling chain itself (A invoking A): waiting cannot help."""

    status = 508
    kind = "cycle"


class RequestTimedOut(DispatchError):
    status = 504
    kind = "timeout"


class GuestFailed(DispatchError):
    """The guest trapped (500), or ran past its deadline or fuel budget (504)."""

    def __init__(self, message: str, function_id: str, status: int, kind: str = "trap"):
        super().__init__(message, function_id)
        self.status = status
        self.kind = kind  # trap, deadline or fuel


class HostFailed(DispatchError):
    """A host bug while running the request (logged with its traceback)."""


class _InlineOverrun(Exception):
    """An inline run hit its short deadline or was abandoned; the request is replayed in a guest
    thread. `transient`: abandoned for a moment's contention (see ExecutionPolicy.abandoned)."""

    def __init__(self, transient: bool = False):
        super().__init__()
        self.transient = transient


class _CallChain(threading.local):
    def __init__(self) -> None:
        self.held: list[int] = []


CHAIN = _CallChain()


def _unavailable(version: FunctionVersion, error: Exception) -> FunctionUnavailable:
    retry_after = "5" if isinstance(error, PoolDown) else "1"
    unavailable = FunctionUnavailable(str(error), version.function_id, retry_after)
    if isinstance(error, PoolDown):
        unavailable.kind = "down"
    return unavailable


def _failed(version: FunctionVersion, trap: GuestTrap) -> GuestFailed:
    function_id = version.function_id
    if trap.out_of_fuel:
        return GuestFailed(f"function {function_id!r} used up its fuel budget", function_id, 504, "fuel")
    if trap.interrupted:
        return GuestFailed(f"function {function_id!r} exceeded its {version.timeout_s:g}s deadline", function_id, 504,
                           "deadline")
    return GuestFailed(f"function {function_id!r} trapped: {trap}", function_id, 500)


def _run(version: FunctionVersion, vm: ProxyWasmVM, filters: Sequence[ProxyWasmVM], request: HttpRequest,
         inline: bool) -> HttpResponse:
    """Run `request` through `filters` and `vm`, all acquired by the caller (who releases them).

    A trapped or interrupted instance is marked broken, so its release replaces it."""
    chain = [*filters, vm] if filters else None
    # A component function (host/functions/components: a ComponentInstance, not a module's VM) has
    # no filters and always releases the GIL.
    component: ComponentInstance | None = vm if type(vm) is not ProxyWasmVM else None  # type: ignore[assignment]
    policy = version.policy
    if component is None:
        hold_gil = inline or policy.cheap
        if chain is None:
            vm.guest.hold_gil = hold_gil
        else:
            for member in chain:
                member.guest.hold_gil = hold_gil
    held = CHAIN.held
    if chain is None:
        held.append(id(vm))
    else:
        held.extend(id(member) for member in chain)
    # CPU time, inline too: on a busy or virtual machine, wall time also counts the moments the OS
    # gave the CPU to someone else, which says nothing about the function (and in a thread, CPU
    # time excludes waits for the GIL). A run that really stalls the loop is cut by its deadline.
    # An inline function is timed on a sample of its requests only: reading a thread's CPU clock
    # is a system call, and a run that stalls the loop is cut by its deadline anyway.
    timed = not inline or policy.sample()
    clock = policy.inline_clock if inline else time.thread_time_ns
    started = clock() if timed else 0
    scope = REQUEST_SCOPE.set((version.function_id, request, next_request_number()))
    # The budget of blocking reads on the loop (host/loop_budget.py); a pure function makes none.
    budgeted = inline and policy.blocking
    if budgeted:
        outer_deadline = open_budget(INLINE_DEADLINE_S)
    try:
        if component is not None:
            response = component.handle(request, version.timeout_s)
        elif chain is None:
            response = run_one(vm, request, INLINE_DEADLINE_S if inline else version.timeout_s)
        else:
            response = run_chain(chain, request, INLINE_DEADLINE_S if inline else version.timeout_s)
    except GuestTrap as trap:
        if inline and trap.interrupted:
            version.policy.demote()
            log.info("function %s overran the inline budget; moved to guest threads, replaying the request",
                     version.function_id)
            raise _InlineOverrun() from None
        version.stats.record(False)
        if trap.interrupted:
            version.policy.observe_overrun()
        kind = "exceeded its deadline" if trap.interrupted else "trapped"
        version.failure_log.warning("function %s %s: %s", version.function_id, kind, trap)
        raise _failed(version, trap) from None
    except (_InlineOverrun, LoopBudgetExceeded) as error:
        if not inline:  # cannot happen: only an inline run sets a budget
            raise
        # A read waited past the inline budget, or a function it invoked cannot run inline or is
        # busy: nothing the run did reached outside its instances, so it is replayed in a guest
        # thread. A moment's contention demotes the function only when it keeps happening.
        transient = isinstance(error, InlineBusy) or (isinstance(error, _InlineOverrun) and error.transient)
        if version.policy.abandoned(transient):
            log.info("function %s: %s; moved to guest threads, replaying the request", version.function_id,
                     error if isinstance(error, LoopBudgetExceeded) else "a function it called left the event loop")
        raise _InlineOverrun(transient) from None
    except Exception as error:
        version.stats.record(False)
        log.exception("function %s: host error while running a request", version.function_id)
        raise HostFailed(f"function {version.function_id!r} failed in the host: {error}",
                         version.function_id) from None
    finally:
        if chain is None:
            held.pop()
        else:
            del held[len(held) - len(chain):]
        REQUEST_SCOPE.reset(scope)
        if budgeted:
            BUDGET.deadline = outer_deadline
    if timed:
        policy.observe(clock() - started)
    version.stats.record(response.status < 500)
    return response


def _release(version: FunctionVersion, vm: ProxyWasmVM, filters: Sequence[ProxyWasmVM]) -> None:
    for pool, member in zip(version.filter_pools, filters, strict=False):
        pool.release(member)
    version.pool.release(vm)


class Dispatcher:
    def __init__(self, router: Router, threads: GuestThreads, *, acquire_timeout_s: float,
                 request_timeout_s: float, invoke_timeout_s: float, max_invoke_depth: int,
                 metrics: RequestMetrics | None = None):
        self.metrics = metrics if metrics is not None else RequestMetrics(CollectorRegistry())
        self.router = router
        self.threads = threads
        self.acquire_timeout_s = acquire_timeout_s
        self.request_timeout_s = request_timeout_s
        self.invoke_timeout_s = invoke_timeout_s
        self.max_invoke_depth = max_invoke_depth

    def find(self, function_id: str) -> FunctionVersion:
        version = self.router.pick(function_id)
        if version is None:
            self.metrics.unknown.inc()
            raise FunctionNotFound(f"unknown function id {function_id!r}", function_id)
        return version

    def _current(self, version: FunctionVersion) -> FunctionVersion:
        """After PoolClosed: the version a reload put in place, or FunctionNotFound when it is gone."""
        current = self.router.pick(version.function_id)
        if current is None:
            raise FunctionNotFound(f"function {version.function_id!r} was removed", version.function_id)
        return current

    # -- from the event loop -------------------------------------------------------------------
    def try_now(self, version: FunctionVersion, request: HttpRequest) -> HttpResponse | None:
        """The answer at once when the function runs inline and an instance is idle; None when the
        caller must `await call(...)` instead. Raises DispatchError."""
        if not version.policy.inline or version.filter_pools:
            return None
        vm = version.pool.try_acquire()
        if vm is None:
            return None
        recorder = tracing.ACTIVE
        if recorder is not None:
            recorder.begin(version.function_id, request)
        started = perf_counter()
        try:
            response = _run(version, vm, (), request, inline=True)
        except _InlineOverrun:
            return None  # demoted: `call` replays it in a guest thread
        except DispatchError as error:
            self.metrics.of(version.function_id).refused(error, perf_counter() - started)
            if recorder is not None:
                recorder.end(request, error.status, str(error))
            raise
        finally:
            version.pool.release(vm)
        self.metrics.of(version.function_id).answered(response.status, perf_counter() - started)
        if recorder is not None:
            recorder.end(request, response.status)
        return response

    async def call(self, version: FunctionVersion, request: HttpRequest) -> HttpResponse:
        """Run `request` on the function, waiting for an instance; bounded by the request timeout."""
        recorder = tracing.ACTIVE
        if recorder is not None:
            recorder.begin(version.function_id, request)
        started = perf_counter()
        try:
            response = await self._call(version, request)
        except DispatchError as error:
            self.metrics.of(version.function_id).refused(error, perf_counter() - started)
            if recorder is not None:
                recorder.end(request, error.status, str(error))
            raise
        self.metrics.of(version.function_id).answered(response.status, perf_counter() - started)
        if recorder is not None:
            recorder.end(request, response.status)
        return response

    async def _call(self, version: FunctionVersion, request: HttpRequest) -> HttpResponse:
        try:
            async with asyncio.timeout(self.request_timeout_s):
                for _ in range(RETRIES_ACROSS_RELOADS):
                    try:
                        return await self._call_version(version, request)
                    except PoolClosed:
                        version = self._current(version)
        except TimeoutError:
            # The guest, if it is running, is still bounded by its own deadline; the caller is not kept.
            raise RequestTimedOut(f"request to {version.function_id!r} took longer than "
                                  f"{self.request_timeout_s:g}s", version.function_id) from None
        raise FunctionUnavailable("function is being replaced, retry", version.function_id, "1")

    async def _call_version(self, version: FunctionVersion, request: HttpRequest) -> HttpResponse:
        if not version.filter_pools and not version.policy.inline:
            try:  # the guest-thread path: a freed instance runs the request in place
                response: HttpResponse = await version.pool.submit(
                    lambda vm: _run(version, vm, (), request, inline=False), self.acquire_timeout_s)
                return response
            except (PoolTimeout, PoolDown) as error:
                raise _unavailable(version, error) from None
        vm, filters = await self._acquire(version)
        if not version.policy.inline:
            return await self._in_thread(version, vm, filters, _run, version, vm, filters, request, False)
        try:
            return _run(version, vm, filters, request, inline=True)
        except _InlineOverrun:
            pass  # demoted: replayed below in a guest thread, on a fresh instance
        finally:
            _release(version, vm, filters)
        return await self._call_version(version, request)

    async def _in_thread(self, version: FunctionVersion, vm: ProxyWasmVM, filters: Sequence[ProxyWasmVM],
                         work: Callable[..., T], *args: object) -> T:
        """`work(*args)` in a guest thread on instances acquired here. They go back when the guest is
        done — also when the caller stops waiting (a request timeout, a client gone): an instance
        a guest still runs on must never be handed to another request."""
        job = self.threads.start(work, *args)
        try:
            result: T = await asyncio.shield(job)
            return result
        finally:
            if job.done():
                _release(version, vm, filters)
            else:
                job.add_done_callback(lambda done: _release_when_done(done, version, vm, filters))

    async def _acquire(self, version: FunctionVersion) -> tuple[ProxyWasmVM, list[ProxyWasmVM]]:
        """An instance of the function and one of each of its filters; all or none."""
        try:
            vm = await version.pool.acquire(self.acquire_timeout_s)
        except (PoolTimeout, PoolDown) as error:
            raise _unavailable(version, error) from None
        filters: list[ProxyWasmVM] = []
        try:
            for pool in version.filter_pools:
                filters.append(await pool.acquire(self.acquire_timeout_s))
        except BaseException as error:
            for pool, member in zip(version.filter_pools, filters, strict=False):
                pool.release(member)
            version.pool.release(vm)
            if isinstance(error, (PoolTimeout, PoolClosed, PoolDown)):
                raise FunctionUnavailable(f"filter unavailable: {error}", version.function_id, "1") from None
            raise
        return vm, filters

    async def run_root(self, version: FunctionVersion, work: Callable[[ProxyWasmVM], None],
                       pool: InstancePool | None = None) -> None:
        """Root-context work outside requests (a tick, a queue delivery) on an idle instance of
        `pool` (the function's, or one of its filters'), in a guest thread. Dropped, with a warning,
        when no instance comes in time."""
        pool = version.pool if pool is None else pool
        try:
            vm = await pool.acquire(self.acquire_timeout_s)
        except (PoolTimeout, PoolClosed, PoolDown) as error:
            log.warning("function %s: background callback dropped: %s", version.function_id, error)
            return
        job = self.threads.start(_run_root, version, vm, work)
        try:
            await asyncio.shield(job)
        finally:  # the instance goes back when the guest is done, also if this task is cancelled
            if job.done():
                pool.release(vm)
            else:
                job.add_done_callback(lambda done: _release_root_when_done(done, pool, vm))

    # -- from guest threads ----------------------------------------------------------------------
    def call_blocking(self, function_id: str, request: HttpRequest) -> HttpResponse:
        """Run `request` on a function from a guest thread (a nested call): waits up to the invoke
        timeout, fails at once on a call cycle, and bounds the depth of nested calls."""
        recorder = tracing.ACTIVE
        if recorder is not None:
            recorder.begin(function_id, request)
        started = perf_counter()
        try:
            response = self._call_blocking(function_id, request)
        except DispatchError as error:
            if self.router.pick(function_id) is not None:  # a guest-chosen id must not create series
                self.metrics.of(function_id).refused(error, perf_counter() - started)
            if recorder is not None:
                recorder.end(request, error.status, str(error))
            raise
        self.metrics.of(function_id).answered(response.status, perf_counter() - started)
        if recorder is not None:
            recorder.end(request, response.status)
        return response

    def _call_blocking(self, function_id: str, request: HttpRequest) -> HttpResponse:
        held = CHAIN.held
        if len(held) >= self.max_invoke_depth:
            raise CallCycle(f"invoke depth limit {self.max_invoke_depth} reached calling {function_id!r}",
                            function_id)
        version = self.find(function_id)
        if BUDGET.deadline:
            return self._call_inline(version, request)
        try:
            vm = version.pool.acquire_blocking(self.invoke_timeout_s, held=held)
            filters: list[ProxyWasmVM] = []
            try:
                for pool in version.filter_pools:
                    filters.append(pool.acquire_blocking(self.invoke_timeout_s, held=held))
            except BaseException:
                for pool, member in zip(version.filter_pools, filters, strict=False):
                    pool.release(member)
                version.pool.release(vm)
                raise
        except PoolWouldDeadlock as error:
            raise CallCycle(str(error), function_id) from None
        except (PoolTimeout, PoolClosed, PoolDown) as error:
            raise _unavailable(version, error) from None
        try:
            return _run(version, vm, filters, request, inline=False)
        finally:
            _release(version, vm, filters)

    def _call_inline(self, version: FunctionVersion, request: HttpRequest) -> HttpResponse:
        """A nested call made by an inline run, on the event loop: only to a function that may run
        inline (promoted or not: it runs within the caller's budget) and has an idle instance;
        anything else would wait, so the caller's run is abandoned (LoopBudgetExceeded) and
        replayed in a guest thread, where this call waits."""
        if not version.policy.eligible or version.filter_pools:
            raise LoopBudgetExceeded(f"function {version.function_id!r} does not run on the event loop")
        vm = version.pool.try_acquire()
        if vm is None:
            raise InlineBusy(f"function {version.function_id!r} has no idle instance")
        try:
            return _run(version, vm, (), request, inline=True)
        finally:
            version.pool.release(vm)


def _release_when_done(job: asyncio.Future[object], version: FunctionVersion, vm: ProxyWasmVM,
                       filters: Sequence[ProxyWasmVM]) -> None:
    if not job.cancelled():
        job.exception()  # retrieved: the caller that would have seen it is gone
    _release(version, vm, filters)


def _release_root_when_done(job: asyncio.Future[object], pool: InstancePool, vm: ProxyWasmVM) -> None:
    if not job.cancelled():
        job.exception()  # retrieved: the task that would have seen it is gone
    pool.release(vm)


def _run_root(version: FunctionVersion, vm: ProxyWasmVM, work: Callable[[ProxyWasmVM], None]) -> None:
    try:
        work(vm)
    except GuestTrap as trap:
        log.warning("function %s: root-context callback trapped: %s", version.function_id, trap)

"""A pool of started instances of one function: one request per instance at a time.

Three kinds of waiter share one FIFO: requests acquiring on the event loop (`acquire`, a loop
future), nested calls acquiring from guest threads (`acquire_blocking`, a concurrent future), and
requests queued to run in a guest thread (`submit`, a `_Job`: whichever thread frees an instance
runs the next job on it in place). An instance released on the loop thread goes straight to the
next loop waiter.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Collection
from typing import Protocol

from abi.vm import ProxyWasmVM

log = logging.getLogger(__name__)


class PoolTimeout(Exception):
    """No instance became free in time."""


class PoolWouldDeadlock(Exception):
    """Every instance is held by the calling chain itself (A invoking A, A->B->A): waiting cannot help."""


class PoolClosed(Exception):
    """The pool was retired while waiting."""


class PoolQueueFull(PoolTimeout):
    """Too many requests are already waiting for this function (back-pressure)."""


class PoolDown(Exception):
    """No instance can be started (start-up keeps failing); the reason says why."""


class BackgroundRunner(Protocol):
    def submit(self, fn: Callable[..., object], *args: object) -> None: ...


_LoopWaiter = tuple[asyncio.AbstractEventLoop, asyncio.Future]


class _Job:
    """A request queued for an instance. Whichever guest thread frees an instance runs the next job
    itself, without handing the instance back to the event loop in between (two thread wake-ups
    per queued request fewer)."""

    __slots__ = ("loop", "future", "work", "started", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, work: Callable[[ProxyWasmVM], object]):
        self.loop = loop
        self.future: asyncio.Future = loop.create_future()
        self.work = work
        self.started = False
        self.timer: asyncio.TimerHandle | None = None


_Waiter = _LoopWaiter | concurrent.futures.Future | _Job


class InstancePool:
    def __init__(self, name: str, factory: Callable[[], ProxyWasmVM], size: int, background: BackgroundRunner,
                 max_queue: int = 256):
        self.name = name
        self.size = size
        self.max_queue = max_queue
        self.down_reason: str | None = None  # set when replacements cannot be started
        self._factory = factory
        self._background = background
        self._lock = threading.Lock()
        self._idle: collections.deque[ProxyWasmVM] = collections.deque()
        self._busy: set[int] = set()
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._instances = 0
        self._starting = 0
        self.closed = False
        self.replaced = 0

    # -- filling ------------------------------------------------------------------------------
    def add(self, vm: ProxyWasmVM) -> None:
        with self._lock:
            self._instances += 1
            self._busy.add(id(vm))
        self.release(vm)

    def fill(self) -> None:
        """Create instances (in this thread) until the pool has `size` of them."""
        while True:
            with self._lock:
                if self.closed or self._instances + self._starting >= self.size:
                    return
                self._starting += 1
            try:
                vm = self._factory()
            finally:
                with self._lock:
                    self._starting -= 1
            self.add(vm)

    # -- acquiring ----------------------------------------------------------------------------
    def try_acquire(self) -> ProxyWasmVM | None:
        """An idle instance, or None (also for a retired pool: callers then wait and learn why)."""
        with self._lock:
            return None if self.closed else self._take_idle()

    async def acquire(self, timeout: float) -> ProxyWasmVM:
        loop = asyncio.get_running_loop()
        with self._lock:
            vm = self._take_idle()
            if vm is not None:
                return vm
            self._check_can_wait()
            waiter: _LoopWaiter = (loop, loop.create_future())
            self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(waiter[1], timeout)
        except TimeoutError:
            self._forget(waiter)
            raise PoolTimeout(f"no free instance of {self.name} within {timeout:.1f}s") from None
        except BaseException:  # the client went away
            self._forget(waiter)
            raise

    def acquire_blocking(self, timeout: float, held: Collection[int] = ()) -> ProxyWasmVM:
        """Wait in a guest thread; fail at once when only our own call chain holds the instances."""
        with self._lock:
            vm = self._take_idle()
            if vm is not None:
                return vm
            if self._instances and not self._starting and self._busy <= set(held):
                raise PoolWouldDeadlock(f"every instance of {self.name} is held by the calling chain (a call cycle)")
            self._check_can_wait()
            waiter: concurrent.futures.Future = concurrent.futures.Future()
            self._waiters.append(waiter)
        try:
            return waiter.result(timeout)
        except concurrent.futures.TimeoutError:
            with self._lock:
                if waiter.cancel():
                    self._discard_waiter(waiter)
                    raise PoolTimeout(f"no free instance of {self.name} within {timeout:.1f}s") from None
            return waiter.result()  # handed over just as we gave up: use it

    def _take_idle(self) -> ProxyWasmVM | None:
        """Lock held: an idle instance, now busy, or None; raises PoolClosed for a retired pool."""
        if self.closed:
            raise PoolClosed(self.name)
        if not self._idle:
            return None
        vm = self._idle.popleft()
        self._busy.add(id(vm))
        return vm

    def submit(self, work: Callable[[ProxyWasmVM], object], queue_timeout: float) -> asyncio.Future:
        """Run `work(instance)` in a guest thread as soon as an instance is free; the future has its
        result. `work` must not release the instance: the pool does (or runs the next job on it)."""
        job = _Job(asyncio.get_running_loop(), work)
        with self._lock:
            vm = self._take_idle()
            if vm is None:
                self._check_can_wait()
                self._waiters.append(job)
                job.timer = job.loop.call_later(queue_timeout, self._expire, job, queue_timeout)
                return job.future
            job.started = True
        self._background.submit(self._run_jobs, vm, job)
        return job.future

    def _expire(self, job: _Job, queue_timeout: float) -> None:
        with self._lock:
            if job.started:
                return
            self._discard_waiter(job)
        if not job.future.done():
            job.future.set_exception(PoolTimeout(f"no free instance of {self.name} within {queue_timeout:.1f}s"))

    def _run_jobs(self, vm: ProxyWasmVM, job: _Job | None) -> None:
        """In a guest thread: run the job, then the next queued ones on the same instance."""
        while job is not None:
            try:
                result = job.work(vm)
            except BaseException as error:  # noqa: BLE001 - delivered to the waiting request
                job.loop.call_soon_threadsafe(_settle, job, None, error)
            else:
                job.loop.call_soon_threadsafe(_settle, job, result, None)
            job = self._next_job(vm)

    def _next_job(self, vm: ProxyWasmVM) -> _Job | None:
        if not vm.broken:
            with self._lock:
                if not self.closed and self._instances <= self.size:
                    while self._waiters and isinstance(job := self._waiters[0], _Job):
                        self._waiters.popleft()
                        if not job.future.done():  # not timed out, client still there
                            job.started = True
                            return job
        self.release(vm)
        return None

    def _check_can_wait(self) -> None:
        """Lock held, nothing idle: refuse at once rather than queue without bound or for nothing."""
        if self._instances == 0 and not self._starting and self.down_reason:
            raise PoolDown(f"{self.name} has no running instance: {self.down_reason}")
        if len(self._waiters) >= self.max_queue:
            raise PoolQueueFull(f"{self.name} is overloaded: {len(self._waiters)} requests already waiting")

    def _forget(self, waiter: _LoopWaiter) -> None:
        with self._lock:
            self._discard_waiter(waiter)

    def _discard_waiter(self, waiter: _Waiter) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass

    # -- returning ----------------------------------------------------------------------------
    def release(self, vm: ProxyWasmVM) -> None:
        if vm.broken:
            self.discard(vm)
            return
        with self._lock:
            if self.closed or self._instances > self.size:
                self._busy.discard(id(vm))
                self._instances -= 1
                retire = True
            else:
                retire = False
                if self._hand_over(vm):
                    return
                self._busy.discard(id(vm))
                self._idle.append(vm)
        if retire:
            self._background.submit(vm.close)

    def _hand_over(self, vm: ProxyWasmVM) -> bool:
        """Give `vm` to the first live waiter (lock held); it stays counted as busy."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if isinstance(waiter, _Job):
                if waiter.future.done():
                    continue
                waiter.started = True
                self._background.submit(self._run_jobs, vm, waiter)
                return True
            if isinstance(waiter, concurrent.futures.Future):
                if waiter.set_running_or_notify_cancel():
                    waiter.set_result(vm)
                    return True
                continue
            loop, future = waiter
            if future.done():
                continue  # timed out or cancelled
            if asyncio._get_running_loop() is loop:
                future.set_result(vm)
            else:
                loop.call_soon_threadsafe(self._deliver, future, vm)
            return True
        return False

    def _deliver(self, future: asyncio.Future, vm: ProxyWasmVM) -> None:
        if future.done():  # gave up in the meantime: pass the instance on
            self.release(vm)
        else:
            future.set_result(vm)

    def discard(self, vm: ProxyWasmVM) -> None:
        """Drop a broken instance and start a replacement in the background."""
        with self._lock:
            self._busy.discard(id(vm))
            self._instances -= 1
            closed = self.closed
            if not closed:
                self.replaced += 1
        if not closed:
            self._background.submit(self._replace)

    def _replace(self) -> None:
        try:
            self.fill()
        except Exception as error:  # noqa: BLE001 - logged; the pool keeps serving with fewer instances
            # Not retried: start-up is deterministic, a retry loop would only burn CPU. A new
            # version (file change, admin install) starts a fresh pool.
            self.down_reason = f"cannot start a replacement instance: {error}"
            log.error("function %s: %s", self.name, self.down_reason)
            self._fail_waiters_if_empty()
            return
        self.down_reason = None

    def _fail_waiters_if_empty(self) -> None:
        with self._lock:
            if self._instances or self._starting:
                return
            waiters, self._waiters = list(self._waiters), collections.deque()
        for waiter in waiters:
            _fail_waiter(waiter, PoolDown(f"{self.name} has no running instance: {self.down_reason}"))

    # -- resizing and retiring ------------------------------------------------------------------
    def resize(self, size: int) -> None:
        with self._lock:
            self.size = size
            surplus = []
            while self._instances > size and self._idle:
                surplus.append(self._idle.pop())
                self._instances -= 1
        for vm in surplus:
            self._background.submit(vm.close)
        self._background.submit(self._replace)

    def close(self) -> None:
        """Retire idle instances now and busy ones when they are released; fail waiters."""
        with self._lock:
            self.closed = True
            idle, self._idle = list(self._idle), collections.deque()
            self._instances -= len(idle)
            waiters, self._waiters = list(self._waiters), collections.deque()
        for waiter in waiters:
            _fail_waiter(waiter, PoolClosed(self.name))
        for vm in idle:
            vm.close()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"size": self.size, "instances": self._instances, "busy": len(self._busy),
                    "idle": len(self._idle), "waiting": len(self._waiters), "replaced": self.replaced,
                    "max_queue": self.max_queue}


def _fail_with(future: asyncio.Future, error: Exception) -> None:
    if not future.done():
        future.set_exception(error)


def _fail_waiter(waiter: _Waiter, error: Exception) -> None:
    if isinstance(waiter, concurrent.futures.Future):
        if waiter.set_running_or_notify_cancel():
            waiter.set_exception(error)
    elif isinstance(waiter, _Job):
        waiter.loop.call_soon_threadsafe(_fail_with, waiter.future, error)
    else:
        loop, future = waiter
        loop.call_soon_threadsafe(_fail_with, future, error)


def _settle(job: _Job, result: object, error: BaseException | None) -> None:
    """On the loop: the job ran; drop its queue timer and hand over the outcome."""
    if job.timer is not None:
        job.timer.cancel()
    if job.future.done():
        return
    if error is not None:
        job.future.set_exception(error)
    else:
        job.future.set_result(result)

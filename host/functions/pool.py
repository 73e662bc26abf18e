"""A pool of started instances of one function: one request per instance at a time.

Three kinds of waiter share one FIFO: requests acquiring on the event loop (`acquire`, a loop
future), nested calls acquiring from guest threads (`acquire_blocking`, a concurrent future), and
requests queued to run in a guest thread (`submit`, a `_Job`: whichever thread frees an instance
runs the next job on it in place). An instance released on the loop thread goes straight to the
next loop waiter.

The pool is elastic between `min_size` and `size` (its maximum): a waiter that finds every instance
busy starts one more in a guest thread while the pool is below its maximum (a pool at zero starts
its first this way: scale from zero), and an instance idle for `idle_timeout_s` beyond the minimum
is retired by one reaper thread for the whole process. Idle instances are reused last-released
first, so under a light load the same few stay warm and the rest age out. A pool whose minimum is
its maximum is the fixed pool of Layotto's `instance_num`.

A start the memory-map budget refuses (abi/engine/_maps.py: vm.max_map_count) is nothing wrong with
the function: its waiters keep waiting, within their own timeouts, and the start is retried once the
budget's reclaim has had a chance to free mappings (`ROOM_WAITS`); a waiter whose timeout passes
first is refused with the budget's message.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import gc
import heapq
import itertools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Collection
from typing import Protocol

from abi.engine import ResourceLimitError, _maps
from abi.vm import ProxyWasmVM

log = logging.getLogger(__name__)

DOWN_RETRY_S = 5.0  # after an instance failed to start, requests are refused at once for this long


# Pools (of any host in this process) whose instances cannot start: the deployments retry them, and
# need not look through 10,000 healthy pools ten times a second to learn that none is down (issue 16).
_DOWN: weakref.WeakSet[InstancePool] = weakref.WeakSet()
_DOWN_LOCK = threading.Lock()


def any_pool_down() -> bool:
    """Whether some pool in this process has a down reason (a hint: which ones, the caller looks)."""
    return bool(_DOWN)


def _mark_down(pool: InstancePool, down: bool) -> None:
    with _DOWN_LOCK:
        if down:
            _DOWN.add(pool)
        else:
            _DOWN.discard(pool)


class PoolTimeout(Exception):
    """No instance became free in time."""


class PoolWouldDeadlock(Exception):
    """Every instance is held by the calling chain itself (A invoking A, A->B->A): waiting cannot help."""


class PoolClosed(Exception):
    """The pool was retired while waiting."""


class PoolQueueFull(PoolTimeout):
    """Too many requests are already waiting for this function (back-pressure)."""


class PoolDown(Exception):
    """No instance can be started (start-up keeps failing, or a process limit is reached); the reason says why."""


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
                 max_queue: int = 256, *, min_size: int | None = None, idle_timeout_s: float = 60.0):
        """`size` is the most instances the pool grows to; `min_size` (default: `size`, a fixed pool)
        the fewest it keeps, idle or not."""
        self.name = name
        self.size = size
        self.min_size = size if min_size is None else max(0, min(min_size, size))
        self.idle_timeout_s = idle_timeout_s
        self.max_queue = max_queue
        self.down_reason: str | None = None  # set when instances cannot be started
        self._down_at = 0.0
        # The memory-map budget's refusal of the last start, while no start has succeeded since: what a
        # waiter whose timeout passes is told (the pool is not down: the start is retried, ROOM_WAITS).
        self._map_refusal: str | None = None
        self._factory = factory
        self._background = background
        self._lock = threading.Lock()
        self._idle: collections.deque[tuple[ProxyWasmVM, float]] = collections.deque()  # (instance, idle since)
        self._busy: set[int] = set()
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._instances = 0
        self._starting = 0
        self._reap_at: float | None = None
        self.closed = False
        self.replaced = 0
        self.started_on_demand = 0  # instances started because a request found all busy (or none)
        self.retired_idle = 0  # instances retired after idle_timeout_s

    # -- filling ------------------------------------------------------------------------------
    def add(self, vm: ProxyWasmVM) -> None:
        with self._lock:
            self._instances += 1
            self._busy.add(id(vm))
        self.release(vm)

    def fill(self) -> None:
        """Create instances (in this thread) until the pool has `min_size` of them."""
        while True:
            with self._lock:
                if self.closed or self._instances + self._starting >= self.min_size:
                    return
                self._starting += 1
            try:
                vm = self._factory()
            finally:
                with self._lock:
                    self._starting -= 1
            self.add(vm)

    def _plan_starts(self) -> int:
        """Lock held: how many instances to start now, counted as starting: up to the minimum, and
        one for each waiter no starting instance will serve, while below the maximum."""
        if self.closed or (self.down_reason is not None and time.monotonic() - self._down_at < DOWN_RETRY_S):
            return 0
        have = self._instances + self._starting
        wanted = max(self.min_size - have, min(len(self._waiters) - self._starting, self.size - have))
        if wanted <= 0:
            return 0
        self._starting += wanted
        return wanted

    def _start(self, count: int) -> None:
        """Start `count` planned instances, each in a guest thread."""
        for _ in range(count):
            try:
                self._background.submit(self._grow)
            except RuntimeError as error:  # no thread can be started (thread or memory-map limit)
                self._start_failed(f"cannot start a thread for a new instance: {error}", transient=True)

    def _grow(self) -> None:
        """In a guest thread: start one planned instance and hand it to the first waiter."""
        try:
            vm = self._factory()
        except ResourceLimitError as error:  # nothing wrong with the function: retried when room may be back
            self._start_failed(f"cannot start an instance: {error}", transient=True,
                               wait_for_room=error.limit == "vm.max_map_count")
            return
        except Exception as error:  # noqa: BLE001 - reported to the waiters and in the listings
            self._start_failed(f"cannot start an instance: {error}", transient=False)
            return
        with self._lock:
            self._starting -= 1
            self._instances += 1
            self._busy.add(id(vm))
            was_down = self.down_reason is not None
            if not self.closed:
                self.started_on_demand += 1
                self.down_reason = None
            refused, self._map_refusal = self._map_refusal, None
        if was_down:
            _mark_down(self, False)
        if refused is not None or ROOM_WAITS.waiting:
            ROOM_WAITS.started(self)  # there may be room for the next pool waiting
        self._put_back(vm, here=True)

    def _start_failed(self, reason: str, *, transient: bool, wait_for_room: bool = False) -> None:
        """A planned start failed. `wait_for_room`: the memory-map budget refused it; while requests
        wait, the pool queues for a retry (ROOM_WAITS) instead of failing them."""
        with self._lock:
            self._starting -= 1
            waiting = wait_for_room and bool(self._waiters) and not self.closed
            if wait_for_room:
                self._map_refusal = reason
            if not transient:
                if self.down_reason is None:
                    log.error("function %s: %s", self.name, reason)
                # Not retried until DOWN_RETRY_S has passed: start-up is deterministic, a retry loop
                # would only burn CPU. A new version (file change, admin install) starts a fresh pool.
                self.down_reason, self._down_at = reason, time.monotonic()
                _mark_down(self, True)
        if waiting and ROOM_WAITS.add(self):
            return  # retried after the next reclaim; each waiter's own timeout bounds its wait
        with self._lock:
            if self._instances or self._starting:
                return  # the waiters get an instance when one is released
            waiters, self._waiters = list(self._waiters), collections.deque()
        for waiter in waiters:
            _fail_waiter(waiter, PoolDown(f"{self.name} has no running instance: {reason}"))

    def _retry_start(self) -> str:
        """For ROOM_WAITS: start what the waiters still need. "started" (a start was planned now),
        "starting" (one is under way already) or "done" (nothing needed: no waiter left, closed, down)."""
        with self._lock:
            starts = self._plan_starts()
            outcome = "started" if starts else "starting" if self._starting and self._waiters else "done"
        self._start(starts)
        return outcome

    def _timed_out(self, timeout: float) -> Exception:
        """What a waiter whose timeout passed is told: the budget's refusal if that is why no instance
        came (the same 503 as a refusal at once, after the wait), else that none was free in time."""
        with self._lock:
            refused = self._map_refusal if not self._instances else None
        if refused is not None:
            return PoolDown(f"{self.name} has no running instance: {refused} "
                            f"(no room came within {timeout:.1f}s)")
        return PoolTimeout(f"no free instance of {self.name} within {timeout:.1f}s")

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
            starts = self._plan_starts()
        self._start(starts)
        try:
            return await asyncio.wait_for(waiter[1], timeout)
        except TimeoutError:
            self._forget(waiter)
            raise self._timed_out(timeout) from None
        except BaseException:  # the client went away
            self._forget(waiter)
            raise

    def acquire_blocking(self, timeout: float, held: Collection[int] = ()) -> ProxyWasmVM:
        """Wait in a guest thread; fail at once when only our own call chain holds the instances
        and the pool cannot grow."""
        with self._lock:
            vm = self._take_idle()
            if vm is not None:
                return vm
            if (self._instances >= self.size and not self._starting and self._busy <= set(held)):
                raise PoolWouldDeadlock(f"every instance of {self.name} is held by the calling chain (a call cycle)")
            self._check_can_wait()
            waiter: concurrent.futures.Future = concurrent.futures.Future()
            self._waiters.append(waiter)
            starts = self._plan_starts()
        self._start(starts)
        try:
            return waiter.result(timeout)
        except concurrent.futures.TimeoutError:
            with self._lock:
                if waiter.cancel():
                    self._discard_waiter(waiter)
                else:
                    return waiter.result()  # handed over just as we gave up: use it
            raise self._timed_out(timeout) from None

    def _take_idle(self) -> ProxyWasmVM | None:
        """Lock held: the most recently released idle instance, now busy, or None; raises PoolClosed
        for a retired pool."""
        if self.closed:
            raise PoolClosed(self.name)
        if not self._idle:
            return None
        vm, _ = self._idle.pop()
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
                starts = self._plan_starts()
            else:
                job.started = True
        if vm is None:
            self._start(starts)
            return job.future
        self._in_background(self._run_jobs, vm, job)
        return job.future

    def _in_background(self, fn: Callable[..., object], *args: object) -> None:
        """`fn(*args)` in a guest thread, through a box emptied when it runs: an idle guest thread
        keeps its last job's arguments, which must not keep a retired instance (its memory, its
        memory mappings) alive."""
        self._background.submit(_run_boxed, [(fn, args)])

    def _expire(self, job: _Job, queue_timeout: float) -> None:
        with self._lock:
            if job.started:
                return
            self._discard_waiter(job)
        if not job.future.done():
            job.future.set_exception(self._timed_out(queue_timeout))

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
        if (self._instances == 0 and not self._starting and self.down_reason
                and time.monotonic() - self._down_at < DOWN_RETRY_S):
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
        self._put_back(vm, here=False)

    def _put_back(self, vm: ProxyWasmVM, *, here: bool) -> None:
        """A busy, healthy instance is free: to the first waiter, else idle (or retired). `here`:
        the caller is a guest thread, which runs a queued job itself."""
        job: _Job | None = None
        retire = False
        with self._lock:
            if self.closed or self._instances > self.size:
                retire = True
            else:
                handed = self._hand_over(vm, here)
                if isinstance(handed, _Job):
                    job = handed
                elif handed:
                    return
                elif self._instances > self.min_size and self.idle_timeout_s <= 0:
                    retire = True  # no idle time allowed above the minimum
                    self.retired_idle += 1
                else:
                    self._busy.discard(id(vm))
                    now = time.monotonic()
                    self._idle.append((vm, now))
                    if self._instances > self.min_size and self._reap_at is None:
                        self._reap_at = now + self.idle_timeout_s
                        REAPER.schedule(self, self._reap_at)
            if retire:
                self._busy.discard(id(vm))
                self._instances -= 1
        if retire:
            self._close_later(vm)
        elif job is not None:
            self._run_jobs(vm, job)

    def _hand_over(self, vm: ProxyWasmVM, here: bool = False) -> bool | _Job:
        """Give `vm` to the first live waiter (lock held); it stays counted as busy. A job is
        returned for the caller to run when `here`, else run in a guest thread."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if isinstance(waiter, _Job):
                if waiter.future.done():
                    continue
                waiter.started = True
                if here:
                    return waiter
                self._in_background(self._run_jobs, vm, waiter)
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
        """Drop a broken instance; start a replacement in the background if the minimum or a
        waiter needs one."""
        with self._lock:
            self._busy.discard(id(vm))
            self._instances -= 1
            if self.closed:
                return
            self.replaced += 1
            starts = self._plan_starts()
        self._start(starts)

    def _close_later(self, vm: ProxyWasmVM) -> None:
        try:
            self._in_background(_retire, vm)
        except RuntimeError:  # no thread to spare: retire it here
            _retire(vm)

    # -- scaling down ---------------------------------------------------------------------------
    def _reap(self, now: float) -> float | None:
        """Called by the reaper: retire instances idle for `idle_timeout_s` beyond the minimum, the
        longest idle first. Returns when to look again (None: nothing left to retire)."""
        with self._lock:
            self._reap_at = None
            if self.closed:
                return None
            retired = []
            while (self._idle and self._instances > self.min_size
                   and self._idle[0][1] + self.idle_timeout_s <= now):
                vm, _ = self._idle.popleft()
                self._instances -= 1
                retired.append(vm)
            self.retired_idle += len(retired)
            if self._idle and self._instances > self.min_size:
                self._reap_at = self._idle[0][1] + self.idle_timeout_s
            next_at = self._reap_at
        for vm in retired:
            self._close_later(vm)
        return next_at

    def retire_idle_now(self) -> int:
        """Retire every idle instance beyond the minimum now, however briefly idle (memory-map
        pressure, `reclaim_idle_instances`); closed here, so that a collection right after frees them."""
        with self._lock:
            if self.closed:
                return 0
            retired = []
            while self._idle and self._instances > self.min_size:
                retired.append(self._idle.popleft()[0])
                self._instances -= 1
            self.retired_idle += len(retired)
        for vm in retired:
            _retire(vm)
        return len(retired)

    # -- resizing and retiring ------------------------------------------------------------------
    def resize(self, size: int, min_size: int | None = None) -> None:
        """A new maximum (and minimum: default the same, a fixed pool as Layotto's instance_num)."""
        with self._lock:
            self.size = size
            self.min_size = size if min_size is None else max(0, min(min_size, size))
            surplus = []
            while self._instances > size and self._idle:
                surplus.append(self._idle.popleft()[0])
                self._instances -= 1
            starts = self._plan_starts()
            if self._idle and self._instances > self.min_size and self._reap_at is None:
                self._reap_at = time.monotonic() + self.idle_timeout_s
                REAPER.schedule(self, self._reap_at)
        for vm in surplus:
            self._close_later(vm)
        self._start(starts)

    def close(self) -> None:
        """Retire idle instances now and busy ones when they are released; fail waiters."""
        with self._lock:
            self.closed = True
            idle, self._idle = [vm for vm, _ in self._idle], collections.deque()
            self._instances -= len(idle)
            waiters, self._waiters = list(self._waiters), collections.deque()
        _mark_down(self, False)
        for waiter in waiters:
            _fail_waiter(waiter, PoolClosed(self.name))
        for vm in idle:
            _retire(vm)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"size": self.size, "instances": self._instances, "busy": len(self._busy),
                    "idle": len(self._idle), "waiting": len(self._waiters), "replaced": self.replaced,
                    "max_queue": self.max_queue}

    def scaling(self) -> dict[str, int | float]:
        """How the pool scales: its bounds, idle timeout, and what it started and retired so far."""
        with self._lock:
            return {"min": self.min_size, "max": self.size, "starting": self._starting,
                    "idle_timeout_ms": round(self.idle_timeout_s * 1000), "started_on_demand": self.started_on_demand,
                    "retired_idle": self.retired_idle}


class _Reaper:
    """One thread for the whole process that retires idle instances when their pool's idle timeout
    passes (a heap of (when, pool); each pool is in it at most once)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, InstancePool]] = []
        self._serial = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def schedule(self, pool: InstancePool, when: float) -> None:
        with self._wake:
            heapq.heappush(self._heap, (when, next(self._serial), pool))
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="pool-reaper", daemon=True)
                try:
                    thread.start()
                except RuntimeError as error:  # no thread now: idle instances stay until one can start
                    log.warning("cannot start the idle-instance reaper: %s", error)
                    return
                self._thread = thread
            if self._heap[0][2] is pool:
                self._wake.notify()

    def pools(self) -> list[InstancePool]:
        """The pools holding idle instances beyond their minimum (each waits here for its timeout;
        read without their locks: the caller checks again under them)."""
        with self._wake:
            scheduled = [pool for _, _, pool in self._heap]
        return [pool for pool in scheduled if pool._idle and pool._instances > pool.min_size]

    def _run(self) -> None:
        while True:
            with self._wake:
                while True:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        _, _, pool = heapq.heappop(self._heap)
                        break
                    self._wake.wait(self._heap[0][0] - now if self._heap else None)
            try:
                again = pool._reap(now)
            except Exception:  # noqa: BLE001 - a bug here must not stop scaling down for every pool
                log.exception("function %s: retiring idle instances failed", pool.name)
                continue
            if again is not None:
                self.schedule(pool, again)


REAPER = _Reaper()


class _RoomWaits:
    """Pools whose instance start the memory-map budget refused while requests wait (issue 16), in
    the order they were refused. One thread for the whole process retries the first that still needs
    a start at most every RECLAIM_INTERVAL_S (its admission gives the budget's reclaim its chance:
    retiring idle instances, collecting them), and the next one at once whenever a start succeeds
    (there may be room for more). So a refusal storm costs one refused start per interval, not one
    per waiting pool, and nothing spins: the thread sleeps on a condition. A pool is in the queue at
    most once and leaves it when it starts an instance or needs none (its waiters gone, closed)."""

    def __init__(self) -> None:
        # Insertion-ordered (first refused, first retried); the value is the serial of the pool's last
        # refusal, so that a retry finding nothing to do does not drop a pool refused again meanwhile.
        self._pools: dict[InstancePool, int] = {}
        self._serial = itertools.count()
        self._wake = threading.Condition()
        self._kicked = False
        self._thread: threading.Thread | None = None

    @property
    def waiting(self) -> bool:
        """Whether any pool waits (read without the lock: a hint for the start path)."""
        return bool(self._pools)

    def add(self, pool: InstancePool) -> bool:
        """Queue `pool` for a retry; False when no thread can be started to retry it (the caller
        fails its waiters as before)."""
        with self._wake:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="pool-room-retry", daemon=True)
                try:
                    thread.start()
                except RuntimeError as error:  # no thread now (the thread or memory-map limit)
                    log.warning("cannot start the thread retrying refused instance starts: %s", error)
                    return False
                self._thread = thread
            fresh = pool not in self._pools
            self._pools[pool] = next(self._serial)  # (a pool queued already keeps its place)
            if fresh:
                self._wake.notify()  # the thread may be waiting for a first pool
        return True

    def started(self, pool: InstancePool) -> None:
        """`pool` started an instance: it leaves the queue, and the next pool is tried now."""
        with self._wake:
            self._pools.pop(pool, None)
            if self._pools:
                self._kicked = True
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                if not self._pools:
                    self._kicked = False  # a kick for pools gone since: the next pool waits its interval
                    while not self._pools:
                        self._wake.wait()
                due = time.monotonic() + _maps.RECLAIM_INTERVAL_S
                while not self._kicked and (left := due - time.monotonic()) > 0:
                    self._wake.wait(left)  # only a success (a kick) ends the interval early
                self._kicked = False
                pools = list(self._pools.items())
            self._retry(pools)

    def _retry(self, pools: list[tuple[InstancePool, int]]) -> None:
        """Start one refused pool's instance: the first that needs one (those with a start under way
        wait for its outcome; those that need none leave)."""
        for pool, serial in pools:
            try:
                outcome = pool._retry_start()
            except Exception:  # noqa: BLE001 - a bug here must not stop the retries of every pool
                log.exception("function %s: retrying a refused instance start failed", pool.name)
                outcome = "done"
            if outcome == "started":
                return
            if outcome == "done":
                with self._wake:
                    if self._pools.get(pool) == serial:
                        del self._pools[pool]


ROOM_WAITS = _RoomWaits()


# Instances retired since the last full collection: what a collection may free (each holds its
# memory mappings until then).
_CLOSED_SINCE_COLLECTION = [0]
_LAST_COLLECTION = {"at": 0.0, "took": 0.0}
COLLECTION_SHARE = 3  # a reclaim collects only if the last collection took at most 1/3 of the time since


def _count_closed(count: int) -> None:
    _CLOSED_SINCE_COLLECTION[0] += count  # approximate under threads: a hint of what a collection frees


def _retire(vm: ProxyWasmVM) -> None:
    """Close a retired instance (its root context's proxy_on_done / proxy_on_delete); its store, memory
    and memory mappings go when the collector frees it (the guest and its owner refer to each other),
    which the map budget's reclaim forces under pressure. Closing the store here at once was tried and
    withdrawn: any compiled call still held into it would run on freed memory, and the suite saw one
    segfault (not traced) while it was in place."""
    vm.close()
    _count_closed(1)


def _on_collection(phase: str, info: dict[str, int]) -> None:
    if phase == "stop" and info.get("generation") == 2:
        _CLOSED_SINCE_COLLECTION[0] = 0


gc.callbacks.append(_on_collection)


def reclaim_idle_instances() -> int:
    """The engine's memory-map budget is about to refuse (abi/engine/_maps.py): retire every idle
    instance beyond its pool's minimum in this process, before its idle timeout, and collect the
    retired instances whose store could not be freed at once (their instance and guest refer to each
    other). Returns how many may have been freed (0: nothing to do). A collection walks every object
    (half a second at 10,000 functions): made only when the last one took at most 1/COLLECTION_SHARE
    of the time since."""
    retired = sum(pool.retire_idle_now() for pool in REAPER.pools())  # each freed as it retires
    if retired:
        log.warning("memory-map limit near: %d idle instance(s) beyond their pools' minimum retired early",
                    retired)
    uncollected = _CLOSED_SINCE_COLLECTION[0]
    started = time.monotonic()
    if not uncollected or started - _LAST_COLLECTION["at"] < COLLECTION_SHARE * _LAST_COLLECTION["took"]:
        return retired  # nothing for the collector, or it ran too recently for its cost
    gc.collect()
    took = time.monotonic() - started
    _LAST_COLLECTION.update(at=started, took=took)
    log.warning("memory-map limit near: %d retired instance(s) left to the collector, collected in %.0f ms",
                uncollected, took * 1000)
    return retired + uncollected


def _run_boxed(box: list[tuple[Callable[..., object], tuple[object, ...]]]) -> None:
    fn, args = box.pop()
    fn(*args)


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

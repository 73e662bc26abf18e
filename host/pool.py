"""A pool of started instances of one function: one request per instance at a time.

Acquired from the event loop (`acquire`) for HTTP requests and from guest threads
(`acquire_blocking`) for nested `proxy_invoke_service` calls; both wait on the same FIFO.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
from typing import Callable, Collection, Optional

from abi.vm import ProxyWasmVM

log = logging.getLogger(__name__)


class PoolTimeout(Exception):
    """No instance became free in time."""


class PoolWouldDeadlock(Exception):
    """Every instance is held by the calling chain itself (A invoking A, A->B->A): waiting cannot help."""


class PoolClosed(Exception):
    """The pool was retired while waiting."""


class InstancePool:
    def __init__(self, name: str, factory: Callable[[], ProxyWasmVM], size: int,
                 executor: concurrent.futures.Executor):
        self.name = name
        self.size = size
        self._factory = factory
        self._executor = executor
        self._lock = threading.Lock()
        self._idle: collections.deque[ProxyWasmVM] = collections.deque()
        self._busy: set[int] = set()
        self._waiters: collections.deque[concurrent.futures.Future] = collections.deque()
        self._instances = 0
        self._replacing = 0
        self.closed = False
        self.replaced = 0

    # -- filling ------------------------------------------------------------------------------
    def add(self, vm: ProxyWasmVM) -> None:
        with self._lock:
            self._instances += 1
        self.release(vm, counted=False)

    def fill(self) -> None:
        """Create instances (in this thread) until the pool has `size` of them."""
        while True:
            with self._lock:
                if self.closed or self._instances + self._replacing >= self.size:
                    return
                self._replacing += 1
            try:
                vm = self._factory()
            finally:
                with self._lock:
                    self._replacing -= 1
            self.add(vm)

    # -- acquiring ----------------------------------------------------------------------------
    def try_acquire(self) -> Optional[ProxyWasmVM]:
        with self._lock:
            if self._idle:
                vm = self._idle.popleft()
                self._busy.add(id(vm))
                return vm
        return None

    def _enqueue_waiter(self) -> tuple[Optional[ProxyWasmVM], Optional[concurrent.futures.Future]]:
        with self._lock:
            if self.closed:
                raise PoolClosed(self.name)
            if self._idle:
                vm = self._idle.popleft()
                self._busy.add(id(vm))
                return vm, None
            waiter: concurrent.futures.Future = concurrent.futures.Future()
            self._waiters.append(waiter)
            return None, waiter

    async def acquire(self, timeout: float) -> ProxyWasmVM:
        vm, waiter = self._enqueue_waiter()
        if vm is not None:
            return vm
        assert waiter is not None
        try:
            return await asyncio.wait_for(asyncio.wrap_future(waiter), timeout)
        except asyncio.TimeoutError:
            self._give_up(waiter)
            raise PoolTimeout(f"no free instance of {self.name} within {timeout:.1f}s") from None
        except BaseException:  # the client went away, or the pool closed
            self._give_up(waiter)
            raise

    def acquire_blocking(self, timeout: float, held: Collection[int] = ()) -> ProxyWasmVM:
        """Wait in a guest thread; fail at once when only our own call chain holds the instances."""
        with self._lock:
            if self._instances and not self._idle and not self._replacing and self._busy <= set(held):
                raise PoolWouldDeadlock(
                    f"every instance of {self.name} is held by the calling chain (a call cycle)")
        vm, waiter = self._enqueue_waiter()
        if vm is not None:
            return vm
        assert waiter is not None
        try:
            return waiter.result(timeout)
        except concurrent.futures.TimeoutError:
            self._give_up(waiter)
            raise PoolTimeout(f"no free instance of {self.name} within {timeout:.1f}s") from None

    def _give_up(self, waiter: concurrent.futures.Future) -> None:
        """A waiter that stopped waiting: if an instance was handed to it meanwhile, put it back."""
        with self._lock:
            if waiter.cancel():
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
                return
        if not waiter.cancelled() and waiter.exception() is None:
            self.release(waiter.result())

    # -- returning ----------------------------------------------------------------------------
    def release(self, vm: ProxyWasmVM, counted: bool = True) -> None:
        if vm.broken:
            self.discard(vm)
            return
        with self._lock:
            self._busy.discard(id(vm))
            if self.closed or self._instances > self.size:
                self._instances -= 1
                retire = True
            else:
                retire = False
                while self._waiters:
                    waiter = self._waiters.popleft()
                    if waiter.set_running_or_notify_cancel():
                        self._busy.add(id(vm))
                        waiter.set_result(vm)
                        return
                self._idle.append(vm)
        if retire:
            self._executor.submit(vm.close)

    def discard(self, vm: ProxyWasmVM) -> None:
        """Drop a broken instance and start a replacement in the background."""
        with self._lock:
            self._busy.discard(id(vm))
            self._instances -= 1
            closed = self.closed
            if not closed:
                self.replaced += 1
        if not closed:
            self._executor.submit(self._replace)

    def _replace(self) -> None:
        try:
            self.fill()
        except Exception as error:  # noqa: BLE001 - logged; the pool keeps serving with fewer instances
            log.error("function %s: cannot start a replacement instance: %s", self.name, error)

    # -- resizing and retiring ------------------------------------------------------------------
    def resize(self, size: int) -> None:
        with self._lock:
            self.size = size
            surplus = []
            while self._instances > size and self._idle:
                surplus.append(self._idle.pop())
                self._instances -= 1
        for vm in surplus:
            self._executor.submit(vm.close)
        self._executor.submit(self._replace)

    def close(self) -> None:
        """Retire idle instances now and busy ones when they are released; fail waiters."""
        with self._lock:
            self.closed = True
            idle, self._idle = list(self._idle), collections.deque()
            self._instances -= len(idle)
            waiters, self._waiters = list(self._waiters), collections.deque()
        for waiter in waiters:
            if waiter.set_running_or_notify_cancel():
                waiter.set_exception(PoolClosed(self.name))
        for vm in idle:
            vm.close()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"size": self.size, "instances": self._instances, "busy": len(self._busy),
                    "idle": len(self._idle), "waiting": len(self._waiters), "replaced": self.replaced}

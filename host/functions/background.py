"""Root-context work outside requests: `proxy_on_tick` timers and shared-queue deliveries, for the
function's pool and for each of its filters' pools.

As in Envoy, where the root context that holds a paused stream is the one its timers and queues
call, a pool's root work goes to every instance of it that holds a paused stream — the guest may
resume or answer it from there — and otherwise to one idle instance, through the one call path
(host/functions/dispatch.py). abi/paused.py keeps which instances hold one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from abi.paused import Ticket
from abi.vm import ProxyWasmVM
from host.functions.deployer import RootTarget, RootWork, root_target
from host.functions.dispatch import Dispatcher
from host.functions.version import FunctionVersion

log = logging.getLogger(__name__)


def _tick(vm: ProxyWasmVM) -> None:
    vm.run_root_callback("proxy_on_tick")


class Background:
    def __init__(self, dispatcher: Dispatcher):
        self.dispatcher = dispatcher
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Future[Any]] = set()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def run_in_background(self, version: FunctionVersion, target: RootTarget, work: RootWork) -> None:
        """Thread-safe: run `work(vm)` on every instance of the target's pool that holds a paused
        stream, or else on one idle instance, in a guest thread."""
        ticket = target.paused.deliver(work)
        if ticket is None:
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(lambda: self.spawn(self._run_idle(version, target, ticket)))
        else:
            ticket.withdraw()

    async def _run_idle(self, version: FunctionVersion, target: RootTarget, ticket: Ticket) -> None:
        try:
            await self.dispatcher.run_root(version, ticket.run, target.pool)
        finally:
            ticket.withdraw()  # ran, or dropped: an instance that pauses later must not run it

    def version_deployed(self, version: FunctionVersion) -> None:
        """Start a timer for each pool (the function's, its filters') whose guest set a tick period;
        it stops when the version retires."""
        for pool in (version.pool, *version.filter_pools):
            target = root_target(pool)
            if target is not None and target.tick_period_ms > 0:
                self.spawn(self._ticks(version, target))

    async def _ticks(self, version: FunctionVersion, target: RootTarget) -> None:
        period = target.tick_period_ms / 1000
        idle_run: asyncio.Future[None] | None = None
        # A retired pool's instances still holding a paused stream keep their ticks until they end.
        while not target.pool.closed or target.paused.paused_count():
            await asyncio.sleep(period)
            # While one tick still waits for an idle instance, further ones go only to paused
            # instances: ticks do not pile up behind busy instances.
            waiting = idle_run is not None and not idle_run.done()
            ticket = target.paused.deliver(_tick, wait_for_idle=not (waiting or target.pool.closed))
            if ticket is not None:
                idle_run = self.spawn(self._run_idle(version, target, ticket))

    def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()

"""Root-context work outside requests: `proxy_on_tick` timers and shared-queue deliveries, run on an
idle instance of the function through the one call path (host/functions/dispatch.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from host.functions.deployer import RootWork
from host.functions.dispatch import Dispatcher
from host.functions.version import FunctionVersion

log = logging.getLogger(__name__)


class Background:
    def __init__(self, dispatcher: Dispatcher):
        self.dispatcher = dispatcher
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Future[Any]] = set()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def run_in_background(self, version: FunctionVersion, work: RootWork) -> None:
        """Thread-safe: run `work(vm)` on an idle instance of `version`, in a guest thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(lambda: self.spawn(self.dispatcher.run_root(version, work)))

    def version_deployed(self, version: FunctionVersion) -> None:
        """Start the version's timer if its guest set a tick period; it stops when the version retires."""
        if version.tick_period_ms:
            self.spawn(self._tick(version))

    async def _tick(self, version: FunctionVersion) -> None:
        period = version.tick_period_ms / 1000
        while not version.pool.closed:
            await asyncio.sleep(period)
            if not version.pool.closed:
                await self.dispatcher.run_root(version, lambda vm: vm.run_root_callback("proxy_on_tick"))

    def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()

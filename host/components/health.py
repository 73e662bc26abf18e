"""Periodic probes of every component and upstream, feeding readiness. A probe can block for a
backend's timeout, so it runs in a guest thread every `interval_s`; readiness reads the last result
and never waits. A change of state is logged once, naming the component."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

log = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 0.5
Probe = Callable[[], dict[str, tuple[bool, str]]]


class ThreadRunner(Protocol):
    async def run(self, fn: Callable[..., Any], *args: Any) -> Any: ...


class HealthMonitor:
    def __init__(self, threads: ThreadRunner, probes: Sequence[Probe], interval_s: float = HEALTH_INTERVAL_S):
        self.threads = threads
        self.probes = probes
        self.interval_s = interval_s
        self.last: dict[str, tuple[bool, str]] = {}
        self._task: asyncio.Task[None] | None = None

    def _probe(self) -> dict[str, tuple[bool, str]]:
        results: dict[str, tuple[bool, str]] = {}
        for probe in self.probes:
            results.update(probe())
        return results

    async def refresh(self) -> None:
        previous, self.last = self.last, await self.threads.run(self._probe)
        for name, (ok, detail) in self.last.items():
            if previous and previous.get(name, (True, ""))[0] != ok:
                log.log(logging.INFO if ok else logging.ERROR, "component %s is %s: %s", name,
                        "UP" if ok else "DOWN", detail)

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 - keep probing
                log.exception("component health probe failed")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

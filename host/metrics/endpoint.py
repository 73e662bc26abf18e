"""What `GET /metrics` answers: this process's exposition, or — on worker 0's public admin port
with `--workers N` — every worker's, merged (host/metrics/exposition.py). Rendering is pure Python
(milliseconds for dozens of functions), so it runs in a thread, off the event loop that also
serves the function listener."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from host.metrics.exposition import merge_workers
from host.metrics.registry import HostMetrics


class _Answer(Protocol):
    index: int
    status: int | None
    body: Any


async def scrape(metrics: HostMetrics, worker_index: int | None = None,
                 ask_peers: Callable[[str], Awaitable[Sequence[_Answer]]] | None = None) -> bytes:
    local = await asyncio.to_thread(metrics.render)
    if ask_peers is None or worker_index is None:
        return local
    answers = await ask_peers("/metrics")
    expositions: list[tuple[int, str | None]] = [(worker_index, local.decode())]
    for answer in answers:
        text = answer.body if answer.status == 200 and isinstance(answer.body, str) else None
        expositions.append((answer.index, text))
    return await asyncio.to_thread(merge_workers, sorted(expositions, key=lambda entry: entry[0]))

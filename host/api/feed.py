"""Hands what component threads report (configuration changes, topic events, the end of a
subscription) to a stream or task on the event loop: a queue filled with `call_soon_threadsafe`, so a component thread
never touches the loop's objects and never waits for the client."""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class _End:
    pass


END = _End()


class ThreadFeed(Generic[T]):
    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[T | _End] = asyncio.Queue()

    def put(self, value: T) -> None:
        """From any thread."""
        self._send(value)

    def end(self) -> None:
        """From any thread: `get` answers END once the values before it are taken."""
        self._send(END)

    def _send(self, value: T | _End) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, value)
        except RuntimeError:  # the loop is closed: the stream is gone with it
            pass

    async def get(self) -> T | _End:
        return await self._queue.get()

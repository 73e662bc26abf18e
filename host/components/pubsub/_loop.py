"""A private asyncio event loop in a daemon thread, for a backend whose client library is
asyncio-only (nats-py) behind an interface that threads call: they submit coroutines to it and
wait for the result with a timeout."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from host.components.errors import ComponentError

T = TypeVar("T")


class EventLoopThread:
    """A private asyncio event loop in a daemon thread, for callers that are threads."""

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        return self.wait(self.submit(coro), timeout_s)

    @staticmethod
    def wait(future: concurrent.futures.Future[T], timeout_s: float) -> T:
        """The coroutine's result; on timeout it is cancelled and ComponentError raised."""
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            if not future.done():
                future.cancel()
                raise ComponentError(f"timed out after {timeout_s:.1f}s") from None
            raise  # the coroutine's own TimeoutError

    def stop(self, timeout_s: float) -> None:
        """Cancel what still runs on the loop, stop it and join its thread."""

        async def cancel_the_rest() -> None:
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.run(cancel_the_rest(), timeout_s)
        except Exception:  # noqa: BLE001 - stopping anyway
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self.loop.close()

"""Guest threads: where guest code runs when it must not run on the event loop.

Cheaper than `loop.run_in_executor`: one SimpleQueue put, one `call_soon_threadsafe` back,
no concurrent.futures.Future in between. Threads are started on demand (a job holds one
instance, and nested invokes run in their caller's thread, so the number of threads needed
is bounded by the number of instances), and stay for reuse.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP = object()


class GuestThreads:
    def __init__(self, max_threads: int = 512, name: str = "guest"):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._max = max_threads
        self._name = name
        self._closed = False

    def start(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run `fn(*args)` in a guest thread; the future gets its result (or exception). Cancelling
        the future does not stop `fn`: nothing can interrupt a thread."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._ensure_thread()
        self._jobs.put((loop, future, fn, args))
        return future

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` in a guest thread and await its result (or exception)."""
        return await self.start(fn, *args)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Fire and forget (instance replacement, retirement): errors are the callee's to log."""
        self._ensure_thread()
        self._jobs.put((None, None, fn, args))

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("guest threads are shut down")
            if self._idle > 0:
                self._idle -= 1  # this job will take one idle thread
                return
            if len(self._threads) >= self._max:
                return  # the job waits in the queue for a thread
            thread = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
        try:
            thread.start()
        except RuntimeError:  # no thread can start now (the process's thread or memory-map limit, issue 16)
            with self._lock:
                self._threads.remove(thread)
                if self._threads:
                    return  # the job waits in the queue for one of the running threads
            raise

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is _STOP:
                return
            loop, future, fn, args = job
            try:
                result = fn(*args)
            except BaseException as error:  # noqa: BLE001 - delivered to the awaiting request
                if loop is not None:
                    loop.call_soon_threadsafe(_deliver_error, future, error)
            else:
                if loop is not None:
                    loop.call_soon_threadsafe(_deliver, future, result)
                del result
            # An idle thread must not keep its last job alive: a deployed version, or an error whose
            # traceback holds the instances a failed deploy started (their memory comes back with them).
            del job, loop, future, fn, args
            with self._lock:
                self._idle += 1

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(_STOP)


def _deliver(future: asyncio.Future, result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _deliver_error(future: asyncio.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


"""The runtime API for applications, independent of the transport: one module per capability
(state, pubsub with its topic streams, lock, sequencer, configuration, invoke, metadata; and
delivery.py, events to the application's own subscriptions) taking and returning Layotto's
protobuf messages (`spec.proto.runtime.v1`) or plain values, and raising one error type
(`ApiError`: a gRPC code and a message). Layotto's and Dapr's gRPC servicers (host/grpc), Dapr's HTTP
API (host/http/dapr) and the guests' foreign-function route (host/api/foreign.py) are thin
translations onto it, so every entry point validates and answers alike.

Component calls block (Redis and PostgreSQL round trips). Entry points on the event loop run them
with `RuntimeApi.run`, on a small thread pool of the API's own (a slow backend then delays only API
calls, never the loop or the guests' threads); guest threads call the modules directly.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from host.api.configuration import ConfigurationApi
from host.api.errors import ApiError, Code
from host.api.invoke import InvokeApi
from host.api.lock import LockApi
from host.api.metadata import MetadataApi
from host.api.pubsub import PubSubApi
from host.api.sequencer import SequencerApi
from host.api.state import StateApi
from host.components.catalog import Components
from host.functions.dispatch import Dispatcher

T = TypeVar("T")

# Enough to keep several slow round trips in flight; more threads would only contend for the GIL.
API_THREADS = min(32, (os.cpu_count() or 4) + 4)


class RuntimeApi:
    def __init__(self, components: Components, dispatcher: Dispatcher, threads: int = API_THREADS):
        self.app_id = components.app_id
        self.state = StateApi(components)
        self.pubsub = PubSubApi(components)
        self.lock = LockApi(components)
        self.sequencer = SequencerApi(components)
        self.configuration = ConfigurationApi(components)
        self.invoke = InvokeApi(dispatcher)
        self.metadata = MetadataApi(components, dispatcher.router.ids)
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:  # created on first use: a host without API listeners starts none
            self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="runtime-api")
        return self._executor

    async def run(self, call: Callable[..., T], *args: object, **kwargs: object) -> T:
        """`call(*args, **kwargs)` on the API's threads, from the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), functools.partial(call, *args, **kwargs))

    def end_streams(self) -> None:
        """Ends every configuration subscription and topic stream, so the gRPC streams serving
        them finish (shutdown)."""
        self.configuration.close()
        self.pubsub.streams.close()

    def close(self) -> None:
        """Ends the streams and stops the threads; calls still running finish in the background,
        bounded by their backends' timeouts."""
        self.end_streams()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


__all__ = ["ApiError", "Code", "RuntimeApi"]

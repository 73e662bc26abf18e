"""The runtime API for applications, independent of the transport: one module per capability
(state, pubsub with its topic streams, lock, sequencer, configuration, invoke, metadata; and
delivery.py, events to the application's own subscriptions) taking and returning Layotto's
protobuf messages (`spec.proto.runtime.v1`) or plain values, and raising one error type
(`ApiError`: a gRPC code and a message). Layotto's and Dapr's gRPC servicers (host/grpc), Dapr's HTTP
API (host/http/dapr) and the guests' foreign-function route (host/api/foreign.py) are thin
translations onto it, so every entry point validates and answers alike.

Component calls block (Redis and PostgreSQL round trips). Entry points on the event loop run them
with `RuntimeApi.run`, on a small thread pool of the API's own (a slow backend then delays only API
calls, never the loop or the guests' threads); guest threads call the modules directly. Reads
(`component_call(..., reads=True)`: GetState, GetBulkState) are tried on the loop first, within the
inline budget (host/loop_budget.py: a warm Redis connection, at most INLINE_DEADLINE_S), which costs
less than the hop to a thread and back; one that would wait longer is made again in a thread, and
that store's reads go to the threads for a while (InlineGate).

Runtime-call metrics (issue 14): each transport serves a view, `for_api("grpc")` / `for_api("http")`,
sharing every part and the threads; its `run` observes the component calls (host/api/observed.py)
and its `invoke` the invocations, under that API's label.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter
from typing import TypeVar

from host.api.configuration import ConfigurationApi
from host.api.errors import ApiError, Code
from host.api.invoke import InvokeApi
from host.api.lock import LockApi
from host.api.metadata import MetadataApi
from host.api.observed import marked, only_reads
from host.api.pubsub import PubSubApi
from host.api.sequencer import SequencerApi
from host.api.state import StateApi
from host.components.catalog import Components
from host.functions.dispatch import Dispatcher
from host.functions.policy import INLINE_DEADLINE_S
from host.loop_budget import InlineGate, LoopBudgetExceeded, run_within
from host.metrics import NO_OBSERVER, CallObserver, RuntimeCallMetrics

T = TypeVar("T")

# Enough to keep several slow round trips in flight; more threads would only contend for the GIL.
API_THREADS = min(32, (os.cpu_count() or 4) + 4)


class _Threads:
    """The API's thread pool, shared by every view, created on first use (a host without API
    listeners starts none)."""

    def __init__(self, size: int):
        self.size = size
        self.executor: ThreadPoolExecutor | None = None

    def pool(self) -> ThreadPoolExecutor:
        if self.executor is None:
            self.executor = ThreadPoolExecutor(self.size, thread_name_prefix="runtime-api")
        return self.executor


class RuntimeApi:
    def __init__(self, components: Components, dispatcher: Dispatcher, threads: int = API_THREADS,
                 metrics: RuntimeCallMetrics | None = None):
        self.app_id = components.app_id
        self.components = components
        self.state = StateApi(components)
        self.pubsub = PubSubApi(components)
        self.lock = LockApi(components)
        self.sequencer = SequencerApi(components)
        self.configuration = ConfigurationApi(components)
        self.invoke = InvokeApi(dispatcher)
        self.metadata = MetadataApi(components, dispatcher.router.ids)
        self.observer: CallObserver = NO_OBSERVER
        self._metrics = metrics
        self._threads = _Threads(threads)
        self._gates: dict[tuple[str, str], InlineGate] = {}  # (capability, component) -> reads inline?

    def for_api(self, api: str) -> RuntimeApi:
        """This API as one transport serves it ("grpc", "http"): the same parts, streams and threads,
        its calls counted under `api`. Without metrics, the API itself."""
        if self._metrics is None:
            return self
        view = copy.copy(self)  # shallow: every part (and the thread pool) is shared
        view.observer = self._metrics.for_api(api)
        view.invoke = InvokeApi(self.invoke.dispatcher, view.observer)
        return view

    async def run(self, call: Callable[..., T], *args: object, **kwargs: object) -> T:
        """`call(*args, **kwargs)` from the event loop: a read on the loop when it can finish within
        the inline budget, else on the API's threads; a component call is observed (capability,
        component, outcome, time from here to its answer)."""
        job = functools.partial(call, *args, **kwargs)
        reads = only_reads(call)
        spec = marked(call) if self.observer is not NO_OBSERVER or reads else None
        if spec is None:
            return await asyncio.get_running_loop().run_in_executor(self._threads.pool(), job)
        capability, component_of = spec
        name = component_of(*args)
        if name not in self.components.of(capability):
            name = ""  # a client-chosen name creates no series
        started = perf_counter()
        try:
            result = await self._execute(job, (capability, name) if reads else None)
        except Exception as error:
            self.observer.observe(capability, name, error, perf_counter() - started)
            raise
        self.observer.observe(capability, name, None, perf_counter() - started)
        return result

    async def _execute(self, job: Callable[[], T], read_of: tuple[str, str] | None) -> T:
        """`job` on the loop within the inline budget when it is a read of a store whose reads have
        been quick (`read_of`: its capability and component), else — or when it cannot finish
        within the budget — on the API's threads."""
        if read_of is not None:
            gate = self._gates.get(read_of)
            if gate is None:
                gate = self._gates[read_of] = InlineGate()
            if gate.open():
                started = perf_counter()
                try:
                    result = run_within(INLINE_DEADLINE_S, job)
                except LoopBudgetExceeded:
                    gate.failed()  # nothing was done: made again in a thread
                else:
                    gate.took(perf_counter() - started)
                    return result
        return await asyncio.get_running_loop().run_in_executor(self._threads.pool(), job)

    def end_streams(self) -> None:
        """Ends every configuration subscription and topic stream, so the gRPC streams serving
        them finish (shutdown)."""
        self.configuration.close()
        self.pubsub.streams.close()

    def close(self) -> None:
        """Ends the streams and stops the threads; calls still running finish in the background,
        bounded by their backends' timeouts."""
        self.end_streams()
        if self._threads.executor is not None:
            self._threads.executor.shutdown(wait=False, cancel_futures=True)


__all__ = ["ApiError", "Code", "RuntimeApi"]

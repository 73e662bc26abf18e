"""One proxy-wasm plugin instance: its guest, its root context, and the per-request stream lifecycle.

The call order follows the proxy-wasm spec and Layotto's FaaS conventions (reference §4):
start-up `_initialize`/`_start` -> `proxy_get_id` -> root context -> `proxy_on_vm_start` ->
`proxy_on_configure`; per request: context create -> request headers -> request body (the query
string when the body is empty) -> trailers -> response headers/body -> done -> log -> delete.

A stream callback that returns Pause waits, as in Envoy, until a later callback resumes it
(`proxy_continue_stream`), answers it or closes it: a callback of a call it started, or root work
(a tick, a queue delivery) posted to this instance while it holds the paused stream (abi/paused.py),
which selects the stream with `proxy_set_effective_context`. The request's deadline bounds the wait.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import wasmtime

from abi.codes import Action
from abi.engine import EPOCH_TICK_SECONDS, Guest, GuestMemoryError, GuestTrap, HostLinker, WasmEngine
from abi.http import HttpRequest, HttpResponse
from abi.maps import HeaderList
from abi.outbound import CallEvent, PendingCall, PendingGrpcCall, PendingGrpcStream, PendingHttpCall, http_result
from abi.paused import PausedInstance, PausedStreams, RootWork
from abi.services import HostServices

ROOT_CONTEXT_ID = 1
WAKE_UP = 0  # the inbox token of "root work was posted" (call tokens start at 1)
EXPIRED_CLOSE_S = 1.0  # the budget of proxy_on_done/log/delete for a stream whose deadline passed while paused


class StartupError(Exception):
    """The module could not be started as a plugin (trap, or a start-up callback returned false)."""


class StreamPausedTooLong(GuestTrap):
    """A paused stream was neither resumed, answered nor closed by the request's deadline. No guest
    code was running: unlike other traps the instance stays usable (abi/chain.py closes the streams;
    the caller answers 504)."""

    def __init__(self, message: str):
        super().__init__(message, interrupted=True)


@dataclass
class PluginSettings:
    name: str  # the configured name; also the function id when the module has no proxy_get_id
    plugin_config: bytes = b""
    vm_config: bytes = b""
    root_id: str = ""
    vm_id: str = ""
    memory_limit_bytes: int | None = None
    # Allow-list setting (allowed_state_stores, allowed_invoke_targets, allowed_upstreams, allowed_pubsubs...)
    # -> the names this plugin may use; a list not given allows every configured name
    # (abi/imports/_registry.py `refused`).
    allow_lists: dict[str, tuple[str, ...]] = field(default_factory=dict)
    fuel_per_request: int | None = None  # wasm instructions a request may run (needs fuel metering)
    # Envoy-shaped properties (abi/properties.py): this host's `node` ({id, cluster, metadata}), read as
    # node.* at any time, and the route's (the function's) properties — route_name, cluster_name,
    # route_metadata, cluster_metadata and configured extras — read during a request, as in Envoy.
    node: dict[str, Any] = field(default_factory=dict)
    route_properties: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class StreamState:
    """Everything one HTTP stream context reads and writes through host imports."""

    context_id: int
    request: HttpRequest
    request_headers: HeaderList
    request_body: bytearray
    request_trailers: HeaderList
    response: HttpResponse = field(default_factory=HttpResponse)
    response_body: bytearray = field(default_factory=bytearray)
    local_response: HttpResponse | None = None
    properties: dict[str, bytes] = field(default_factory=dict)
    closed: bool = False
    done_pending: bool = False
    resumed: bool = False  # proxy_continue_stream was called while the stream was paused
    guest_bytes: int = 0  # net bytes the guest added to this stream's header maps (abi/limits.py)


class ProxyWasmVM:
    """A started plugin instance. Not thread-safe: one request at a time (the pool guarantees it)."""

    def __init__(self, engine: WasmEngine, linker: HostLinker, module: wasmtime.Module,
                 settings: PluginSettings, services: HostServices, start_deadline_s: float = 10.0):
        self.settings = settings
        self.services = services
        self.log = services.logger
        self.function_id = settings.name
        # When what runs now must end (monotonic seconds): a guest sleeping in poll_oneoff wakes by then.
        self.deadline_at = 0.0
        self.guest: Guest = engine.instantiate(linker, module, self, memory_limit_bytes=settings.memory_limit_bytes,
                                               start_deadline_s=start_deadline_s)
        self.call_data = bytearray()
        self.properties: dict[str, bytes] = {}  # set by the guest outside a stream
        self.stream: StreamState | None = None
        self.effective_context = ROOT_CONTEXT_ID
        # The stream of this instance's request while it waits paused (proxy_set_effective_context
        # may select it from root work), and the instances of this pool that hold one: the deployer
        # gives every instance of a pool the same PausedStreams.
        self.waiting_stream: StreamState | None = None
        self.paused_streams = PausedStreams()
        self._request_budget_s = 0.0
        self._context_ids = itertools.count(ROOT_CONTEXT_ID + 1)
        self.broken = False
        self.abi_version = abi_version(self.guest.has_export)
        # Outbound calls in flight (abi/outbound.py), the (token, event) pairs they post from other
        # threads, what the call callback now running may read (buffers 4/5, maps 4-7), proxy_get_status.
        self.pending_calls: dict[int, PendingCall] = {}
        self._tokens = itertools.count(1)
        self._inbox: queue.SimpleQueue[tuple[int, CallEvent | None]] = queue.SimpleQueue()
        self.call_buffers: dict[int, bytes] = {}
        self.call_maps: dict[int, HeaderList] = {}
        self.last_status: tuple[int, bytes] = (0, b"")
        self.tick_period_ms = 0
        self._wall_deadline = 0.0
        # Set by the host: run root-context work on the instances of this pool holding a paused
        # stream, or else on an idle one.
        self.on_background: Callable[[RootWork], None] | None = None
        cb = self.guest.func
        self._allocate = cb("proxy_on_memory_allocate") or cb("malloc")
        self._on_context_create = cb("proxy_on_context_create")
        self._on_request_headers = cb("proxy_on_request_headers")
        self._on_request_body = cb("proxy_on_request_body")
        self._on_request_trailers = cb("proxy_on_request_trailers")
        self._on_response_headers = cb("proxy_on_response_headers")
        self._on_response_body = cb("proxy_on_response_body")
        self._on_done = cb("proxy_on_done")
        self._on_log = cb("proxy_on_log")
        self._on_delete = cb("proxy_on_delete")

    # -- guest memory helpers used by host imports ------------------------------------------------
    def allocate(self, data: bytes) -> int:
        """Copy `data` into a fresh guest allocation (the guest owns it afterwards)."""
        if self._allocate is None:
            raise GuestMemoryError("module exports neither proxy_on_memory_allocate nor malloc")
        ptr = self._allocate(len(data)) or 0
        if not ptr and data:
            raise GuestMemoryError(f"guest allocator returned 0 for {len(data)} bytes")
        if data:
            self.guest.write(ptr, data)
        return ptr

    def return_bytes(self, data: bytes, ptr_ptr: int, size_ptr: int) -> None:
        """Hand `data` back through a (u8**, size_t*) out-parameter pair."""
        guest = self.guest
        guest.check_u32_pair(ptr_ptr, size_ptr)  # before allocating: a bad pointer must not leak guest memory
        # An empty result is (0, 0) without calling the allocator, as the reference host does: the Go
        # and TinyGo SDK allocators panic on a request for 0 bytes.
        guest.write_checked_u32_pair(ptr_ptr, self.allocate(data) if data else 0, size_ptr, len(data))

    def read_str(self, ptr: int, size: int) -> str:
        return self.guest.read(ptr, size).decode("utf-8", "surrogateescape")

    # -- start-up ----------------------------------------------------------------------------------
    def start(self, deadline_s: float = 10.0) -> None:
        """Run the start function, learn the id, create the root context and configure it."""
        self._set_deadline(deadline_s)
        try:
            start = self.guest.func("_initialize") or self.guest.func("_start")
            if start is not None:
                try:
                    start()
                except GuestTrap as trap:
                    if trap.exit_code != 0:  # `_start` of a command module may end with proc_exit(0)
                        raise
            self._read_function_id()
            create = self._on_context_create
            if create is not None:
                create(ROOT_CONTEXT_ID, 0)
            vm_start = self.guest.func("proxy_on_vm_start")
            if vm_start is not None and not vm_start(ROOT_CONTEXT_ID, len(self.settings.vm_config)):
                raise StartupError("proxy_on_vm_start returned false")
            configure = self.guest.func("proxy_on_configure")
            if configure is not None and not configure(ROOT_CONTEXT_ID, len(self.settings.plugin_config)):
                raise StartupError("proxy_on_configure returned false")
            self.drain_calls(time.monotonic() + deadline_s)
        except GuestTrap as trap:
            self.broken = True
            self.cancel_calls()
            raise StartupError(f"start-up trapped: {trap}") from trap

    def _read_function_id(self) -> None:
        get_id = self.guest.func("proxy_get_id")
        if get_id is None:
            return
        self.call_data = bytearray()  # a fresh buffer per call (Layotto shares one: a known bug)
        get_id()
        reported = bytes(self.call_data).decode("utf-8", "replace").strip("\0").strip()
        if reported:
            self.function_id = reported
        self.call_data = bytearray()

    def close(self) -> None:
        """Retire the root context (proxy_on_done / proxy_on_delete), ignoring a broken guest."""
        self.cancel_calls()
        if self.broken:
            return
        try:
            self._set_deadline(1.0)
            if self._on_done is not None:
                self._on_done(ROOT_CONTEXT_ID)
            if self._on_delete is not None:
                self._on_delete(ROOT_CONTEXT_ID)
        except GuestTrap as trap:
            self.log.warning("function %s: root context retirement trapped: %s", self.function_id, trap)
        self.broken = True

    def _arm(self, deadline_s: float) -> float:
        """The budget of what runs next (a request, a timer or queue callback): its deadline and,
        with fuel metering, its fuel. Returns the wall-clock deadline."""
        self._set_deadline(deadline_s)
        if self.settings.fuel_per_request is not None:
            self.guest.set_fuel(self.settings.fuel_per_request)
        return self.deadline_at

    def _set_deadline(self, seconds: float) -> None:
        self.deadline_at = time.monotonic() + seconds
        self.guest.set_deadline(_epoch_ticks(seconds))

    # -- one request -------------------------------------------------------------------------------
    def open_stream(self, request: HttpRequest, shared: StreamState | None, deadline_s: float) -> StreamState:
        """Create a stream context; `shared` (another filter's stream) lends its headers and bodies."""
        if self.broken:
            raise GuestTrap("instance is broken")
        if shared is None:
            body = request.body if request.body else request.query.encode()
            stream = StreamState(context_id=next(self._context_ids), request=request,
                                 request_headers=list(request.headers), request_body=bytearray(body),
                                 request_trailers=list(request.trailers))
        else:
            stream = StreamState(context_id=next(self._context_ids), request=request,
                                 request_headers=shared.request_headers, request_body=shared.request_body,
                                 request_trailers=shared.request_trailers, response=shared.response,
                                 response_body=shared.response_body)
        self._wall_deadline = self._arm(deadline_s)
        self._request_budget_s = deadline_s
        create = self._on_context_create
        if create is not None:
            saved = self.stream, self.effective_context  # the stream its host calls work on, meanwhile
            self.stream, self.effective_context = stream, stream.context_id
            try:
                create(stream.context_id, ROOT_CONTEXT_ID)
            finally:
                self.stream, self.effective_context = saved
        return stream

    def run_step(self, stream: StreamState, step: str, end_of_stream: bool) -> bool:
        """One stream callback (`request_headers`, `request_body`, `request_trailers`,
        `response_headers`, `response_body`); False when the guest closed the stream or answered
        locally. A Pause waits until a later callback resumes, answers or closes the stream;
        raises StreamPausedTooLong when none did by the request's deadline."""
        callback, size = self._step_callback(stream, step)
        if callback is None:
            return True
        saved = self.stream, self.effective_context  # the stream its host calls work on, meanwhile
        self.stream, self.effective_context = stream, stream.context_id
        stream.resumed = False  # a continue before this callback paused anything resumes nothing
        try:
            action = callback(stream.context_id, size, 1 if end_of_stream else 0)
            # Calls the callback started: wait for them here, run their callbacks (which may
            # resume the stream with proxy_continue_stream, or answer with a local response).
            if self.pending_calls:
                self.drain_calls(self._wall_deadline)
            if action == _PAUSE and not _settled(stream):
                self._wait_paused(stream)
        except GuestTrap:
            self.cancel_calls()
            raise
        finally:
            self.stream, self.effective_context = saved
        if stream.local_response is not None or stream.closed:
            return False
        stream.resumed = False
        return True

    def _wait_paused(self, stream: StreamState) -> None:
        """The stream paused with nothing pending. Until a callback resumes, answers or closes it
        (and the calls it started are done), this thread serves the instance: call events, and the
        pool's root work, which comes here while the stream is paused (abi/paused.py). Guest code
        is not running meanwhile and the GIL is released."""
        wall_deadline = self._wall_deadline
        mailbox = PausedInstance(self._wake_up)
        self.waiting_stream = stream
        self.paused_streams.pause(mailbox)
        try:
            while self.pending_calls or not _settled(stream):
                work = self.paused_streams.next_work(mailbox)
                if work is None:
                    self._next_event(wall_deadline)
                    continue
                self._set_deadline(max(0.0, wall_deadline - time.monotonic()))
                work(self)  # root work: run_root_callback sees waiting_stream and runs it as part of the request
        finally:
            self.waiting_stream = None
            leftovers = self.paused_streams.resume(mailbox)
            background = self.on_background
            if background is not None:
                for work in leftovers:  # posted after the wait ended: for another instance
                    background(work)
        self._set_deadline(max(0.0, wall_deadline - time.monotonic()))

    def _wake_up(self) -> None:
        self._inbox.put((WAKE_UP, None))

    def select_context(self, context_id: int) -> bool:
        """proxy_set_effective_context: the root context, the stream whose callback runs, or the
        paused stream of this instance's request — which root work (a tick, a queue delivery)
        selects to resume or answer it. False for any other id."""
        if context_id == ROOT_CONTEXT_ID:
            self.effective_context = ROOT_CONTEXT_ID
            return True
        for stream in (self.stream, self.waiting_stream):
            if stream is not None and stream.context_id == context_id:
                self.stream, self.effective_context = stream, context_id
                return True
        return False

    def _step_callback(self, stream: StreamState, step: str) -> tuple[Callable[..., int | None] | None, int]:
        if step == "request_headers":
            return self._on_request_headers, len(stream.request_headers)
        if step == "request_body":
            return self._on_request_body, len(stream.request_body)
        if step == "request_trailers":
            return self._on_request_trailers, len(stream.request_trailers)
        if step == "response_headers":
            return self._on_response_headers, len(stream.response.headers)
        if step == "response_body":
            return self._on_response_body, len(stream.response_body)
        raise ValueError(f"unknown stream step {step!r}")

    def close_stream(self, stream: StreamState) -> None:
        """proxy_on_done, proxy_on_log, proxy_on_delete for the stream context."""
        saved = self.stream, self.effective_context
        self.stream, self.effective_context = stream, stream.context_id
        try:
            self._finish_context(stream.context_id, stream)
        finally:
            self.stream, self.effective_context = saved

    def close_expired_stream(self, stream: StreamState) -> None:
        """close_stream once the request's deadline passed while a stream was paused: the guest's
        finishing callbacks get a short budget of their own (no longer than the request's)."""
        self._set_deadline(min(EXPIRED_CLOSE_S, max(self._request_budget_s, EPOCH_TICK_SECONDS)))
        self.close_stream(stream)

    def _finish_context(self, ctx: int, stream: StreamState) -> None:
        if self._on_done is not None and not self._on_done(ctx):
            stream.done_pending = True  # the guest may call proxy_done; we finalize regardless
        if self._on_log is not None:
            self._on_log(ctx)
        if self._on_delete is not None:
            self._on_delete(ctx)

    # -- outbound calls (abi/outbound.py) ---------------------------------------------------------
    def start_http_call(self, upstream: str, headers: HeaderList, body: bytes, trailers: HeaderList,
                        timeout_s: float) -> int:
        token = next(self._tokens)
        future = self.services.http.dispatch(upstream, headers, body, trailers, timeout_s)
        future.add_done_callback(lambda done: self._inbox.put((token, http_result(done))))
        self.pending_calls[token] = PendingHttpCall(token, time.monotonic() + timeout_s + 1.0, future)
        return token

    def start_grpc_call(self, upstream: str, service: str, method: str, metadata: HeaderList, message: bytes,
                        timeout_s: float) -> int:
        """Raises ServiceError when the host cannot send the call."""
        token = next(self._tokens)
        handle = self.services.grpc.call(upstream, service, method, metadata, message, timeout_s,
                                         lambda event: self._inbox.put((token, event)))
        # The upstream enforces the timeout (DEADLINE_EXCEEDED); the host's own deadline is a backstop.
        self.pending_calls[token] = PendingGrpcCall(token, time.monotonic() + timeout_s + 1.0, handle)
        return token

    def start_grpc_stream(self, upstream: str, service: str, method: str, metadata: HeaderList) -> int:
        """Raises ServiceError when the host cannot open the stream."""
        token = next(self._tokens)
        handle = self.services.grpc.stream(upstream, service, method, metadata,
                                           lambda event: self._inbox.put((token, event)))
        self.pending_calls[token] = PendingGrpcStream(token, math.inf, handle)
        return token

    def drain_calls(self, wall_deadline: float) -> None:
        """Wait for the calls in flight (guest code is not running, the GIL is released) and hand
        each event, in arrival order, to its call, which runs the guest's callback — until no call
        is left. A call past its own deadline is stopped and told so; past `wall_deadline` the
        guest is interrupted (its caller then cancels what is still in flight)."""
        if not self.pending_calls:
            return
        while self.pending_calls:
            self._next_event(wall_deadline)
        self._set_deadline(max(0.0, wall_deadline - time.monotonic()))

    def _next_event(self, wall_deadline: float) -> None:
        """Wait for the next inbox event (or a call's own deadline) and hand it to its call. Past
        `wall_deadline`: interrupted while calls are in flight; StreamPausedTooLong with none (only
        a paused stream waits without calls)."""
        soonest = min(self.pending_calls.values(), key=lambda call: call.deadline) if self.pending_calls else None
        wait_until = wall_deadline if soonest is None else min(soonest.deadline, wall_deadline)
        try:
            token, event = self._inbox.get(timeout=max(0.0, wait_until - time.monotonic()))
        except queue.Empty:
            if time.monotonic() >= wall_deadline:
                if soonest is None:
                    raise StreamPausedTooLong("the stream paused and no callback resumed or answered it "
                                              "within the request's deadline") from None
                raise GuestTrap("request deadline passed while waiting for outbound calls",
                                interrupted=True) from None
            if soonest is None:
                return  # woke a moment early: wait again
            token, event = soonest.token, soonest.expire()
        call = self.pending_calls.get(token)
        # Else a wake-up (root work was posted), or a late event of a call cancelled, closed or expired.
        if call is not None and event is not None:
            call.deliver(self, event)

    def run_call_callback(self, name: str, token: int, *args: int, buffers: dict[int, bytes] | None = None,
                          maps: dict[int, HeaderList] | None = None,
                          status: tuple[int, bytes] | None = None) -> None:
        """Call `name(ROOT_CONTEXT_ID, token, *args)` with `buffers` and `maps` readable meanwhile."""
        if status is not None:
            self.last_status = status
        callback = self.guest.func(name)
        if callback is None:
            return
        previous = self.effective_context
        self.call_buffers, self.call_maps, self.effective_context = buffers or {}, maps or {}, ROOT_CONTEXT_ID
        try:
            callback(ROOT_CONTEXT_ID, token, *args)
        finally:
            self.call_buffers, self.call_maps, self.effective_context = {}, {}, previous

    def grpc_call(self, token: int) -> PendingGrpcCall | None:
        call = self.pending_calls.get(token)
        return call if isinstance(call, PendingGrpcCall) else None

    def cancel_calls(self) -> None:
        """Abandon every call in flight (the guest trapped, or the instance retires): no callback runs."""
        calls, self.pending_calls = list(self.pending_calls.values()), {}
        for call in calls:
            call.cancel()

    # -- root-context work outside requests (timers, queues) ------------------------------------------
    def set_tick_period(self, period_ms: int) -> None:
        self.tick_period_ms = period_ms

    def queue_listener(self) -> Callable[[int], None] | None:
        """What the shared queue calls on enqueue: deliver proxy_on_queue_ready to this function."""
        on_ready = self.guest.func("proxy_on_queue_ready")
        background = self.on_background
        if on_ready is None or background is None:
            return None
        return lambda queue_id: background(lambda vm: vm.run_root_callback("proxy_on_queue_ready", queue_id))

    def run_root_callback(self, name: str, *args: int, deadline_s: float = 10.0) -> None:
        """Call a root-context callback (proxy_on_tick, proxy_on_queue_ready) between requests — or,
        on an instance whose stream is paused, as part of that request: under its deadline and fuel,
        and a trap fails the request."""
        callback = self.guest.func(name)
        if callback is None or self.broken:
            return
        if self.waiting_stream is not None:
            saved = self.stream, self.effective_context
            # The root context's callback: the paused stream is reachable once it selects it.
            self.stream, self.effective_context = None, ROOT_CONTEXT_ID
            try:
                callback(ROOT_CONTEXT_ID, *args)
            finally:
                self.stream, self.effective_context = saved
            return
        wall_deadline = self._arm(deadline_s)
        try:
            callback(ROOT_CONTEXT_ID, *args)
            self.drain_calls(wall_deadline)
        except GuestTrap:
            self.broken = True
            self.cancel_calls()
            raise

    # -- logging helper ------------------------------------------------------------------------------
    def guest_log(self, level: int, message: str) -> None:
        self.log.log(_PY_LEVELS.get(level, logging.INFO), "[%s] %s", self.function_id, message)


_PAUSE = int(Action.PAUSE)


_TICKS: dict[float, int] = {}  # budget in seconds -> its epoch deadline in ticks


def _epoch_ticks(seconds: float) -> int:
    """The epoch deadline, in ticks, of a budget of `seconds` (at least one full tick: the current
    one may be about to end). Memoized: requests reuse a few budgets (the inline one, the function's);
    the remainders of paused waits are not worth keeping past the first 1,024."""
    ticks = _TICKS.get(seconds)
    if ticks is None:
        ticks = max(1, math.ceil(seconds / EPOCH_TICK_SECONDS)) + 1
        if len(_TICKS) < 1024:
            _TICKS[seconds] = ticks
    return ticks


def _settled(stream: StreamState) -> bool:
    """A paused stream was resumed, answered or closed."""
    return stream.resumed or stream.closed or stream.local_response is not None


ABI_MARKERS = {"proxy_abi_version_0_2_1": "0.2.1", "proxy_abi_version_0_2_0": "0.2.0",
               "proxy_abi_version_0_1_0": "0.1.0"}


def abi_version(has_export: Callable[[str], bool]) -> str:
    """The ABI version a module's marker export declares (the newest, if several), or "unknown"."""
    for marker, version in ABI_MARKERS.items():
        if has_export(marker):
            return version
    return "unknown"


_PY_LEVELS = {0: 5, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR, 5: logging.CRITICAL}

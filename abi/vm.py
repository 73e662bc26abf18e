"""One proxy-wasm plugin instance: its guest, its root context, and the per-request stream lifecycle.

The call order follows the proxy-wasm spec and Layotto's FaaS conventions (reference §4):
start-up `_initialize`/`_start` -> `proxy_get_id` -> root context -> `proxy_on_vm_start` ->
`proxy_on_configure`; per request: context create -> request headers -> request body (the query
string when the body is empty) -> trailers -> response headers/body -> done -> log -> delete.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import wasmtime

from .codes import Action
from .engine import EPOCH_TICK_SECONDS, Guest, GuestMemoryError, GuestTrap, HostLinker, WasmEngine
from .http import HttpRequest, HttpResponse
from .maps import HeaderList
from .services import HostServices, HttpCallResult

ROOT_CONTEXT_ID = 1

STREAM_CALLBACKS = (
    "proxy_on_context_create", "proxy_on_request_headers", "proxy_on_request_body", "proxy_on_request_trailers",
    "proxy_on_response_headers", "proxy_on_response_body", "proxy_on_response_trailers", "proxy_on_done",
    "proxy_on_log", "proxy_on_delete", "proxy_on_vm_start", "proxy_on_configure",
)


class StartupError(Exception):
    """The module could not be started as a plugin (trap, or a start-up callback returned false)."""


@dataclass
class PluginSettings:
    name: str  # the configured name; also the function id when the module has no proxy_get_id
    plugin_config: bytes = b""
    vm_config: bytes = b""
    root_id: str = ""
    vm_id: str = ""
    memory_limit_bytes: Optional[int] = None
    allowed_state_stores: Optional[tuple[str, ...]] = None  # None: every configured store
    allowed_invoke_targets: Optional[tuple[str, ...]] = None  # None: every function id
    allowed_upstreams: Optional[tuple[str, ...]] = None  # None: every configured upstream


@dataclass
class PendingCall:
    token: int
    context_id: int
    future: "concurrent.futures.Future[HttpCallResult]"
    deadline: float  # monotonic time after which the host gives up waiting


@dataclass
class StreamState:
    """Everything one HTTP stream context reads and writes through host imports."""

    context_id: int
    request: HttpRequest
    request_headers: HeaderList
    request_body: bytearray
    request_trailers: HeaderList
    response: HttpResponse = field(default_factory=HttpResponse)
    response_body: bytearray = field(default_factory=bytearray)
    local_response: Optional[HttpResponse] = None
    properties: dict[str, bytes] = field(default_factory=dict)
    closed: bool = False
    done_pending: bool = False
    resumed: bool = False  # proxy_continue_stream was called while the stream was paused


class ProxyWasmVM:
    """A started plugin instance. Not thread-safe: one request at a time (the pool guarantees it)."""

    def __init__(self, engine: WasmEngine, linker: HostLinker, module: wasmtime.Module,
                 settings: PluginSettings, services: HostServices):
        self.settings = settings
        self.services = services
        self.log = services.logger
        self.function_id = settings.name
        self.guest: Guest = engine.instantiate(linker, module, self, memory_limit_bytes=settings.memory_limit_bytes)
        self.call_data = bytearray()
        self.properties: dict[str, bytes] = {}  # set by the guest outside a stream
        self.stream: Optional[StreamState] = None
        self.effective_context = ROOT_CONTEXT_ID
        self._context_ids = itertools.count(ROOT_CONTEXT_ID + 1)
        self.broken = False
        self.abi_version = _abi_version(self.guest)
        # Outbound calls in flight, their results while a callback reads them, proxy_get_status.
        self.pending_calls: dict[int, PendingCall] = {}
        self._tokens = itertools.count(1)
        self.http_call_response: Optional[HttpCallResult] = None
        self.last_status: tuple[int, bytes] = (0, b"")
        self.tick_period_ms = 0
        self._wall_deadline = 0.0
        # Set by the host: run a root-context callback on some idle instance of this function.
        self.on_background: Optional[Callable[[Callable[["ProxyWasmVM"], None]], None]] = None
        cb = self.guest.func
        self._allocate = cb("proxy_on_memory_allocate") or cb("malloc")
        self._on_context_create = cb("proxy_on_context_create")
        self._on_request_headers = cb("proxy_on_request_headers")
        self._on_request_body = cb("proxy_on_request_body")
        self._on_request_trailers = cb("proxy_on_request_trailers")
        self._on_response_headers = cb("proxy_on_response_headers")
        self._on_response_body = cb("proxy_on_response_body")
        self._on_response_trailers = cb("proxy_on_response_trailers")
        self._on_done = cb("proxy_on_done")
        self._on_log = cb("proxy_on_log")
        self._on_delete = cb("proxy_on_delete")

    # -- guest memory helpers used by host imports ------------------------------------------------
    def allocate(self, data: bytes) -> int:
        """Copy `data` into a fresh guest allocation (the guest owns it afterwards)."""
        if self._allocate is None:
            raise GuestMemoryError("module exports neither proxy_on_memory_allocate nor malloc")
        ptr = self._allocate(len(data))
        if not ptr and data:
            raise GuestMemoryError(f"guest allocator returned 0 for {len(data)} bytes")
        if data:
            self.guest.write(ptr, data)
        return ptr or 0

    def return_bytes(self, data: bytes, ptr_ptr: int, size_ptr: int) -> None:
        """Hand `data` back through a (u8**, size_t*) out-parameter pair."""
        self.guest.check_writable((ptr_ptr, 4), (size_ptr, 4))
        ptr = self.allocate(data)
        self.guest.write_u32(ptr_ptr, ptr)
        self.guest.write_u32(size_ptr, len(data))

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

    def _set_deadline(self, seconds: float) -> None:
        self.guest.set_deadline(max(1, math.ceil(seconds / EPOCH_TICK_SECONDS)) + 1)

    # -- one request -------------------------------------------------------------------------------
    def handle(self, request: HttpRequest, deadline_s: float = 30.0) -> HttpResponse:
        """Run one HTTP exchange through the guest. Raises GuestTrap (the VM is then broken)."""
        if self.broken:
            raise GuestTrap("instance is broken")
        body = request.body if request.body else request.query.encode()
        stream = StreamState(context_id=next(self._context_ids), request=request,
                             request_headers=list(request.headers), request_body=bytearray(body),
                             request_trailers=list(request.trailers))
        previous_stream, previous_effective = self.stream, self.effective_context
        self.stream = stream
        self.effective_context = stream.context_id
        self._set_deadline(deadline_s)
        self._wall_deadline = time.monotonic() + deadline_s
        try:
            self._run_stream(stream)
        except GuestTrap:
            self.broken = True
            raise
        except BaseException:
            self.broken = True
            raise
        finally:
            self.stream = previous_stream
            self.effective_context = previous_effective
        return self._final_response(stream)

    def _run_stream(self, stream: StreamState) -> None:
        ctx = stream.context_id
        if self._on_context_create is not None:
            self._on_context_create(ctx, ROOT_CONTEXT_ID)
        has_body = bool(stream.request_body)
        has_trailers = bool(stream.request_trailers)
        steps: list[tuple[Optional[Callable[..., Optional[int]]], tuple[int, ...]]] = [
            (self._on_request_headers, (ctx, len(stream.request_headers), int(not has_body and not has_trailers))),
        ]
        if has_body:
            steps.append((self._on_request_body, (ctx, len(stream.request_body), int(not has_trailers))))
        if has_trailers:
            steps.append((self._on_request_trailers, (ctx, len(stream.request_trailers))))
        # A Pause with nothing outstanding ends the guest's part: the client gets what it produced.
        if self._run_steps(stream, steps) and stream.local_response is None:
            response_steps: list[tuple[Optional[Callable[..., Optional[int]]], tuple[int, ...]]] = [
                (self._on_response_headers, (ctx, len(stream.response.headers), int(not stream.response_body))),
            ]
            if stream.response_body:
                response_steps.append((self._on_response_body, (ctx, len(stream.response_body), 1)))
            self._run_steps(stream, response_steps)
        self._finish_context(ctx, stream)

    def _run_steps(self, stream: StreamState, steps: list) -> bool:
        """Call callbacks in order; False when one paused, closed the stream or replied locally."""
        for callback, args in steps:
            if callback is None:
                continue
            action = callback(*args)
            # http calls the callback started: wait for them here, run their callbacks (which may
            # resume the stream with proxy_continue_stream, or answer with a local response).
            self.drain_calls(self._wall_deadline)
            if stream.local_response is not None or stream.closed:
                return False
            if action == Action.PAUSE:
                if not stream.resumed:
                    return False
                stream.resumed = False
        return True

    def _finish_context(self, ctx: int, stream: StreamState) -> None:
        if self._on_done is not None and not self._on_done(ctx):
            stream.done_pending = True  # the guest may call proxy_done; we finalize regardless
        if self._on_log is not None:
            self._on_log(ctx)
        if self._on_delete is not None:
            self._on_delete(ctx)

    def _final_response(self, stream: StreamState) -> HttpResponse:
        if stream.local_response is not None:
            return stream.local_response
        response = stream.response
        response.body = bytes(stream.response_body)
        status_header = [v for k, v in response.headers if k == ":status"]
        if status_header and status_header[-1].isdigit():
            response.status = int(status_header[-1])
        response.headers = [(k, v) for k, v in response.headers if not k.startswith(":")]
        return response

    # -- outbound calls --------------------------------------------------------------------------
    def start_http_call(self, upstream: str, headers: HeaderList, body: bytes, trailers: HeaderList,
                        timeout_s: float) -> int:
        token = next(self._tokens)
        future = self.services.http.dispatch(upstream, headers, body, trailers, timeout_s)
        # Calls belong to the root context, as in Envoy: the response callback gets the root
        # context id, and the guest switches back with proxy_set_effective_context.
        self.pending_calls[token] = PendingCall(token, ROOT_CONTEXT_ID, future, time.monotonic() + timeout_s + 1.0)
        return token

    def drain_calls(self, wall_deadline: float) -> None:
        """Wait for the calls in flight (guest code is not running meanwhile) and deliver each
        result to `proxy_on_http_call_response`."""
        on_response = self.guest.func("proxy_on_http_call_response")
        while self.pending_calls:
            futures = {call.future: call for call in self.pending_calls.values()}
            wait_until = min(min(c.deadline for c in futures.values()), wall_deadline)
            done, _ = concurrent.futures.wait(futures, timeout=max(0.0, wait_until - time.monotonic()),
                                              return_when=concurrent.futures.FIRST_COMPLETED)
            if not done:
                if time.monotonic() >= wall_deadline:
                    raise GuestTrap("request deadline passed while waiting for http calls", interrupted=True)
                call = min(futures.values(), key=lambda c: c.deadline)
                call.future.cancel()
                result = HttpCallResult(0, [], b"", error="timeout")
            else:
                call = futures[next(iter(done))]
                result = call.future.result()
            del self.pending_calls[call.token]
            self._deliver_http_response(on_response, call, result)
        self._set_deadline(max(0.0, wall_deadline - time.monotonic()))

    def _deliver_http_response(self, on_response: Optional[Callable[..., Optional[int]]], call: PendingCall,
                               result: HttpCallResult) -> None:
        self.http_call_response = result
        self.last_status = (result.status, (result.error or "").encode())
        previous = self.effective_context
        self.effective_context = call.context_id
        try:
            if on_response is not None:
                on_response(call.context_id, call.token, len(result.headers), len(result.body), len(result.trailers))
        finally:
            self.http_call_response = None
            self.effective_context = previous

    # -- root-context work outside requests (timers, queues) ------------------------------------------
    def set_tick_period(self, period_ms: int) -> None:
        self.tick_period_ms = period_ms

    def queue_listener(self) -> Optional[Callable[[int], None]]:
        """What the shared queue calls on enqueue: deliver proxy_on_queue_ready to this function."""
        on_ready = self.guest.func("proxy_on_queue_ready")
        background = self.on_background
        if on_ready is None or background is None:
            return None
        return lambda queue_id: background(lambda vm: vm.run_root_callback("proxy_on_queue_ready", queue_id))

    def run_root_callback(self, name: str, *args: int, deadline_s: float = 10.0) -> None:
        """Call a root-context callback (proxy_on_tick, proxy_on_queue_ready) between requests."""
        callback = self.guest.func(name)
        if callback is None or self.broken:
            return
        self._set_deadline(deadline_s)
        try:
            callback(ROOT_CONTEXT_ID, *args)
            self.drain_calls(time.monotonic() + deadline_s)
        except GuestTrap:
            self.broken = True
            raise

    # -- logging helper ------------------------------------------------------------------------------
    def guest_log(self, level: int, message: str) -> None:
        self.log.log(_PY_LEVELS.get(level, logging.INFO), "[%s] %s", self.function_id, message)


def _abi_version(guest: Guest) -> str:
    for version in ("0_2_1", "0_2_0", "0_1_0"):
        if guest.has_export(f"proxy_abi_version_{version}"):
            return version.replace("_", ".")
    return "unknown"


_PY_LEVELS = {0: 5, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR, 5: logging.CRITICAL}

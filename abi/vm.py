"""One proxy-wasm plugin instance: its guest, its root context, and the per-request stream lifecycle.

The call order follows the proxy-wasm spec and Layotto's FaaS conventions (reference §4):
start-up `_initialize`/`_start` -> `proxy_get_id` -> root context -> `proxy_on_vm_start` ->
`proxy_on_configure`; per request: context create -> request headers -> request body (the query
string when the body is empty) -> trailers -> response headers/body -> done -> log -> delete.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import wasmtime

from .codes import Action
from .engine import EPOCH_TICK_SECONDS, Guest, GuestMemoryError, GuestTrap, HostLinker, WasmEngine
from .http import HttpRequest, HttpResponse
from .maps import HeaderList
from .services import HostServices

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
            if stream.local_response is not None or stream.closed:
                return False
            if action == Action.PAUSE:
                return False
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

    # -- logging helper ------------------------------------------------------------------------------
    def guest_log(self, level: int, message: str) -> None:
        self.log.log(_PY_LEVELS.get(level, logging.INFO), "[%s] %s", self.function_id, message)


_PY_LEVELS = {0: 5, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR, 5: logging.CRITICAL}

"""One started component of the function world, in its own store: what a pool holds for a component
function, beside `abi.vm.ProxyWasmVM` for a proxy-wasm module.

It offers the surface the pool and the call path use: `function_id`, `broken` (set when a call
trapped, ran past its deadline or failed in the host: the pool replaces the instance on release),
`close()`, and `handle(request, deadline_s)` (host/functions/dispatch.py calls it instead of
running the proxy-wasm filter chain). Limits are the module's: the epoch deadline per call (the
engine's ticker interrupts it), fuel when the engine meters it, the linear-memory cap of the store.
"""

from __future__ import annotations

import ctypes
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import wasmtime
import wasmtime.component as wc
from wasmtime import _ffi as ffi

from abi import HostServices, HttpRequest, HttpResponse, PluginSettings
from abi.engine import EPOCH_TICK_SECONDS, UNLIMITED_FUEL, GuestTrap
from host.functions.components import output
from host.functions.components._values import Val, address, delete, get_response, get_string, put_request
from host.functions.components.linker import ACTIVE, ComponentLinker
from host.functions.components.signature import export_problems
from host.functions.components.world import ABI_LABEL, FUNCTION_ID, HANDLE, HANDLER, IDENTITY, provided_import

_INTERRUPTED = "wasm trap: interrupt"
_OUT_OF_FUEL = "wasm trap: all fuel consumed by WebAssembly"
_NO_DEADLINE = 1 << 62


class ComponentRefused(Exception):
    """A component this host cannot run as a function, and why."""


@dataclass(frozen=True)
class ComponentCode:
    """A compiled component checked against the world, with its exports looked up once."""

    linker: ComponentLinker
    component: wc.Component
    handle: wc.ExportIndex
    identity: wc.ExportIndex | None

    @classmethod
    def prepare(cls, linker: ComponentLinker, component: wc.Component) -> ComponentCode:
        """Raises ComponentRefused naming what is missing or not provided."""
        missing = [name for name in component.type.imports(linker.engine.engine) if not provided_import(name)]
        if missing:
            raise ComponentRefused("imports this host does not provide: " + ", ".join(missing))
        handle = _export(component, HANDLER, HANDLE)
        if handle is None:
            raise ComponentRefused(f"exports no {HANDLER}#{HANDLE} (is it built for the world in sdk-guest/wit?)")
        problems = export_problems(linker.engine.engine, component)
        if problems:
            raise ComponentRefused("; ".join(problems))
        return cls(linker, component, handle, _export(component, IDENTITY, FUNCTION_ID))


def _export(component: wc.Component, interface: str, name: str) -> wc.ExportIndex | None:
    scope = component.get_export_index(interface)
    return component.get_export_index(name, scope) if scope is not None else None


def describe_error(error: BaseException) -> str:
    """The useful part of a wasmtime error: the root cause of a trap (the backtrace is left out),
    the first line and the cause of any other error."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    first, last = lines[0], lines[-1]
    if first.startswith("error while executing") or first == last:
        return last
    return f"{first} ({last})"


def trap_from_error(error: wasmtime.WasmtimeError) -> GuestTrap:
    """As abi.engine does for modules: interruption and fuel are told by the exact root cause (the
    last line, after the backtrace, whose guest-chosen names could hold any words), never by words
    found elsewhere in the text."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    cause = lines[-1] if lines else ""
    exit_code = error.code if isinstance(error, wasmtime.ExitTrap) else None
    return GuestTrap(describe_error(error), interrupted=cause == _INTERRUPTED, out_of_fuel=cause == _OUT_OF_FUEL,
                     exit_code=exit_code)


class ComponentInstance:
    """Not thread-safe: one call at a time (the pool guarantees it)."""

    abi_version = ABI_LABEL
    tick_period_ms = 0  # components have no timers (nor a root context)

    def __init__(self, code: ComponentCode, settings: PluginSettings, services: HostServices,
                 start_deadline_s: float = 10.0):
        self.code = code
        self.settings = settings
        self.services = services
        self.function_id = settings.name
        self.broken = False
        self.pending_error: BaseException | None = None
        self.deadline_at = 0.0
        engine = code.linker.engine
        self._fuel = engine.fuel_metering
        self.store = wasmtime.Store(engine.engine)
        if settings.memory_limit_bytes is not None:
            self.store.set_limits(memory_size=settings.memory_limit_bytes)
        if self._fuel:
            self.store.set_fuel(UNLIMITED_FUEL)
        self._streams = self._connect_output(services.logger)
        self._context = self.store._context()
        self._arm(start_deadline_s)
        previous, ACTIVE.instance = ACTIVE.instance, self
        try:
            instance = code.linker.instantiate(self.store, code.component)
        except wasmtime.WasmtimeError as error:
            self.close()
            raise trap_from_error(error) from None
        finally:
            ACTIVE.instance = previous
        handle = instance.get_func(self.store, code.handle)
        if handle is None:
            self.close()
            raise GuestTrap(f"{HANDLER}#{HANDLE} is not a function")
        self._handle = handle
        if code.identity is not None:
            self.function_id = self._reported_id(instance, code.identity, start_deadline_s)
        for stream in self._streams:
            stream.label = self.function_id
        self.store.set_epoch_deadline(_NO_DEADLINE)

    def _connect_output(self, logger: logging.Logger) -> list[output.OutputStream]:
        """stdout (info) and stderr (warning) into the guest log (host/functions/components/output.py)."""
        collector = output.collector()
        wasi = wasmtime.WasiConfig()
        out_path, out_fd, out_stream = collector.open(logger, logging.INFO, self.function_id)
        err_path, err_fd, err_stream = collector.open(logger, logging.WARNING, self.function_id)
        try:
            wasi.stdout_file = out_path
            wasi.stderr_file = err_path
        finally:
            output.close_fd(out_fd)
            output.close_fd(err_fd)
        self.store.set_wasi(wasi)
        return [out_stream, err_stream]

    def _reported_id(self, instance: wc.Instance, index: wc.ExportIndex, deadline_s: float) -> str:
        func = instance.get_func(self.store, index)
        if func is None:
            self.close()
            raise GuestTrap(f"{IDENTITY}#{FUNCTION_ID} is not a function")
        result = Val()
        self._arm(deadline_s)
        try:
            self._call(func, None, 0, result, 1)
            try:
                return get_string(address(result))
            finally:
                delete(address(result))
        except BaseException:
            self.close()
            raise

    # -- requests --------------------------------------------------------------------------------
    def handle(self, request: HttpRequest, deadline_s: float) -> HttpResponse:
        """Run the function on `request` within `deadline_s` seconds. Raises GuestTrap (trap, deadline,
        fuel) or the host error a runtime call met; either way the instance is closed afterwards."""
        args = (Val * 1)()
        headers = [(name, value) for name, value in request.headers if not name.startswith(":")]
        put_request(address(args), request.method, request.path, headers, request.body)
        result = Val()
        try:
            self._arm(deadline_s)
            self._call(self._handle, args, 1, result, 1)
            try:
                status, response_headers, body = get_response(address(result))
            finally:
                delete(address(result))
        except BaseException:
            # Never used again: free the store now (the pool drops a broken instance without closing it).
            delete(address(args))
            self.close()
            raise
        delete(address(args))
        return HttpResponse(status=status, headers=response_headers, body=body)

    def _arm(self, seconds: float) -> None:
        self.deadline_at = time.monotonic() + seconds
        self.store.set_epoch_deadline(max(1, math.ceil(seconds / EPOCH_TICK_SECONDS)) + 1)
        if self._fuel:
            self.store.set_fuel(self.settings.fuel_per_request or UNLIMITED_FUEL)

    def _call(self, func: wc.Func, args: Any, nargs: int, result: Val, nresults: int) -> None:
        """One export call through the C API (the GIL is released while the guest runs)."""
        previous, ACTIVE.instance = ACTIVE.instance, self
        try:
            error = ffi.wasmtime_component_func_call(ctypes.byref(func._func), self._context, args, nargs,
                                                     ctypes.byref(result), nresults)
        finally:
            ACTIVE.instance = previous
        if error:
            failure = wasmtime.WasmtimeError._from_ptr(error)
            pending, self.pending_error = self.pending_error, None
            if pending is not None:
                raise pending
            raise trap_from_error(failure)
        error = ffi.wasmtime_component_func_post_return(ctypes.byref(func._func), self._context)
        if error:
            raise trap_from_error(wasmtime.WasmtimeError._from_ptr(error))

    # -- life cycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Free the store (its output pipes end with it). Idempotent."""
        self.broken = True
        store, self.store = self.store, None  # type: ignore[assignment]
        if store is not None:
            store.close()

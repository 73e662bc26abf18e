"""The native back-end: the fast back-end's unchecked wasmtime calls, with each crossing in C.

`abi.engine._native` (built from `_native.c` when the package is installed) makes guest calls and
host-import trampolines without ctypes: a guest call is a vectorcall object over a pre-allocated
raw-value buffer, a host import one C callback that vectorcalls its implementation, and the epoch
callback that enforces deadlines is C too (it needs no GIL). Export lookup and error conversion are
the fast back-end's (`_ctypes_backend.FastGuest`).

The hottest host imports (FAST_PATHS) also have a C fast path in the trampoline for their common
case, reading guest memory directly; anything else falls through to the Python implementation, so
behaviour is the same either way. `WASM_FAAS_NATIVE_FAST_IMPORTS=0` (or FAST_IMPORTS = False), read
when a linker is built, turns them off (to compare, or to rule them out).
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable
from ctypes import CFUNCTYPE, c_size_t, c_void_p
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

from abi.engine import _native  # type: ignore[attr-defined]  # ImportError when the extension was not built
from abi.engine._ctypes_backend import _ERROR_PTR, _TRAP_PTR, FastGuest, trap_from_wasmtime
from abi.engine._guest import EPOCH_TICK_SECONDS, I32, GuestMemoryError, HostFunction

_native.configure(
    ctypes.cast(ffi.dll.wasmtime_func_call_unchecked, c_void_p).value,
    ctypes.cast(ffi.dll.wasmtime_trap_new, c_void_p).value,
    ctypes.cast(ffi.dll.wasmtime_error_new, c_void_p).value,
    ctypes.sizeof(ffi.wasmtime_func_t), ctypes.sizeof(ffi.wasmtime_val_raw_t), GuestMemoryError,
    ctypes.cast(ffi.dll.wasmtime_memory_data, c_void_p).value,
    ctypes.cast(ffi.dll.wasmtime_memory_data_size, c_void_p).value,
    ctypes.sizeof(ffi.wasmtime_memory_t))

_TRAMPOLINE = _native.trampoline_address()
_EPOCH_CALLBACK = _native.epoch_callback_address()
_set_epoch_callback = CFUNCTYPE(None, c_void_p, c_void_p, c_void_p, c_void_p)(
    ("wasmtime_store_epoch_deadline_callback", ffi.dll))
_define_unchecked = CFUNCTYPE(c_void_p, c_void_p, ctypes.c_char_p, c_size_t, ctypes.c_char_p, c_size_t,
                              c_void_p, c_void_p, c_void_p, c_void_p)(
    ("wasmtime_linker_define_func_unchecked", ffi.dll))

# HostImport objects are the trampoline's `env`: they must outlive every linker that uses them.
_KEEP_ALIVE: list[Any] = []


def _kinds(types: Any) -> bytes:
    """One byte per value type, as `_native` reads them: 0 for i32, 1 for i64."""
    return bytes(0 if str(kind) == I32 else 1 for kind in types)


def _result_kind(types: Any) -> int:
    """-1 for no result, else the kind of the first (proxy-wasm functions have at most one)."""
    return _kinds(types)[0] if types else -1


# (module, name) -> (the C fast path of that import, its number of i32 parameters); the
# implementations are in abi/imports/header_maps.py, buffers.py and stream_control.py.
FAST_PATHS = {("env", "proxy_get_header_map_value"): (_native.FAST_GET_HEADER_MAP_VALUE, 5),
              ("env", "proxy_add_header_map_value"): (_native.FAST_ADD_HEADER_MAP_VALUE, 5),
              ("env", "proxy_set_buffer_bytes"): (_native.FAST_SET_BUFFER_BYTES, 5),
              ("env", "proxy_get_buffer_status"): (_native.FAST_GET_BUFFER_STATUS, 3),
              ("env", "proxy_get_buffer_bytes"): (_native.FAST_GET_BUFFER_BYTES, 5),
              ("env", "proxy_send_local_response"): (_native.FAST_SEND_LOCAL_RESPONSE, 8)}
FAST_IMPORTS = True
_fast_configured = False


def _fast_path(host: HostFunction) -> int:
    """The fast path for `host` (0: none), configuring the paths' constants on first use."""
    global _fast_configured
    fast, params = FAST_PATHS.get((host.module, host.name), (0, 0))
    if (not fast or not FAST_IMPORTS or os.environ.get("WASM_FAAS_NATIVE_FAST_IMPORTS") == "0"
            or (tuple(host.params), tuple(host.results)) != ((I32,) * params, (I32,))):
        return 0
    if not _fast_configured:
        # Imported here: abi.limits imports abi.engine, which is loading this module.
        from abi.codes import BufferType, MapType, Status
        from abi.http import HttpResponse
        from abi.limits import DEFAULT_LIMIT_BYTES, ENTRY_COST, MAX_MAP_ENTRIES

        _native.configure_fast(int(Status.OK), int(Status.NOT_FOUND), MAX_MAP_ENTRIES, ENTRY_COST,
                               DEFAULT_LIMIT_BYTES, int(MapType.HTTP_REQUEST_HEADERS),
                               int(MapType.HTTP_RESPONSE_HEADERS), int(BufferType.HTTP_REQUEST_BODY),
                               int(BufferType.HTTP_RESPONSE_BODY), HttpResponse)
        _fast_configured = True
    return fast


def define(linker: wasmtime.Linker, host: HostFunction) -> None:
    target = _native.HostImport(host.impl, host.name, _kinds(host.params), _result_kind(host.results),
                                host.on_memory_error, _fast_path(host))
    functype = host.functype()
    _KEEP_ALIVE.append((target, functype))
    module, name = host.module.encode(), host.name.encode()
    error = _define_unchecked(ctypes.cast(linker.ptr(), c_void_p).value, module, len(module), name, len(name),
                              ctypes.cast(functype.ptr(), c_void_p).value, _TRAMPOLINE, id(target), None)
    if error:
        raise wasmtime.WasmtimeError._from_ptr(ctypes.cast(error, _ERROR_PTR))


class NativeGuest(FastGuest):
    def __init__(self, store: wasmtime.Store, instance: wasmtime.Instance, owner: Any,
                 signatures: dict[str, Any] | None = None):
        self._state = _native.GuestState(self, owner)
        self._state.deadline_at = float("inf")
        super().__init__(store, instance, owner, signatures)
        if self._memory is not None:  # the fast host imports read and write it directly
            self._state.set_memory(self._context, bytes(self._memory._memory))

    def _install_epoch_callback(self, store: wasmtime.Store) -> None:
        # The C callback reads the deadline from the GuestState, which lives as long as the guest.
        _set_epoch_callback(ctypes.cast(store.ptr(), c_void_p).value, _EPOCH_CALLBACK, id(self._state), None)

    def set_deadline(self, epoch_ticks: int) -> None:
        self._state.deadline_at = time.monotonic() + epoch_ticks * EPOCH_TICK_SECONDS

    @property
    def hold_gil(self) -> bool:
        return self._state.hold_gil

    @hold_gil.setter
    def hold_gil(self, value: bool) -> None:
        self._state.hold_gil = value and self.may_hold_gil

    def _signature(self, export: wasmtime.Func) -> tuple[bytes, int]:
        """(parameter kinds, result kind) as `_native` reads them."""
        functype = export.type(self.store)
        return _kinds(functype.params), _result_kind(functype.results)

    def _make_call(self, export: wasmtime.Func, signature: Any) -> Callable[..., int | None]:
        params, result = signature
        return _native.GuestCall(self._state, self._context, bytes(export._func), params, result)

    def _fail_native(self, error: int | None, trap: int | None) -> None:
        """Called by a GuestCall whose guest trapped or failed: raise the matching GuestTrap."""
        if trap:
            failure: Exception = wasmtime.Trap._from_ptr(ctypes.cast(trap, _TRAP_PTR))
        else:
            failure = wasmtime.WasmtimeError._from_ptr(ctypes.cast(error or 0, _ERROR_PTR))
        self.raise_pending()
        raise trap_from_wasmtime(failure)

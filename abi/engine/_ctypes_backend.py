"""The fast back-end: wasmtime's unchecked C entry points called through ctypes.

wasmtime-py's `Func.__call__` re-reads the function type, converts every value through `Val`
and allocates on each call; its host-function trampoline does the same in reverse. Here every
export gets a pre-built argument buffer and slot views, and every host import a trampoline
that unpacks all arguments with one `struct` call. Only this module touches wasmtime-py
internals (`_ffi`, `_func`, `_memory`); it is checked against the pinned wasmtime version and
`abi.engine` falls back to the public back-end when anything here is missing.
"""

from __future__ import annotations

import ctypes
import struct
import time
from collections.abc import Callable
from ctypes import CFUNCTYPE, c_size_t, c_uint32, c_uint64, c_void_p
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime._extern import wrap_extern

from abi.engine._guest import (
    ACTIVE,
    EPOCH_TICK_SECONDS,
    I32,
    GuestBase,
    GuestMemoryError,
    HostFunction,
    trap_from_wasmtime,
)

_RAW_SIZE = ctypes.sizeof(ffi.wasmtime_val_raw_t)  # 16: each argument/result slot

# Our own prototypes over the same symbols, with plain addresses instead of typed pointers:
# ctypes converts an int much faster than it builds POINTER objects.
_CALLBACK = CFUNCTYPE(c_size_t, c_void_p, c_void_p, c_void_p, c_size_t)
_call_unchecked = CFUNCTYPE(c_void_p, c_void_p, c_void_p, c_void_p, c_size_t, c_void_p)(
    ("wasmtime_func_call_unchecked", ffi.dll))
# The same call keeping the GIL, for guests whose calls take microseconds: releasing and re-taking
# the GIL around each of them costs more than the call, and waits behind the event loop.
_call_unchecked_holding_gil = ctypes.PYFUNCTYPE(c_void_p, c_void_p, c_void_p, c_void_p, c_size_t, c_void_p)(
    ("wasmtime_func_call_unchecked", ffi.dll))
_EPOCH_CALLBACK = CFUNCTYPE(c_size_t, c_void_p, c_void_p, c_void_p, c_void_p)
_set_epoch_callback = CFUNCTYPE(None, c_void_p, _EPOCH_CALLBACK, c_void_p, c_void_p)(
    ("wasmtime_store_epoch_deadline_callback", ffi.dll))
_error_new = CFUNCTYPE(c_void_p, ctypes.c_char_p)(("wasmtime_error_new", ffi.dll))
_CONTINUE = 0  # wasmtime_update_deadline_kind_t: keep running with a new deadline
_define_unchecked = CFUNCTYPE(c_void_p, c_void_p, ctypes.c_char_p, c_size_t, ctypes.c_char_p, c_size_t,
                              c_void_p, _CALLBACK, c_void_p, c_void_p)(
    ("wasmtime_linker_define_func_unchecked", ffi.dll))
_trap_new = CFUNCTYPE(c_void_p, ctypes.c_char_p, c_size_t)(("wasmtime_trap_new", ffi.dll))

_TRAP_PTR = ctypes.POINTER(ffi.wasm_trap_t)
_ERROR_PTR = ctypes.POINTER(ffi.wasmtime_error_t)

# ctypes callback objects must outlive every linker that references them.
_KEEP_ALIVE: list[Any] = []


def _slot_format(kind: str) -> str:
    return "I12x" if kind == I32 else "q8x"


def _make_trampoline(host: HostFunction) -> Any:
    """A C callback that unpacks the raw argument slots, calls `impl(owner, *args)`, stores the result."""
    fmt = "<" + "".join(_slot_format(k) for k in host.params)
    unpack = struct.Struct(fmt).unpack
    size = struct.calcsize(fmt)
    impl = host.impl
    has_result = bool(host.results)
    result_is_i64 = has_result and host.results[0] != I32
    on_memory_error = host.on_memory_error
    string_at = ctypes.string_at
    u32_at = c_uint32.from_address
    u64_at = c_uint64.from_address

    def trampoline(_env: int, _caller: int, args: int, _nargs: int) -> int:
        guest = ACTIVE.guest
        try:
            values = unpack(string_at(args, size)) if size else ()
            try:
                result = impl(guest.owner, *values)  # type: ignore[union-attr]
            except GuestMemoryError:
                if on_memory_error is None:
                    raise
                result = on_memory_error
            if has_result:
                if result_is_i64:
                    u64_at(args).value = result & 0xFFFFFFFFFFFFFFFF
                else:
                    u32_at(args).value = result & 0xFFFFFFFF
            return 0
        except BaseException as error:  # noqa: BLE001 - any failure becomes a trap, re-raised after the call
            if guest is not None:
                guest.pending_error = error
            message = f"host function {host.name} failed: {error}".encode()
            return _trap_new(message, len(message)) or 0

    callback = _CALLBACK(trampoline)
    _KEEP_ALIVE.append(callback)
    return callback


def define(linker: wasmtime.Linker, host: HostFunction) -> None:
    callback = _make_trampoline(host)
    functype = host.functype()
    _KEEP_ALIVE.append(functype)
    module, name = host.module.encode(), host.name.encode()
    linker_ptr = ctypes.cast(linker.ptr(), c_void_p).value
    functype_ptr = ctypes.cast(functype.ptr(), c_void_p).value
    error = _define_unchecked(linker_ptr, module, len(module), name, len(name), functype_ptr, callback, None, None)
    if error:
        raise wasmtime.WasmtimeError._from_ptr(ctypes.cast(error, _ERROR_PTR))


class FastGuest(GuestBase):
    """Deadlines are enforced by an epoch callback that runs every tick while the guest runs, not
    by a trap at a fixed epoch: a guest call that keeps the GIL (`hold_gil`) yields it there, so
    it stalls other Python threads for one tick at most; past the deadline the callback ends it."""

    def __init__(self, store: wasmtime.Store, instance: wasmtime.Instance, owner: Any,
                 signatures: dict[str, Any] | None = None):
        super().__init__(store, instance, owner, signatures)
        self._context = ctypes.cast(store._context(), c_void_p).value
        self._deadline_at = float("inf")
        self._install_epoch_callback(store)
        # The callback runs at the first tick the guest sees and then at every tick (it asks for
        # one more each time), so a new deadline is only a new `_deadline_at`: no call into wasmtime.
        store.set_epoch_deadline(1)

    def _install_epoch_callback(self, store: wasmtime.Store) -> None:
        self._epoch_callback = _EPOCH_CALLBACK(self._on_epoch)
        _set_epoch_callback(ctypes.cast(store.ptr(), c_void_p).value, self._epoch_callback, None, None)

    def set_deadline(self, epoch_ticks: int) -> None:
        self._deadline_at = time.monotonic() + epoch_ticks * EPOCH_TICK_SECONDS

    def _on_epoch(self, _context: int, _data: int, delta_ptr: int, kind_ptr: int) -> int:
        if time.monotonic() >= self._deadline_at:
            return _error_new(b"wasm trap: interrupt (deadline exceeded)") or 0
        if self.hold_gil:
            time.sleep(0)  # let the event loop and other guests run between ticks
        c_uint64.from_address(delta_ptr).value = 1
        ctypes.c_uint8.from_address(kind_ptr).value = _CONTINUE
        return 0

    def _find_export(self, name: str) -> Any:
        """One export by name (wasmtime_instance_export_get), without enumerating all of them."""
        encoded = name.encode()
        item = ffi.wasmtime_extern_t()
        found = ffi.wasmtime_instance_export_get(self.store._context(), ctypes.byref(self.instance._instance),
                                                 encoded, len(encoded), ctypes.byref(item))
        return wrap_extern(item) if found else None

    def _make_call(self, export: wasmtime.Func, signature: Any) -> Callable[..., int | None]:
        """`signature`: (parameter kinds, result kinds) from GuestBase._signature."""
        params, results = signature
        slots_needed = max(len(params), len(results), 1)
        buffer = (ctypes.c_ubyte * (_RAW_SIZE * slots_needed))()
        base = ctypes.addressof(buffer)
        slots = [(c_uint32 if kind == I32 else ctypes.c_int64).from_address(base + _RAW_SIZE * i)
                 for i, kind in enumerate(params)]
        result_slot = (c_uint32 if not results or results[0] == I32 else ctypes.c_int64).from_address(base)
        func_struct = ffi.wasmtime_func_t()
        ctypes.memmove(ctypes.addressof(func_struct), ctypes.addressof(export._func), ctypes.sizeof(func_struct))
        func_addr = ctypes.addressof(func_struct)
        trap_slot = c_void_p()
        trap_addr = ctypes.addressof(trap_slot)
        context = self._context
        guest = self
        active = ACTIVE
        fail = self._fail
        read_result = result_slot if results else None

        def invoke() -> int | None:
            previous = active.guest
            active.guest = guest
            raw = _call_unchecked_holding_gil if guest.hold_gil else _call_unchecked
            error = raw(context, func_addr, base, slots_needed, trap_addr)
            active.guest = previous
            if error or trap_slot.value:
                fail(error, trap_slot)
            return read_result.value if read_result is not None else None

        # Arity-specific entry points: the common callbacks take 0-3 arguments, and a generic
        # *args loop costs as much as the call itself.
        if not slots:
            call = invoke
        elif len(slots) == 1:
            (s0,) = slots

            def call(a: int, *_: int) -> int | None:  # type: ignore[misc]
                s0.value = a
                return invoke()
        elif len(slots) == 2:
            s0, s1 = slots

            def call(a: int, b: int, *_: int) -> int | None:  # type: ignore[misc]
                s0.value = a
                s1.value = b
                return invoke()
        elif len(slots) == 3:
            s0, s1, s2 = slots

            def call(a: int, b: int, c: int, *_: int) -> int | None:  # type: ignore[misc]
                s0.value = a
                s1.value = b
                s2.value = c
                return invoke()
        else:
            def call(*args: int) -> int | None:
                for slot, value in zip(slots, args, strict=False):
                    slot.value = value
                return invoke()

        call._keep = (buffer, func_struct, trap_slot, slots)  # type: ignore[attr-defined]
        return call

    def _fail(self, error: int | None, trap_slot: c_void_p) -> None:
        """Turn a failed call into an exception; a host import's own exception takes precedence."""
        if trap_slot.value:
            failure: Exception = wasmtime.Trap._from_ptr(ctypes.cast(trap_slot.value, _TRAP_PTR))
            trap_slot.value = None
        else:
            failure = wasmtime.WasmtimeError._from_ptr(ctypes.cast(error or 0, _ERROR_PTR))
        self.raise_pending()
        raise trap_from_wasmtime(failure)


def self_check() -> None:
    """Fail loudly if the wasmtime-py internals this module relies on are not there."""
    for name in ("wasmtime_val_raw_t", "wasmtime_func_t", "wasm_trap_t", "wasmtime_error_t", "dll"):
        if not hasattr(ffi, name):
            raise ImportError(f"wasmtime._ffi.{name} missing")
    if _RAW_SIZE != 16:
        raise ImportError(f"unexpected wasmtime_val_raw_t size {_RAW_SIZE}")

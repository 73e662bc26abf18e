"""Pieces shared by the three engine back-ends (native, ctypes, public): host-function descriptions,
errors, guest memory access."""

from __future__ import annotations

import ctypes
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import wasmtime

I32 = "i32"
I64 = "i64"
EPOCH_TICK_SECONDS = 0.01  # the ticker advances the engine epoch this often

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class GuestMemoryError(Exception):
    """A guest pointer/length pair points outside linear memory (or allocation failed)."""


class GuestTrap(Exception):
    """The guest trapped (or was interrupted, or exited): the instance must not be used again."""

    def __init__(self, message: str, *, interrupted: bool = False, exit_code: int | None = None,
                 out_of_fuel: bool = False):
        super().__init__(message)
        self.interrupted = interrupted
        self.exit_code = exit_code
        self.out_of_fuel = out_of_fuel


class GuestExit(Exception):
    """Raised by `proc_exit`: it ends the current guest call as a trap carrying the exit code."""

    def __init__(self, code: int):
        super().__init__(f"guest called proc_exit({code})")
        self.code = code


@dataclass(frozen=True)
class HostFunction:
    """One host import: `impl(owner, *args)` where `owner` is the object given to `instantiate`.

    `on_memory_error` is what the guest receives when `impl` raises GuestMemoryError (the ABI's
    InvalidMemoryAccess status, or WASI's FAULT errno); None means such an error traps.
    """

    module: str
    name: str
    params: tuple[str, ...]
    results: tuple[str, ...]
    impl: Callable[..., Any]
    on_memory_error: int | None = None
    pure: bool = False  # neither blocks nor has effects outside the instance (abi/imports/_registry.py)
    reads: bool = False  # blocks, but only to read: a run cut short in it may be replayed

    def functype(self) -> wasmtime.FuncType:
        kinds = {I32: wasmtime.ValType.i32(), I64: wasmtime.ValType.i64()}
        return wasmtime.FuncType([kinds[p] for p in self.params], [kinds[r] for r in self.results])

    def signature(self) -> str:
        result = self.results[0] if self.results else "()"
        return f"{self.module}.{self.name}({', '.join(self.params)}) -> {result}"


class _ActiveGuest(threading.local):
    """The guest whose code is running on this thread (host imports are called on it)."""

    guest: GuestBase | None = None


ACTIVE = _ActiveGuest()
_UNSEEN = object()


class GuestBase:
    """One instantiated module in its own store: memory access and export calls.

    Memory never moves (the engine is configured with `memory_may_move = False`), so the base
    address is read once; only the size is refreshed when an access falls past the known end.
    """

    owner: Any
    pending_error: BaseException | None
    may_hold_gil = False  # set by the engine: true when its epoch ticker does not need the GIL

    def __init__(self, store: wasmtime.Store, instance: wasmtime.Instance, owner: Any,
                 signatures: dict[str, Any] | None = None):
        self.store = store
        self.instance = instance
        self.owner = owner
        self.pending_error = None
        # Shared by every instance of one module (issue 16: an instance started from zero): export
        # name -> the back-end's description of that function's signature, or None when the module
        # exports no such function — so a later instance neither looks up missing exports nor reads
        # the types of those it has.
        self._signatures: dict[str, Any] = {} if signatures is None else signatures
        self._export_cache: dict[str, Any] = {}
        self._funcs: dict[str, Callable[..., int | None] | None] = {}
        memory = self.export("memory")
        self._memory: wasmtime.Memory | None = memory if isinstance(memory, wasmtime.Memory) else None
        self._view: memoryview = memoryview(b"")
        self._size = 0
        self._refresh_memory()

    # -- memory -------------------------------------------------------------------------------
    def _refresh_memory(self) -> None:
        if self._memory is None:
            return
        size = self._memory.data_len(self.store)
        if size != self._size:
            raw = self._memory.get_buffer_ptr(self.store, size) if size else (ctypes.c_ubyte * 0)()
            self._view = memoryview(raw).cast("B")
            self._size = size

    def _check(self, ptr: int, length: int) -> None:
        end = ptr + length
        if ptr < 0 or length < 0 or end > self._size:
            self._refresh_memory()
            if ptr < 0 or length < 0 or end > self._size:
                raise GuestMemoryError(f"guest range {ptr:#x}+{length} outside memory of {self._size} bytes")

    def read(self, ptr: int, length: int) -> bytes:
        self._check(ptr, length)
        return self._view[ptr:ptr + length].tobytes()

    def write(self, ptr: int, data: bytes) -> None:
        self._check(ptr, len(data))
        self._view[ptr:ptr + len(data)] = data

    def read_u32(self, ptr: int) -> int:
        self._check(ptr, 4)
        return _U32.unpack_from(self._view, ptr)[0]

    def write_u32(self, ptr: int, value: int) -> None:
        self._check(ptr, 4)
        _U32.pack_into(self._view, ptr, value & 0xFFFFFFFF)

    def write_u64(self, ptr: int, value: int) -> None:
        self._check(ptr, 8)
        _U64.pack_into(self._view, ptr, value & 0xFFFFFFFFFFFFFFFF)

    def check_u32_pair(self, first: int, second: int) -> None:
        """Both are valid addresses of a u32 (the common out-parameter pair of the ABI)."""
        size = self._size
        if first < 0 or second < 0 or first + 4 > size or second + 4 > size:
            self._check(first, 4)
            self._check(second, 4)

    def write_checked_u32_pair(self, first: int, first_value: int, second: int, second_value: int) -> None:
        """Write two u32 values at addresses `check_u32_pair` accepted (memory never shrinks)."""
        view = self._view
        _U32.pack_into(view, first, first_value & 0xFFFFFFFF)
        _U32.pack_into(view, second, second_value & 0xFFFFFFFF)

    def check_writable(self, *ptrs_and_sizes: tuple[int, int]) -> None:
        for ptr, size in ptrs_and_sizes:
            self._check(ptr, size)

    # -- exports ------------------------------------------------------------------------------
    def export(self, name: str) -> Any:
        """The export called `name` (a Func, Memory, ...) or None; looked up once."""
        if name not in self._export_cache:
            self._export_cache[name] = self._find_export(name)
        return self._export_cache[name]

    def _find_export(self, name: str) -> Any:
        # wasmtime-py builds the whole export map (cost grows with the square of the export count).
        return self.instance.exports(self.store).get(name)

    def has_export(self, name: str) -> bool:
        """Whether the module exports a function called `name`."""
        return self._signature_of(name) is not None

    def _signature_of(self, name: str) -> Any:
        """The signature of export `name` (None: no such function), known per module."""
        signature = self._signatures.get(name, _UNSEEN)
        if signature is _UNSEEN:
            export = self.export(name)
            signature = self._signature(export) if isinstance(export, wasmtime.Func) else None
            self._signatures[name] = signature
        return signature

    def func(self, name: str) -> Callable[..., int | None] | None:
        """A callable for export `name`, resolved once; None when the module lacks it."""
        if name not in self._funcs:
            signature = self._signature_of(name)
            self._funcs[name] = None if signature is None else self._make_call(self.export(name), signature)
        return self._funcs[name]

    def _signature(self, export: wasmtime.Func) -> Any:
        """The back-end's description of `export`'s type, shared by the module's instances: here
        (parameter kinds, result kinds) as "i32"/"i64"."""
        functype = export.type(self.store)
        return tuple(str(p) for p in functype.params), tuple(str(r) for r in functype.results)

    def _make_call(self, export: wasmtime.Func, signature: Any) -> Callable[..., int | None]:
        """The back-end's way of calling an exported function (`signature` from `_signature`)."""
        raise NotImplementedError

    # -- GIL ---------------------------------------------------------------------------------------
    @property
    def hold_gil(self) -> bool:
        """Keep the GIL across guest calls (cheap guests); only where a deadline can still fire."""
        return self._hold_gil

    @hold_gil.setter
    def hold_gil(self, value: bool) -> None:
        self._hold_gil = value and self.may_hold_gil

    _hold_gil = False

    # -- limits -------------------------------------------------------------------------------
    def set_deadline(self, epoch_ticks: int) -> None:
        self.store.set_epoch_deadline(epoch_ticks)

    def set_fuel(self, fuel: int) -> None:
        """Only on an engine with fuel metering: the instructions the next calls may execute."""
        self.store.set_fuel(fuel)

    def raise_pending(self) -> None:
        """Re-raise an exception a host import raised while the guest was running."""
        error, self.pending_error = self.pending_error, None
        if error is not None:
            if isinstance(error, GuestExit):
                raise GuestTrap(str(error), exit_code=error.code) from None
            raise error


# What the ctypes and native back-ends' epoch callback ends a call past its deadline with: an error,
# not a trap, so it carries no trap code; it is recognised as the error's root cause, exactly.
DEADLINE_ERROR = "wasm trap: interrupt (deadline exceeded)"


def trap_from_wasmtime(error: Exception) -> GuestTrap:
    """Convert a wasmtime Trap/WasmtimeError into a GuestTrap, noting epoch interruptions and fuel.

    Whether the guest was interrupted or ran out of fuel comes from the trap code (or, for the epoch
    callback's error, from its exact root cause) — never from words anywhere in the text: the text
    also holds guest-chosen function names (the backtrace), so a guest could forge them.
    """
    text = error.message if isinstance(error, wasmtime.Trap) else str(error)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    # wasmtime puts the cause after the backtrace ("Caused by: ..."): the last line is the root cause.
    message = lines[-1] if lines else type(error).__name__
    if isinstance(error, wasmtime.Trap):
        code = error.trap_code
        return GuestTrap(message, interrupted=code == wasmtime.TrapCode.INTERRUPT,
                         out_of_fuel=code == wasmtime.TrapCode.OUT_OF_FUEL)
    return GuestTrap(message, interrupted=message == DEADLINE_ERROR)

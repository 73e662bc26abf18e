"""The engine adapter: every guest call, host-import definition and guest-memory access goes through here.

One `WasmEngine` per process, with one of three back-ends (the best available is the default):
- `"native"`: wasmtime's unchecked C calls, every crossing made by the C extension `_native`
  (built from `_native.c` when the package is installed);
- `"ctypes"`: the same unchecked calls through ctypes (when the extension is missing);
- `"public"`: only wasmtime-py's documented API (the reference for the other two).
`WASM_FAAS_ENGINE_BACKEND` forces one.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import wasmtime

from abi.engine import _public_backend, _ticker
from abi.engine._guest import (
    EPOCH_TICK_SECONDS,
    I32,
    I64,
    GuestBase,
    GuestExit,
    GuestMemoryError,
    GuestTrap,
    HostFunction,
)
from abi.engine._maps import INSTANCE_MAPS, MODULE_MAPS, MapBudget, ResourceLimitError  # issue 16: density

__all__ = [
    "I32", "I64", "Guest", "GuestExit", "GuestMemoryError", "GuestTrap", "HostFunction", "HostLinker",
    "WasmEngine", "EPOCH_TICK_SECONDS", "UNLIMITED_FUEL", "store_limits", "MapBudget", "ResourceLimitError",
]

log = logging.getLogger(__name__)

Guest = GuestBase

try:
    from abi.engine import _ctypes_backend

    _ctypes_backend.self_check()
    _FAST_ERROR: str | None = None
except Exception as error:  # pragma: no cover - only on an unexpected wasmtime-py
    _ctypes_backend = None  # type: ignore[assignment]
    _FAST_ERROR = str(error)

try:
    from abi.engine import _native_backend

    _NATIVE_ERROR: str | None = None
except Exception as error:  # the extension was not built (no C compiler at install time)
    _native_backend = None  # type: ignore[assignment]
    _NATIVE_ERROR = _FAST_ERROR or str(error)

BACKENDS = ("native", "ctypes", "public")


def available_backends() -> list[str]:
    """The back-ends this installation can run, best first."""
    return [name for name, ok in (("native", _native_backend is not None), ("ctypes", _ctypes_backend is not None),
                                  ("public", True)) if ok]


class HostLinker:
    """wasmtime Linkers holding the host's imports, plus their signatures for import checks.

    A name may be provided with several signatures (ABI 0.1.0's 2-argument `proxy_get_configuration`
    beside the runtime's 6-argument one): the first registered is linked by default, and a module
    that imports another signature gets a linker holding that one instead (one per combination,
    built once)."""

    def __init__(self, engine: WasmEngine, functions: Iterable[HostFunction]):
        self.engine = engine
        self.overloads: dict[tuple[str, str], list[HostFunction]] = {}
        for host in functions:
            self.overloads.setdefault((host.module, host.name), []).append(host)
        self.functions = {key: hosts[0] for key, hosts in self.overloads.items()}
        self.linker = self._build(self.functions.values())
        self._variants: dict[tuple[HostFunction, ...], wasmtime.Linker] = {}
        # --- per-module caches (issue 16) ---
        # Reading `module.imports` builds a Python object per import (about 100 µs for a C module):
        # done once per module, not at each instantiation and each check. The pre-linked modules
        # (wasmtime InstancePre: imports resolved once) make an instantiation a store plus one call.
        # Keyed weakly: an entry goes with its module.
        self._signatures: weakref.WeakKeyDictionary[wasmtime.Module, tuple[_Import, ...]] = (
            weakref.WeakKeyDictionary())
        self._pre: weakref.WeakKeyDictionary[wasmtime.Module, wasmtime.InstancePre] = weakref.WeakKeyDictionary()
        # The signatures of each module's exported functions, learnt by its first instances
        # (abi/engine/_guest.py): a module's later instances skip the lookups and type reads.
        self._exports: weakref.WeakKeyDictionary[wasmtime.Module, dict[str, Any]] = weakref.WeakKeyDictionary()
        self._cache_lock = threading.Lock()
        # --- end per-module caches ---

    def _build(self, functions: Iterable[HostFunction]) -> wasmtime.Linker:
        linker = wasmtime.Linker(self.engine.engine)
        for host in functions:
            self.engine._backend_define(linker, host)
        return linker

    def imports_of(self, module: wasmtime.Module) -> tuple[_Import, ...]:
        """`module`'s imports as plain tuples, read once per module."""
        with self._cache_lock:
            known = self._signatures.get(module)
        if known is None:
            known = tuple(_describe_import(imp) for imp in module.imports)
            with self._cache_lock:
                self._signatures[module] = known
        return known

    def instance_pre(self, module: wasmtime.Module) -> wasmtime.InstancePre:
        """`module` pre-linked against the matching linker, built once per module."""
        with self._cache_lock:
            pre = self._pre.get(module)
        if pre is None:
            pre = self.for_module(module).instantiate_pre(module)
            with self._cache_lock:
                pre = self._pre.setdefault(module, pre)
        return pre

    def export_signatures(self, module: wasmtime.Module) -> dict[str, Any]:
        """The shared export-signature table of `module`'s instances (filled as they look exports up)."""
        with self._cache_lock:
            table = self._exports.get(module)
            if table is None:
                table = self._exports[module] = {}
        return table

    def _matching(self, imp: _Import) -> HostFunction | None:
        module, name, kind, params, results = imp
        if kind != "FuncType":
            return None
        for host in self.overloads.get((module, name), ()):
            if (params, results) == (tuple(host.params), tuple(host.results)):
                return host
        return None

    def for_module(self, module: wasmtime.Module) -> wasmtime.Linker:
        """The linker whose definitions match `module`'s imports."""
        alternatives = tuple(host for imp in self.imports_of(module) if (host := self._matching(imp)) is not None
                             and host is not self.functions[(host.module, host.name)])
        if not alternatives:
            return self.linker
        linker = self._variants.get(alternatives)
        if linker is None:
            chosen = dict(self.functions)
            chosen.update({(host.module, host.name): host for host in alternatives})
            linker = self._variants[alternatives] = self._build(chosen.values())
        return linker

    def only_pure_imports(self, module: wasmtime.Module) -> bool:
        """Whether every import of `module` is a pure host function (abi/imports/_registry.py): such
        a module may run inline on the event loop."""
        return all((host := self._matching(imp)) is not None and host.pure for imp in self.imports_of(module))

    def only_replayable_imports(self, module: wasmtime.Module) -> bool:
        """Whether every import of `module` is pure or a read (abi/imports/_registry.py): such a
        module may run inline too, its blocking reads bounded by the caller's budget."""
        return all((host := self._matching(imp)) is not None and (host.pure or host.reads)
                   for imp in self.imports_of(module))

    def missing_imports(self, module: wasmtime.Module) -> list[str]:
        """Imports of `module` this host does not provide (or provides with another signature)."""
        problems = []
        for imp in self.imports_of(module):
            module_name, import_name, kind, params, results = imp
            name = f"{module_name}.{import_name}"
            hosts = self.overloads.get((module_name, import_name))
            if kind != "FuncType":
                problems.append(f"{name} (a {kind}, only functions are provided)")
            elif hosts is None:
                problems.append(f"{name} (not provided)")
            elif self._matching(imp) is None:
                offered = " or ".join(host.signature() for host in hosts)
                problems.append(f"{name} (module expects ({', '.join(params)}) -> {list(results) or '()'}, "
                                f"host provides {offered})")
        return problems


# (module, name, type kind, parameter kinds, result kinds) of one import.
_Import = tuple[str, str, str, tuple[str, ...], tuple[str, ...]]


def _describe_import(imp: wasmtime.ImportType) -> _Import:
    kind = imp.type
    if isinstance(kind, wasmtime.FuncType):
        return (imp.module, imp.name or "", "FuncType", tuple(str(p) for p in kind.params),
                tuple(str(r) for r in kind.results))
    return imp.module, imp.name or "", type(kind).__name__, (), ()


UNLIMITED_FUEL = (1 << 63) - 1

# --- store limits (issue 15 item 9): the memory limit bounds tables too ---
MAX_TABLES = 8  # per instance; C, Rust, Go and AssemblyScript modules declare one
TABLE_ELEMENT_BYTES = 8  # what wasmtime stores per table element
MIN_TABLE_ELEMENTS = 10_000


def store_limits(memory_limit_bytes: int) -> dict[str, int]:
    """wasmtime store limits for one instance under `memory_limit_bytes`: its one linear memory up to
    the limit, and at most MAX_TABLES tables whose elements together take at most the limit again
    (a module declaring or growing beyond that fails to instantiate, or its table.grow returns -1)."""
    per_table = max(MIN_TABLE_ELEMENTS, memory_limit_bytes // TABLE_ELEMENT_BYTES // MAX_TABLES)
    return {"memory_size": memory_limit_bytes, "table_elements": per_table, "memories": 1, "tables": MAX_TABLES}
# --- end store limits ---


class WasmEngine:
    def __init__(self, backend: str | None = None, *, fuel_metering: bool = False,
                 map_limit: int | None = None, map_reserve: int | None = None, memory_init_cow: bool = False):
        backend = backend or os.environ.get("WASM_FAAS_ENGINE_BACKEND") or available_backends()[0]
        if backend not in BACKENDS:
            raise ValueError(f"unknown engine backend {backend!r} (expected one of {', '.join(BACKENDS)})")
        if backend == "native" and _native_backend is None:
            log.warning("native engine backend unavailable (%s); using ctypes", _NATIVE_ERROR)
            backend = "ctypes"
        if backend == "ctypes" and _ctypes_backend is None:
            log.warning("ctypes engine backend unavailable (%s); using the public API", _FAST_ERROR)
            backend = "public"
        self.backend = backend
        config = wasmtime.Config()
        config.epoch_interruption = True
        # Fuel counts executed wasm instructions: deterministic CPU budgets, at some cost to every
        # guest, so it is off unless asked for.
        config.consume_fuel = fuel_metering
        self.fuel_metering = fuel_metering
        # Linear memory never moves, so guest memory views stay valid across memory.grow.
        config.memory_may_move = False
        # --- density (issue 16) ---
        # Data segments are copied into each new instance rather than mapped copy-on-write from a
        # per-module memory image: one memory mapping fewer per live instance (2 instead of 3; the
        # process may hold only vm.max_map_count of them) and no image to build per module — 10,000
        # distinct functions deploy with about half the CPU. The price is a copy per instantiation,
        # about 100 µs for 64 KiB of data and nothing measurable for a small C module.
        # (The default 4 GiB reservation is kept: it costs address space, not mappings or memory,
        # and lets compiled code skip bounds checks.)
        config.memory_init_cow = memory_init_cow
        self.memory_init_cow = memory_init_cow
        # --- end density ---
        self.engine = wasmtime.Engine(config)
        self._guest_class: type[GuestBase]
        if backend == "native":
            self._guest_class, self._define = _native_backend.NativeGuest, _native_backend.define
        elif backend == "ctypes":
            self._guest_class, self._define = _ctypes_backend.FastGuest, _ctypes_backend.define
        else:
            self._guest_class, self._define = _public_backend.PublicGuest, _public_backend.define
        self._ticker: Any | None = None
        self.guests_may_hold_gil = False
        # --- density (issue 16) ---
        # Modules and instances are admitted only while the process stays clear of vm.max_map_count
        # (abi/engine/_maps.py): past it wasmtime would abort the process.
        self.maps = MapBudget(map_limit, map_reserve)
        _start_compiler_threads(self.engine)
        # --- end density ---

    def limits(self) -> dict[str, Any]:
        """Process limits the engine enforces, for readiness and the listings."""
        return {"memory_maps": self.maps.state()}

    def _backend_define(self, linker: wasmtime.Linker, host: HostFunction) -> None:
        self._define(linker, host)

    # -- modules ------------------------------------------------------------------------------
    def compile(self, wasm: bytes) -> wasmtime.Module:
        """Raises ResourceLimitError (before compiling) when the process is out of memory mappings."""
        self.maps.admit(MODULE_MAPS, "load a module", module=True)
        return wasmtime.Module(self.engine, wasm)

    def deserialize(self, artifact: bytes) -> wasmtime.Module:
        """A module from its serialized artifact (in anonymous memory: two mappings, where a file's
        mapping is three)."""
        self.maps.admit(MODULE_MAPS, "load a module", module=True)
        return wasmtime.Module.deserialize(self.engine, artifact)

    def deserialize_file(self, path: str) -> wasmtime.Module:
        self.maps.admit(MODULE_MAPS, "load a module", module=True)
        return wasmtime.Module.deserialize_file(self.engine, path)

    def linker(self, functions: Sequence[HostFunction]) -> HostLinker:
        return HostLinker(self, functions)

    def instantiate(self, linker: HostLinker, module: wasmtime.Module, owner: Any,
                    *, memory_limit_bytes: int | None = None, start_deadline_s: float = 10.0) -> GuestBase:
        """A new instance in its own store. The module's start function (which runs inside
        instantiation) is bounded by `start_deadline_s`; afterwards no deadline until a call sets one.
        Raises ResourceLimitError (before allocating) when the process is out of memory mappings."""
        pre = linker.instance_pre(module)  # imports resolved once per module (issue 16)
        self.maps.admit(INSTANCE_MAPS, "start an instance")
        store = wasmtime.Store(self.engine)
        if memory_limit_bytes is not None:
            store.set_limits(**store_limits(memory_limit_bytes))
        store.set_epoch_deadline(max(1, math.ceil(start_deadline_s / EPOCH_TICK_SECONDS)) + 1)
        if self.fuel_metering:
            store.set_fuel(UNLIMITED_FUEL)  # a metered store starts empty; budgets are set per request
        try:
            instance = pre.instantiate(store)
        except wasmtime.Trap as error:
            from abi.engine._guest import trap_from_wasmtime
            raise trap_from_wasmtime(error) from None
        store.set_epoch_deadline(1 << 62)
        guest = self._guest_class(store, instance, owner, linker.export_signatures(module))
        guest.may_hold_gil = self.guests_may_hold_gil and self.backend != "public"
        return guest

    # -- epoch ticker -------------------------------------------------------------------------
    def start_ticker(self) -> None:
        """Advance the epoch every EPOCH_TICK_SECONDS so per-call deadlines interrupt runaway guests."""
        if self._ticker is None:
            self._ticker = _ticker.start_ticker(self.engine, native=self.backend != "public")
            # A guest may keep the GIL across calls only if something else can still interrupt it.
            self.guests_may_hold_gil = self._ticker.ticks_without_gil

    def stop_ticker(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None
            self.guests_may_hold_gil = False


# --- density (issue 16) ---
# Two functions, so that compiling it runs wasmtime's parallel compilation.
_WARM_UP = b"\0asm\x01\0\0\0\x01\x04\x01\x60\0\0\x03\x03\x02\0\0\x0a\x07\x02\x02\0\x0b\x02\0\x0b"


def _start_compiler_threads(engine: wasmtime.Engine) -> None:
    """Compile a tiny module now, while threads can be started: wasmtime starts its compiler thread
    pool on the first compilation, and a pool that cannot start its threads aborts the process."""
    wasmtime.Module(engine, _WARM_UP)
# --- end density ---

"""Compiled-module cache: content-hash keyed artifacts on disk, so a restart does not recompile.
Components (host/functions/components) are cached alike, as `<key>.component.cwasm`."""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import logging
import os
import tempfile
import threading
import weakref
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import wasmtime

from abi.engine import WasmEngine

if TYPE_CHECKING:
    import wasmtime.component as wc

    _Artifact = wasmtime.Module | wc.Component
else:
    _Artifact = object  # wasmtime.component is imported when a component is first loaded

log = logging.getLogger(__name__)

MEMORY_ENTRIES = 64  # compiled modules kept in memory beyond those in use


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wasm-faas"


class ModuleCache:
    """Loads modules by content: memory first, then the disk artifact, else compiles and stores."""

    def __init__(self, engine: WasmEngine, directory: Path | None = None):
        self.engine = engine
        self.directory = Path(directory) if directory else default_cache_dir()
        self.directory.mkdir(parents=True, exist_ok=True)
        # Artifacts are only valid for the same wasmtime build and engine settings.
        fuel = "/fuel" if engine.fuel_metering else ""
        self._fingerprint = f"wasmtime-{version('wasmtime')}/epoch/static-memory{fuel}".encode()
        # Recently loaded modules by file name; pools keep the ones in use alive, this only saves reloads.
        self._loaded: collections.OrderedDict[str, _Artifact] = collections.OrderedDict()
        # Every module still alive (a pool holds it), however long ago it was loaded: identical modules
        # share one compiled copy, its code and its memory mappings (issue 16: 10,000 functions of
        # one module cost one module's code, not 10,000).
        self._alive: weakref.WeakValueDictionary[str, _Artifact] = weakref.WeakValueDictionary()
        self._pending: dict[str, concurrent.futures.Future[_Artifact]] = {}
        self._lock = threading.Lock()
        self.compiled = 0  # counters, read by tests and the admin API
        self.disk_hits = 0
        self.memory_hits = 0

    def key(self, wasm: bytes) -> str:
        digest = hashlib.sha256(self._fingerprint + b"\0")
        digest.update(wasm)  # not concatenated: a component is tens of MB
        return digest.hexdigest()

    def load(self, wasm: bytes) -> wasmtime.Module:
        """Raises wasmtime.WasmtimeError when the bytes are not a valid module."""
        # A module's artifact is read and deserialized from memory, not mapped from its file: the file
        # mapping is a third memory mapping per module (issue 16), and the copy of a small artifact is cheap.
        module = self._load(wasm, ".cwasm", self.engine.compile, self._deserialize_module)
        assert isinstance(module, wasmtime.Module)
        return module

    def load_component(self, wasm: bytes) -> wc.Component:
        """Raises wasmtime.WasmtimeError when the bytes are not a valid component."""
        import wasmtime.component as wc  # only with a component deployed (start-up time)

        engine = self.engine.engine
        component = self._load(wasm, ".component.cwasm", lambda raw: wc.Component(engine, raw),
                               lambda path: wc.Component.deserialize_file(engine, path))
        assert isinstance(component, wc.Component)
        return component

    def _load(self, wasm: bytes, suffix: str, compile: Callable[[bytes], _Artifact],
              deserialize_file: Callable[[str], _Artifact]) -> _Artifact:
        name = f"{self.key(wasm)}{suffix}"
        with self._lock:
            artifact = self._loaded.get(name)
            if artifact is None:
                artifact = self._alive.get(name)
            if artifact is not None:
                self._loaded[name] = artifact
                self._loaded.move_to_end(name)
                self.memory_hits += 1
                return artifact
            # Concurrent deploys of one module (a folder of copies) wait for the first load.
            pending = self._pending.get(name)
            if pending is None:
                self._pending[name] = concurrent.futures.Future()
        if pending is not None:
            result: _Artifact = pending.result()
            with self._lock:
                self.memory_hits += 1
            return result
        try:
            artifact = self._load_new(name, wasm, compile, deserialize_file)
        except BaseException as error:
            with self._lock:
                self._pending.pop(name).set_exception(error)
            raise
        with self._lock:
            self._loaded[name] = self._alive[name] = artifact
            while len(self._loaded) > MEMORY_ENTRIES:
                self._loaded.popitem(last=False)
            self._pending.pop(name).set_result(artifact)
        return artifact

    def _load_new(self, name: str, wasm: bytes, compile: Callable[[bytes], _Artifact],
                  deserialize_file: Callable[[str], _Artifact]) -> _Artifact:
        path = self.directory / name
        artifact = self._from_disk(path, deserialize_file)
        if artifact is None:
            artifact = compile(wasm)
            self._store(path, artifact)
            with self._lock:
                self.compiled += 1
        else:
            with self._lock:
                self.disk_hits += 1
        return artifact

    def _deserialize_module(self, path: str) -> wasmtime.Module:
        with open(path, "rb") as artifact:
            return self.engine.deserialize(artifact.read())

    def _from_disk(self, path: Path, deserialize_file: Callable[[str], _Artifact]) -> _Artifact | None:
        if not path.exists():
            return None
        try:
            return deserialize_file(str(path))
        except wasmtime.WasmtimeError as error:  # stale or damaged artifact: recompile
            log.warning("ignoring unusable cache artifact %s: %s", path.name, error)
            return None

    def _store(self, path: Path, module: _Artifact) -> None:
        try:
            with tempfile.NamedTemporaryFile(dir=self.directory, delete=False, suffix=".tmp") as tmp:
                tmp.write(module.serialize())
            os.replace(tmp.name, path)  # atomic: a concurrent reader never sees half a file
        except OSError as error:
            log.warning("cannot write compiled-module cache %s: %s", path, error)

    def forget(self, wasm: bytes) -> None:
        with self._lock:
            for suffix in (".cwasm", ".component.cwasm"):
                self._loaded.pop(f"{self.key(wasm)}{suffix}", None)
                self._alive.pop(f"{self.key(wasm)}{suffix}", None)

    def stats(self) -> dict[str, int]:
        return {"compiled": self.compiled, "disk_hits": self.disk_hits, "memory_hits": self.memory_hits}

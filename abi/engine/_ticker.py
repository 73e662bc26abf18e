"""What advances the engine epoch every EPOCH_TICK_SECONDS (per-call deadlines are counted in ticks).

The native ticker is one thread of the C extension (`_native.start_ticker`) that calls
`wasmtime_engine_increment_epoch` directly: it never takes the GIL, so even a guest call that holds
the GIL is interrupted on time, and stop() joins it, so no tick can reach an engine after that.
(It replaced a POSIX SIGEV_THREAD timer: glibc starts a thread per expiry, and timer_delete does not
wait for one in flight.) Where the extension is missing, a Python thread ticks instead (and guest
calls then always release the GIL — see `ticks_without_gil`).
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import wasmtime

from abi.engine._guest import EPOCH_TICK_SECONDS


class NativeTicker:
    ticks_without_gil = True

    def __init__(self, engine: wasmtime.Engine):
        from wasmtime import _ffi as ffi  # the symbol's address: only the fast back-end's internals

        from abi.engine import _native  # type: ignore[attr-defined]  # ImportError when not built

        self._native: Any = _native
        self._engine = engine
        self._increment = ctypes.cast(ffi.dll.wasmtime_engine_increment_epoch, ctypes.c_void_p).value
        self._handle: Any = None

    def start(self) -> None:
        if self._handle is None:
            engine = ctypes.cast(self._engine.ptr(), ctypes.c_void_p).value
            # The handle keeps the engine alive until its thread is joined (stop(), or its dealloc).
            self._handle = self._native.start_ticker(self._increment, engine, int(EPOCH_TICK_SECONDS * 1e9),
                                                     self._engine)

    def stop(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.stop()


class ThreadTicker:
    ticks_without_gil = False

    def __init__(self, engine: wasmtime.Engine):
        self._engine = engine
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()

        def tick() -> None:
            while not self._stop.wait(EPOCH_TICK_SECONDS):
                self._engine.increment_epoch()

        self._thread = threading.Thread(target=tick, name="wasm-epoch-ticker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
            self._thread = None


def start_ticker(engine: wasmtime.Engine, native: bool):
    """The native ticker when asked for and it starts, else a Python thread."""
    if native:
        try:
            ticker = NativeTicker(engine)
            ticker.start()
            return ticker
        except (OSError, AttributeError, ImportError):
            pass
    fallback = ThreadTicker(engine)
    fallback.start()
    return fallback

"""What advances the engine epoch every EPOCH_TICK_SECONDS (per-call deadlines are counted in ticks).

The native ticker is a POSIX timer whose expiry calls `wasmtime_engine_increment_epoch` directly
on a libc helper thread (SIGEV_THREAD): it never takes the GIL, so even a guest call that holds the
GIL is interrupted on time. Where that is not available, a Python thread ticks instead (and guest
calls then always release the GIL — see `ticks_without_gil`).
"""

from __future__ import annotations

import ctypes
import threading

import wasmtime

from abi.engine._guest import EPOCH_TICK_SECONDS

_SIGEV_THREAD = 2
_CLOCK_MONOTONIC = 1


class _SigVal(ctypes.Union):
    _fields_ = [("sival_int", ctypes.c_int), ("sival_ptr", ctypes.c_void_p)]


class _SigEvent(ctypes.Structure):  # glibc's struct sigevent (64 bytes on 64-bit Linux)
    _fields_ = [("sigev_value", _SigVal), ("sigev_signo", ctypes.c_int), ("sigev_notify", ctypes.c_int),
                ("sigev_notify_function", ctypes.c_void_p), ("sigev_notify_attributes", ctypes.c_void_p),
                ("_pad", ctypes.c_byte * 32)]


class _TimeSpec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _ITimerSpec(ctypes.Structure):
    _fields_ = [("it_interval", _TimeSpec), ("it_value", _TimeSpec)]


class NativeTicker:
    ticks_without_gil = True

    def __init__(self, engine: wasmtime.Engine):
        from wasmtime import _ffi as ffi  # the symbol's address: only the fast back-end's internals

        self._engine = engine  # keeps the engine alive as long as the timer may fire
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._event = _SigEvent()
        self._event.sigev_notify = _SIGEV_THREAD
        self._event.sigev_notify_function = ctypes.cast(ffi.dll.wasmtime_engine_increment_epoch, ctypes.c_void_p).value
        self._event.sigev_value.sival_ptr = ctypes.cast(engine.ptr(), ctypes.c_void_p).value
        self._timer: ctypes.c_void_p | None = None

    def start(self) -> None:
        timer = ctypes.c_void_p()
        if self._libc.timer_create(_CLOCK_MONOTONIC, ctypes.byref(self._event), ctypes.byref(timer)) != 0:
            raise OSError(ctypes.get_errno(), "timer_create failed")
        nanoseconds = int(EPOCH_TICK_SECONDS * 1e9)
        period = _TimeSpec(nanoseconds // 1_000_000_000, nanoseconds % 1_000_000_000)
        if self._libc.timer_settime(timer, 0, ctypes.byref(_ITimerSpec(period, period)), None) != 0:
            self._libc.timer_delete(timer)
            raise OSError(ctypes.get_errno(), "timer_settime failed")
        self._timer = timer

    def stop(self) -> None:
        if self._timer is not None:
            self._libc.timer_delete(self._timer)
            self._timer = None

    def __del__(self) -> None:
        # A timer left armed would keep calling into an engine that may be freed next.
        self.stop()


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
        except (OSError, AttributeError):
            pass
    fallback = ThreadTicker(engine)
    fallback.start()
    return fallback

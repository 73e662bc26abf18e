"""The native epoch ticker (abi/engine/_ticker.py over `_native.start_ticker`): one thread per running
ticker, joined by stop(), so starting and stopping many of them leaves no thread behind and no tick
reaches an engine after stop(); while it runs, deadlines interrupt guests on time."""

from __future__ import annotations

import ctypes
import gc
import os
import time
import weakref

import pytest
import wasmtime

from abi.engine import EPOCH_TICK_SECONDS, GuestTrap, WasmEngine, _ticker, available_backends

pytestmark = pytest.mark.skipif("native" not in available_backends(), reason="the C extension is not built")

SPIN = '(module (func (export "spin") (loop br 0)))'


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _new_threads(before: set[str]) -> set[str]:
    """Threads of this process started since `before` (robust to others ending meanwhile)."""
    return set(os.listdir("/proc/self/task")) - before


def _all_gone(before: set[str], within_s: float = 1.0) -> bool:
    """No thread started since `before` is left (a joined thread may linger in /proc for a moment)."""
    until = time.monotonic() + within_s
    while _new_threads(before) and time.monotonic() < until:
        time.sleep(0.001)
    return not _new_threads(before)


def _settled_threads(expected: int, within_s: float = 2.0) -> int:
    """The thread count once it drops to `expected` (threads other tests left may still be ending)."""
    until = time.monotonic() + within_s
    count = _threads()
    while count > expected and time.monotonic() < until:
        time.sleep(0.01)
        count = _threads()
    return count


def test_many_quick_start_stop_cycles_leave_no_thread_behind() -> None:
    before = _threads()
    stopping = 0.0
    for _ in range(200):
        engine = wasmtime.Engine(wasmtime.Config())
        tasks = set(os.listdir("/proc/self/task"))
        ticker = _ticker.start_ticker(engine, native=True)
        assert isinstance(ticker, _ticker.NativeTicker) and ticker.ticks_without_gil
        assert len(_new_threads(tasks)) == 1  # its one thread
        started = time.monotonic()
        ticker.stop()
        stopping += time.monotonic() - started
        assert _all_gone(tasks)  # joined by stop()
        del ticker, engine  # the engine is freed right after stop(): no tick may follow
    assert _settled_threads(before) <= before
    # stop() wakes the thread instead of waiting out its period (200 periods would be 2 s).
    assert stopping < 50 * EPOCH_TICK_SECONDS, stopping


def test_one_thread_ticks_for_as_long_as_it_runs() -> None:
    engine = wasmtime.Engine(wasmtime.Config())
    tasks = set(os.listdir("/proc/self/task"))
    ticker = _ticker.start_ticker(engine, native=True)
    try:
        seen = set()
        for _ in range(10):  # ten periods: the old SIGEV_THREAD timer started a thread for each
            seen |= _new_threads(tasks)
            time.sleep(EPOCH_TICK_SECONDS)
        assert len(seen) == 1
    finally:
        ticker.stop()
    assert _all_gone(tasks)
    ticker.stop()  # idempotent


def test_deadlines_interrupt_guests_across_restarts() -> None:
    engine = WasmEngine("native")
    module = engine.compile(wasmtime.wat2wasm(SPIN))
    before = _threads()
    for _ in range(5):
        engine.start_ticker()
        try:
            assert engine.guests_may_hold_gil
            guest = engine.instantiate(engine.linker([]), module, None)
            guest.set_deadline(5)  # 50 ms
            started = time.monotonic()
            with pytest.raises(GuestTrap) as trap:
                guest.func("spin")()
            assert trap.value.interrupted
            assert 0.04 < time.monotonic() - started < 0.5
        finally:
            engine.stop_ticker()
    assert _settled_threads(before) <= before


def test_the_handle_keeps_the_engine_alive_until_stopped() -> None:
    from wasmtime import _ffi as ffi

    from abi.engine import _native  # type: ignore[attr-defined]

    engine = wasmtime.Engine(wasmtime.Config())
    alive = weakref.ref(engine)
    increment = ctypes.cast(ffi.dll.wasmtime_engine_increment_epoch, ctypes.c_void_p).value
    handle = _native.start_ticker(increment, ctypes.cast(engine.ptr(), ctypes.c_void_p).value,
                                  int(EPOCH_TICK_SECONDS * 1e9), engine)
    del engine
    gc.collect()
    time.sleep(3 * EPOCH_TICK_SECONDS)
    assert alive() is not None and handle.running
    handle.stop()
    assert not handle.running
    gc.collect()
    assert alive() is None


def test_dropping_a_running_handle_joins_its_thread() -> None:
    engine = wasmtime.Engine(wasmtime.Config())
    tasks = set(os.listdir("/proc/self/task"))
    ticker = _ticker.start_ticker(engine, native=True)
    assert len(_new_threads(tasks)) == 1
    del ticker  # never stopped: the handle's dealloc stops and joins it
    gc.collect()
    assert _all_gone(tasks)


def test_a_forked_child_can_stop_the_ticker_it_inherited() -> None:
    """A child has no ticker thread (nor the locks it may have held): stop() must neither join nor wait."""
    engine = wasmtime.Engine(wasmtime.Config())
    ticker = _ticker.start_ticker(engine, native=True)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                ticker.stop()
                code = 0
            finally:
                os._exit(code)
        until = time.monotonic() + 5
        while time.monotonic() < until:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.01)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("the child hung in stop()")
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        ticker.stop()

"""The native back-end (the C extension abi.engine._native) against the same guests as the others:
argument and result conversion, errors raised by host imports, nested calls, the GIL, no leaks."""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc

import pytest
import wasmtime

from abi.engine import I32, I64, GuestMemoryError, GuestTrap, HostFunction, WasmEngine, available_backends
from tests.conftest import ENGINE_BACKENDS

GUEST = """(module
  (import "host" "add" (func $add (param i32 i64) (result i64)))
  (import "host" "fail" (func $fail (param i32) (result i32)))
  (import "host" "reenter" (func $reenter (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "echo32") (param i32) (result i32) local.get 0)
  (func (export "echo64") (param i64) (result i64) local.get 0)
  (func (export "add") (param i32 i64) (result i64) (call $add (local.get 0) (local.get 1)))
  (func (export "fail") (param i32) (result i32) (call $fail (local.get 0)))
  (func (export "reenter") (param i32) (result i32) (call $reenter (local.get 0)))
  (func (export "double") (param i32) (result i32) (i32.mul (local.get 0) (i32.const 2)))
  (func (export "nothing"))
  (func (export "spin") (loop br 0))
  (func (export "count_then_add") (param $n i32) (result i64)
    (loop $l (local.set $n (i32.sub (local.get $n) (i32.const 1))) (br_if $l (local.get $n)))
    (call $add (i32.const 1) (i64.const 2)))
  (func (export "unreachable") unreachable))"""


class Failure(Exception):
    pass


def _host_functions(seen: list) -> list[HostFunction]:
    def add(owner, a: int, b: int) -> int:
        seen.append((owner, a, b))
        return a + b

    def fail(owner, how: int) -> int:
        if how == 1:
            raise GuestMemoryError("bad pointer")
        if how == 2:
            raise Failure("host import failed")
        if how == 3:
            return "not a number"  # type: ignore[return-value]
        return -1  # wraps to 0xFFFFFFFF

    def reenter(owner, value: int) -> int:
        return owner.guest.func("double")(value) + 1

    return [HostFunction("host", "add", (I32, I64), (I64,), add),
            HostFunction("host", "fail", (I32,), (I32,), fail, on_memory_error=60),
            HostFunction("host", "reenter", (I32,), (I32,), reenter)]


class Owner:
    guest = None


@pytest.fixture(params=ENGINE_BACKENDS)
def guest_and_calls(request):
    engine = WasmEngine(request.param)
    seen: list = []
    owner = Owner()
    guest = engine.instantiate(engine.linker(_host_functions(seen)), engine.compile(wasmtime.wat2wasm(GUEST)), owner)
    owner.guest = guest
    guest.set_deadline(1 << 40)
    return guest, seen, owner


def test_the_native_backend_is_built() -> None:
    # `pip install -e .` builds it wherever a C compiler and Python's headers exist (this kind of
    # machine has both); without it the host would quietly fall back to ctypes.
    assert available_backends()[0] == "native"
    assert WasmEngine().backend == "native"


def test_values_convert_both_ways(guest_and_calls) -> None:
    guest, seen, owner = guest_and_calls
    assert guest.func("echo32")(7) == 7
    assert guest.func("echo32")(-1) == 0xFFFFFFFF  # i32 values are the ABI's unsigned ints
    assert guest.func("echo32")(0x1_0000_0005) == 5  # wider ints wrap
    assert guest.func("echo64")(-5) == -5
    assert guest.func("echo64")(1 << 40) == 1 << 40
    assert guest.func("nothing")() is None
    assert guest.func("add")(0xFFFFFFFF, -3) == 0xFFFFFFFF - 3
    assert seen == [(owner, 0xFFFFFFFF, -3)]
    assert guest.func("missing") is None


def test_host_import_errors(guest_and_calls) -> None:
    guest, _, _ = guest_and_calls
    assert guest.func("fail")(1) == 60  # GuestMemoryError -> the import's on_memory_error status
    assert guest.func("fail")(0) == 0xFFFFFFFF
    with pytest.raises(Failure, match="host import failed"):  # the host's own exception, not a bare trap
        guest.func("fail")(2)
    with pytest.raises(TypeError):
        guest.func("fail")(3)
    assert guest.func("echo32")(9) == 9  # an import's failure does not poison later calls


def test_traps_and_deadlines(guest_and_calls) -> None:
    guest, _, _ = guest_and_calls
    with pytest.raises(GuestTrap, match="unreachable"):
        guest.func("unreachable")()


def test_nested_calls(guest_and_calls) -> None:
    guest, _, _ = guest_and_calls
    assert guest.func("reenter")(20) == 41  # guest -> host -> guest -> host -> guest


def test_bad_call_arguments(guest_and_calls) -> None:
    guest, _, _ = guest_and_calls
    with pytest.raises(TypeError):
        guest.func("add")(1)
    with pytest.raises(TypeError):
        guest.func("echo32")("x")


@pytest.mark.parametrize("backend", [b for b in ENGINE_BACKENDS if b != "public"])
def test_a_guest_call_lets_other_threads_run_and_is_interrupted(backend: str) -> None:
    engine = WasmEngine(backend)
    engine.start_ticker()
    try:
        guest = engine.instantiate(engine.linker(_host_functions([])), engine.compile(wasmtime.wat2wasm(GUEST)),
                                   Owner())
        assert not guest.hold_gil
        counter = [0]
        stop = threading.Event()
        worker = threading.Thread(target=lambda: [counter.__setitem__(0, counter[0] + 1)
                                                  for _ in iter(stop.is_set, True)])
        worker.start()
        guest.set_deadline(10)  # 0.1 s
        started = time.monotonic()
        try:
            with pytest.raises(GuestTrap) as trap:
                guest.func("spin")()
            before = counter[0]
            time.sleep(0)
        finally:
            stop.set()
            worker.join()
        assert trap.value.interrupted
        assert 0.05 < time.monotonic() - started < 1.0
        assert before > 1000  # the Python thread ran while the guest spun without the GIL
    finally:
        engine.stop_ticker()


@pytest.mark.parametrize("backend", [b for b in ENGINE_BACKENDS if b != "public"])
def test_a_gil_holding_call_past_a_tick_lets_others_run_and_still_calls_the_host(backend: str) -> None:
    engine = WasmEngine(backend)
    engine.start_ticker()
    try:
        seen: list = []
        guest = engine.instantiate(engine.linker(_host_functions(seen)), engine.compile(wasmtime.wat2wasm(GUEST)),
                                   Owner())
        guest.hold_gil = True
        assert guest.hold_gil
        guest.set_deadline(1000)
        beats: list[float] = []
        stop = threading.Event()
        worker = threading.Thread(target=lambda: [beats.append(time.monotonic()) or time.sleep(0.001)
                                                  for _ in iter(stop.is_set, True)])
        worker.start()
        try:
            calibration = time.monotonic()
            assert guest.func("count_then_add")(1_000_000) == 3
            count = min(2_000_000_000, int(1_000_000 * 0.15 / max(time.monotonic() - calibration, 1e-4)))
            started = time.monotonic()
            assert guest.func("count_then_add")(count) == 3  # one call of ~150 ms: many ticks
            elapsed = time.monotonic() - started
        finally:
            stop.set()
            worker.join()
        assert len(seen) == 2  # the host import ran after the GIL was given up, and returned
        during = [b for b in beats if started < b < started + elapsed]
        assert elapsed > 0.05 and len(during) >= 5, (len(during), elapsed)  # the other thread ran meanwhile
    finally:
        engine.stop_ticker()


def test_no_memory_is_leaked_per_call() -> None:
    engine = WasmEngine("native")
    seen: list = []
    guest = engine.instantiate(engine.linker(_host_functions(seen)), engine.compile(wasmtime.wat2wasm(GUEST)),
                               Owner())
    guest.set_deadline(1 << 40)
    add, fail = guest.func("add"), guest.func("fail")

    def work() -> None:
        for i in range(20_000):
            add(i, 1 << 40)
            seen.clear()
            fail(1)
            try:
                fail(2)
            except Failure:
                pass

    work()  # warm every cache first
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        work()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, grown  # 60,000 calls; a leak of one object per call would be megabytes

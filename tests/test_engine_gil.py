"""Guests that keep the GIL across calls (cheap functions) are still interrupted on time, and other
Python threads keep running while one of them loops: the epoch ticker does not need the GIL."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
import wasmtime

from abi.engine import GuestTrap, WasmEngine
from host.functions.policy import PROMOTE_AFTER
from tests.conftest import ENGINE_BACKENDS, EXAMPLES, functions_dir, make_config

LOOP = '(module (func (export "spin") (loop br 0)) (func (export "seven") (result i32) i32.const 7))'


@pytest.mark.parametrize("backend", [b for b in ENGINE_BACKENDS if b != "public"])
def test_a_looping_guest_holding_the_gil_is_interrupted_and_other_threads_run(backend: str) -> None:
    engine = WasmEngine(backend)
    engine.start_ticker()
    try:
        assert engine.guests_may_hold_gil  # the native (GIL-free) ticker is running
        guest = engine.instantiate(engine.linker([]), engine.compile(wasmtime.wat2wasm(LOOP)), None)
        guest.hold_gil = True
        assert guest.hold_gil and guest.func("seven")() == 7
        beats = []
        stop = threading.Event()
        worker = threading.Thread(target=lambda: [beats.append(time.monotonic()) or time.sleep(0.001)
                                                  for _ in iter(lambda: stop.is_set(), True)])
        worker.start()
        guest.set_deadline(20)  # 20 ticks = 0.2 s
        started = time.monotonic()
        try:
            guest.func("spin")()
            raise AssertionError("the loop was not interrupted")
        except GuestTrap as trap:
            assert trap.interrupted
        finally:
            stop.set()
            worker.join()
        elapsed = time.monotonic() - started
        assert 0.15 < elapsed < 1.0, elapsed
        during = [b for b in beats if started < b < started + elapsed]
        assert len(during) >= 5  # the guest yielded the GIL at its ticks
    finally:
        engine.stop_ticker()


def test_the_public_backend_never_holds_the_gil() -> None:
    engine = WasmEngine("public")
    engine.start_ticker()
    try:
        guest = engine.instantiate(engine.linker([]), engine.compile(wasmtime.wat2wasm(LOOP)), None)
        guest.hold_gil = True
        assert not guest.hold_gil
    finally:
        engine.stop_ticker()


# A function that may write state (it imports proxy_set_state, so it never runs inline) and loops
# on a body.
STATEFUL_LOOP_WAT = r"""
(module
  (import "env" "proxy_set_state" (func $put (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "ok")
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 4096))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $set (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 16) (i32.const 2)))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    (loop $forever (br $forever))
    (i32.const 0)))
"""


async def test_a_cheap_function_holding_the_gil_cannot_stall_the_host(serve, tmp_path: Path) -> None:
    folder = functions_dir(tmp_path, EXAMPLES / "hello.wasm")
    (folder / "stateful.wat").write_text(STATEFUL_LOOP_WAT)
    client = await serve(make_config(tmp_path, folder, functions={"stateful": {"timeout_ms": 400}},
                                     function_defaults={"instance_num": 1}))
    version = client.server.app.router.pick("stateful")
    for _ in range(4 * PROMOTE_AFTER):
        assert (await client.call("stateful"))[0] == 200
        if version.policy.cheap:
            break
    assert version.policy.cheap and not version.policy.eligible  # holds the GIL, runs in a guest thread
    spinning = asyncio.create_task(client.call("stateful", method="POST", data=b"spin"))
    await asyncio.sleep(0.1)
    started = time.perf_counter()
    assert (await client.call("hello"))[0] == 200
    assert time.perf_counter() - started < 0.2  # the spinning call gave the GIL up at its first tick
    status, _, body = await spinning
    assert status == 504 and b"deadline" in body
    assert not version.policy.cheap  # one heavy request hands the GIL back for the next ones

"""Routing errors, traps, concurrency of pools, and self-invocation that must not deadlock."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.conftest import EXAMPLES, functions_dir, make_config


async def test_missing_and_unknown_id(serve, tmp_path: Path) -> None:
    client = await serve(make_config(tmp_path, functions_dir(tmp_path, EXAMPLES / "hello.wasm")))
    status, headers, body = await client.call(None)
    assert status == 400 and headers["Content-Type"].startswith("application/json")
    assert b"missing 'id' header" in body
    status, _, body = await client.call("does-not-exist")
    assert status == 404 and b"unknown function id 'does-not-exist'" in body


async def test_trap_answers_500_and_the_next_request_succeeds(serve, tmp_path: Path, c_guests: Path) -> None:
    config = make_config(tmp_path, functions_dir(tmp_path, c_guests / "trap.wasm"),
                         function_defaults={"instance_num": 1})
    client = await serve(config)
    status, _, body = await client.call("trap", headers={"x-trap": "1"})
    assert status == 500
    assert b"function 'trap' trapped" in body and b"unreachable" in body
    # The only instance was discarded; a replacement serves the next request.
    status, _, body = await client.call("trap")
    assert (status, body) == (200, b"ok\n")
    status, info = await client.admin_get("/functions/trap")
    assert info["versions"][0]["errors"] == 1 and info["versions"][0]["replaced_instances"] == 1


async def test_two_instances_serve_two_slow_requests_in_parallel(serve, tmp_path: Path, c_guests: Path) -> None:
    config = make_config(tmp_path, functions_dir(tmp_path, c_guests / "slow.wasm"),
                         function_defaults={"instance_num": 2})
    client = await serve(config)
    headers = {"x-sleep-ms": "300"}
    started = time.perf_counter()
    await client.call("slow", headers=headers)
    single = time.perf_counter() - started
    started = time.perf_counter()
    results = await asyncio.gather(client.call("slow", headers=headers), client.call("slow", headers=headers))
    pair = time.perf_counter() - started
    assert all(r[0] == 200 and r[2] == b"slept 300\n" for r in results)
    assert pair < single * 1.5, (single, pair)


async def test_a_slow_function_does_not_delay_a_fast_one(serve, tmp_path: Path, c_guests: Path) -> None:
    folder = functions_dir(tmp_path, c_guests / "slow.wasm", EXAMPLES / "hello.wasm")
    client = await serve(make_config(tmp_path, folder, function_defaults={"instance_num": 1}))
    slow = asyncio.create_task(client.call("slow", headers={"x-sleep-ms": "800"}))
    await asyncio.sleep(0.1)  # the slow request is now running in its guest thread
    started = time.perf_counter()
    status, _, _ = await client.call("hello")
    fast = time.perf_counter() - started
    assert status == 200 and fast < 0.3, fast
    assert not slow.done()
    assert (await slow)[0] == 200


async def test_self_invocation_with_one_instance_fails_fast(serve, tmp_path: Path, c_guests: Path) -> None:
    config = make_config(tmp_path, functions_dir(tmp_path, c_guests / "self_invoke.wasm"),
                         function_defaults={"instance_num": 1})
    client = await serve(config)
    started = time.perf_counter()
    status, _, body = await client.call("self_invoke", "/outer")
    elapsed = time.perf_counter() - started
    assert (status, body) == (200, b"status=10\n")
    assert elapsed < 3.0  # well within Layotto's 3 s invoke timeout: a cycle is detected, not waited out


async def test_self_invocation_with_two_instances_succeeds(serve, tmp_path: Path, c_guests: Path) -> None:
    config = make_config(tmp_path, functions_dir(tmp_path, c_guests / "self_invoke.wasm"),
                         function_defaults={"instance_num": 2})
    client = await serve(config)
    status, _, body = await client.call("self_invoke", "/outer")
    assert (status, body) == (200, b"status=0\n")


async def test_invoke_waits_for_a_busy_pool_then_times_out(serve, tmp_path: Path, c_guests: Path) -> None:
    """id_1 -> id_2 while id_2's only instance is held elsewhere: status 10 after the invoke timeout."""
    folder = functions_dir(tmp_path, EXAMPLES / "function_1.wasm", EXAMPLES / "function_2.wasm")
    config = make_config(tmp_path, folder, function_defaults={"instance_num": 1},
                         server={"invoke_timeout_ms": 300})
    client = await serve(config)
    pool = client.server.app.router.pick("id_2").pool
    held = pool.try_acquire()
    try:
        started = time.perf_counter()
        status, _, body = await client.call("id_1", "/?name=book1")
        elapsed = time.perf_counter() - started
    finally:
        pool.release(held)
    assert status == 502 and b"invoke id_2 failed: status 10" in body
    assert 0.25 < elapsed < 2.0
    status, _, body = await client.call("id_1", "/?name=book1")
    assert (status, body) == (200, b"There are 100 inventories for book1.")


SAME_ID_WAT = r"""
(module
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "shared")
  (data (i32.const 32) "$BODY")
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 4096))
  (func (export "proxy_get_id") (drop (call $set (i32.const 8) (i32.const 0) (i32.const 6) (i32.const 16) (i32.const 6))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $set (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 32) (i32.const 1)))
    (i32.const 0)))
"""


async def test_modules_reporting_the_same_id_share_it_at_random(serve, tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    (folder / "first.wat").write_text(SAME_ID_WAT.replace("$BODY", "a"))
    (folder / "second.wat").write_text(SAME_ID_WAT.replace("$BODY", "b"))
    client = await serve(make_config(tmp_path, folder, server={"duplicate_ids": "random"}))  # Layotto's choice
    bodies = [(await client.call("shared"))[2] for _ in range(60)]
    assert set(bodies) == {b"a", b"b"}
    assert 10 < bodies.count(b"a") < 50  # random choice, not always the same module

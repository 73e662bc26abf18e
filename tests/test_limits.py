"""Isolation and limits: runaway guests, memory bombs, call cycles, overload, oversized requests."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from host.config import validate_config
from tests.conftest import EXAMPLES, functions_dir, make_config

# Loops forever when the request has a body, answers "alive" otherwise.
LOOP_WAT = r"""
(module
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "alive")
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 4096))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $set (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 16) (i32.const 5)))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    (loop $forever (br $forever))
    (i32.const 0)))
"""

# Grows memory one page at a time until refused, then traps; answers "small" without a body.
MEMORY_BOMB_WAT = r"""
(module
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "small")
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 4096))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $set (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 16) (i32.const 5)))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    (block $refused (loop $grow
      (br_if $refused (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
      (br $grow)))
    unreachable))
"""

# `ping` invokes `pong` and `pong` invokes `ping`: each answers "s" + the two-digit status its invoke
# got, followed by the callee's answer.
CYCLE_WAT = r"""
(module
  (import "env" "proxy_invoke_service"
    (func $invoke (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 8192))
  (data (i32.const 16) "$TARGET")
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32) (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.add (local.get $n) (i32.const 8))))
    (local.get $p))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (local $status i32)
    (local.set $status (call $invoke (i32.const 16) (i32.const 4) (i32.const 0) (i32.const 0)
                                     (i32.const 0) (i32.const 0) (i32.const 64) (i32.const 68)))
    ;; answer "status=<digit(s)>" as "s" + two ASCII digits
    (i32.store8 (i32.const 100) (i32.const 115))
    (i32.store8 (i32.const 101) (i32.add (i32.const 48) (i32.div_u (local.get $status) (i32.const 10))))
    (i32.store8 (i32.const 102) (i32.add (i32.const 48) (i32.rem_u (local.get $status) (i32.const 10))))
    (drop (call $set (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 3)))
    ;; then what the callee answered, so the caller's body shows the whole chain
    (if (i32.eqz (local.get $status))
      (then (drop (call $set (i32.const 1) (i32.const -1) (i32.const 0)
                             (i32.load (i32.const 64)) (i32.load (i32.const 68))))))
    (i32.const 0)))
"""


async def test_infinite_loop_answers_504_in_about_the_deadline(serve, tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    (folder / "loop.wat").write_text(LOOP_WAT)
    client = await serve(make_config(tmp_path, folder, function_defaults={"instance_num": 1, "timeout_ms": 300}))
    started = time.perf_counter()
    status, _, body = await client.call("loop", method="POST", data=b"spin")
    elapsed = time.perf_counter() - started
    assert status == 504 and b"exceeded its 0.3s deadline" in body
    assert 0.25 < elapsed < 1.5, elapsed
    status, _, body = await client.call("loop")  # a fresh instance replaced the interrupted one
    assert (status, body) == (200, b"alive")


async def test_memory_bomb_answers_500_and_the_host_recovers(serve, tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    (folder / "bomb.wat").write_text(MEMORY_BOMB_WAT)
    client = await serve(make_config(tmp_path, folder,
                                     function_defaults={"instance_num": 1, "memory_limit_mb": 4}))
    status, _, body = await client.call("bomb", method="POST", data=b"grow")
    assert status == 500 and b"unreachable" in body  # growth was refused at 4 MiB, the guest then trapped
    assert (await client.call("bomb"))[:3:2] == (200, b"small")


async def test_huge_initial_memory_is_refused_at_deploy(serve, tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    (folder / "huge.wat").write_text('(module (memory (export "memory") 20000))')  # 1.2 GiB > 256 MiB cap
    client = await serve(make_config(tmp_path, folder))
    status, readiness = await client.admin_get("/actuator/health/readiness")
    assert status == 503
    assert "instantiation failed" in readiness["details"]["failed"]["huge"]


async def test_invoke_cycles_end_with_an_error(serve, tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    (folder / "ping.wat").write_text(CYCLE_WAT.replace("$TARGET", "pong"))
    (folder / "pong.wat").write_text(CYCLE_WAT.replace("$TARGET", "ping"))
    # One instance each: ping -> pong -> ping is refused at once (every ping instance is in the chain).
    # Three each: the chain grows until the depth limit (4 functions in one chain) refuses the next hop.
    for instances, chain in ((1, b"s00s10"), (3, b"s00s00s00s10")):
        client = await serve(make_config(tmp_path / str(instances), folder,
                                         function_defaults={"instance_num": instances},
                                         server={"max_invoke_depth": 4}))
        started = time.perf_counter()
        status, _, body = await client.call("ping")
        assert (status, body) == (200, chain)
        assert time.perf_counter() - started < 1.0


async def test_overload_of_a_one_instance_slow_function(serve, tmp_path: Path, c_guests: Path) -> None:
    config = make_config(tmp_path, functions_dir(tmp_path, c_guests / "slow.wasm"),
                         function_defaults={"instance_num": 1, "max_queue": 3},
                         server={"acquire_timeout_ms": 2000})
    client = await serve(config)
    started = time.perf_counter()
    results = await asyncio.gather(*(client.call("slow", headers={"x-sleep-ms": "100"}) for _ in range(12)))
    statuses = sorted(r[0] for r in results)
    assert statuses.count(200) >= 4 and 503 in statuses and set(statuses) <= {200, 503}
    assert all(r[1]["Retry-After"] for r in results if r[0] == 503)
    assert time.perf_counter() - started < 5.0
    pool = client.server.app.router.pick("slow").pool
    for _ in range(50):  # the answer can reach the client just before its thread releases the instance
        if pool.stats()["busy"] == 0:
            break
        await asyncio.sleep(0.01)
    assert pool.stats()["waiting"] == 0 and pool.stats()["busy"] == 0


async def test_queue_timeout_answers_503(serve, tmp_path: Path, c_guests: Path) -> None:
    config = make_config(tmp_path, functions_dir(tmp_path, c_guests / "slow.wasm"),
                         function_defaults={"instance_num": 1}, server={"acquire_timeout_ms": 200})
    client = await serve(config)
    first = asyncio.create_task(client.call("slow", headers={"x-sleep-ms": "600"}))
    await asyncio.sleep(0.05)
    status, headers, body = await client.call("slow", headers={"x-sleep-ms": "0"})
    assert status == 503 and headers["Retry-After"] == "1" and b"no free instance" in body
    assert (await first)[0] == 200


async def test_oversized_body_and_headers(serve, tmp_path: Path) -> None:
    folder = functions_dir(tmp_path, EXAMPLES / "hello.wasm")
    client = await serve(make_config(tmp_path, folder, server={"max_body_bytes": 1024, "max_header_bytes": 512}))
    status, _, body = await client.call("hello", method="POST", data=b"x" * 2048)
    assert status == 413 and b"larger than 1024 bytes" in body
    status, _, _ = await client.call("hello", headers={"x-big": "y" * 1000})
    assert status == 400
    assert (await client.call("hello", method="POST", data=b"x" * 100))[0] == 200


async def test_forbidden_state_store_and_invoke_target(serve, tmp_path: Path, caplog) -> None:
    config = make_config(tmp_path, EXAMPLES, functions={
        "function_2": {"path": str(EXAMPLES / "function_2.wasm"), "allowed_state_stores": ["other"]},
        "function_1": {"path": str(EXAMPLES / "function_1.wasm"), "allowed_invoke_targets": ["id_2"]}})
    client = await serve(config)
    status, _, body = await client.call("id_2", method="POST", data=b"book1")
    assert status == 500 and b"get_state failed: status 10" in body
    assert "not in allowed_state_stores" in caplog.text


async def test_unknown_state_store_answers_internal_failure_with_a_log_line(serve, tmp_path: Path, caplog) -> None:
    # function_2 reads store "state_demo": a host configured with another store name refuses it.
    raw = make_config(tmp_path, functions_dir(tmp_path, EXAMPLES / "function_2.wasm")).model_dump()
    raw["state"] = {"inventory": {"type": "memory"}}
    client = await serve(validate_config(raw))
    status, _, body = await client.call("id_2", method="POST", data=b"book1")
    assert status == 500 and body == b"get_state failed: status 10\n"
    assert "unknown state store 'state_demo' (known: inventory)" in caplog.text


async def test_overall_request_timeout(serve, tmp_path: Path, c_guests: Path) -> None:
    config = make_config(tmp_path, functions_dir(tmp_path, c_guests / "slow.wasm"),
                         function_defaults={"instance_num": 1}, server={"request_timeout_ms": 200})
    client = await serve(config)
    started = time.perf_counter()
    status, _, body = await client.call("slow", headers={"x-sleep-ms": "600"})
    assert status == 504 and b"took longer than 0.2s" in body
    assert time.perf_counter() - started < 0.5
    await asyncio.sleep(0.6)  # the guest finished on its own deadline and freed the instance
    assert (await client.call("slow", headers={"x-sleep-ms": "0"}))[0] == 200


async def test_fuel_budget_is_a_deterministic_cpu_limit(serve, tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    (folder / "loop.wat").write_text(LOOP_WAT)
    config = make_config(tmp_path, folder, server={"fuel_metering": True},
                         functions={"loop": {"fuel": 100_000, "instance_num": 1}})
    client = await serve(config)
    started = time.perf_counter()
    status, _, body = await client.call("loop", method="POST", data=b"spin")
    assert status == 504 and b"used up its fuel budget" in body
    assert time.perf_counter() - started < 1.0  # 100k instructions, not the 30 s deadline
    assert (await client.call("loop"))[:3:2] == (200, b"alive")  # the budget is per request


async def test_fuel_without_metering_is_refused(serve, tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    (folder / "loop.wat").write_text(LOOP_WAT)
    client = await serve(make_config(tmp_path, folder, functions={"loop": {"fuel": 1000}}))
    status, readiness = await client.admin_get("/actuator/health/readiness")
    assert status == 503 and "fuel_metering" in str(readiness["details"]["failed"])


# Every tick burns some fuel; each callback must get a fresh budget, as each request does.
FUELLED_TICKER_WAT = r"""
(module
  (import "env" "proxy_set_tick_period_milliseconds" (func $tick (param i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "tick")
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 4096))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $tick (i32.const 30))) (i32.const 1))
  (func (export "proxy_on_tick") (param i32) (local $i i32)
    (loop $burn
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $burn (i32.lt_u (local.get $i) (i32.const 5000))))
    (drop (call $log (i32.const 2) (i32.const 16) (i32.const 4)))))
"""


async def test_each_timer_callback_gets_a_fresh_fuel_budget(serve, tmp_path: Path, caplog) -> None:
    caplog.set_level("INFO", logger="wasm.guest")
    folder = tmp_path / "functions"
    folder.mkdir()
    (folder / "ticker.wat").write_text(FUELLED_TICKER_WAT)
    client = await serve(make_config(tmp_path, folder, server={"fuel_metering": True},
                                     functions={"ticker": {"fuel": 60_000, "instance_num": 1}}))
    assert (await client.call("ticker"))[0] == 200  # a request sets the instance's budget...
    await asyncio.sleep(0.6)  # ...and each tick (~40k instructions) must get its own, not the rest
    assert caplog.text.count("[ticker] tick") >= 8
    assert "trapped" not in caplog.text

"""Conformance of the process-wide ABI features: shared data (CAS), shared queues, metrics, foreign
functions, http calls to upstreams (with stream resume, timeouts, unreachable hosts), tick timers,
and an ABI 0.1.0 module — each driven by a WAT guest through a real server and real HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
import zlib
from pathlib import Path

from aiohttp import web

from tests.conftest import functions_dir, make_config
from tests.guest_wat import RET, U32_A, U32_B, U64, Results, WatGuest, serialize_map, write_guest

OK, NOT_FOUND, BAD_ARGUMENT, EMPTY, CAS_MISMATCH = 0, 1, 2, 7, 8
ANSWER = "(call $flush) (i32.const 0)"


async def serve_guests(serve, tmp_path: Path, *, instances: int = 1, **guests: str):
    folder = functions_dir(tmp_path)
    for name, wat in guests.items():
        write_guest(folder, name, wat)
    return await serve(make_config(tmp_path, folder, function_defaults={"instance_num": instances}))


def emit_all(calls: list[str]) -> str:
    return "\n    ".join(f"(call $emit {c})" for c in calls)


async def test_shared_data_compare_and_swap(serve, tmp_path: Path) -> None:
    g = WatGuest()
    key, other = g.s("counter"), g.s("missing")
    load_cas = f"(i32.load (i32.const {U32_A}))"
    body = f"""
    (call $emit {g.call("proxy_get_shared_data", other, RET, U32_A)})
    (call $emit {g.call("proxy_set_shared_data", key, g.s("one"), 0)})
    (call $emit_ret {g.call("proxy_get_shared_data", key, RET, U32_A)})
    (call $emit {g.call("proxy_set_shared_data", key, g.s("two"), f"(i32.add {load_cas} (i32.const 1))")})
    (call $emit {g.call("proxy_set_shared_data", key, g.s("two"), load_cas)})
    (call $emit_ret {g.call("proxy_get_shared_data", key, RET, U32_A)})
    (call $emit {g.call("proxy_set_shared_data", g.s("empty"), (0, 0), 0)})
    (call $emit_ret {g.call("proxy_get_shared_data", g.s("empty"), RET, U32_A)})
    {ANSWER}"""
    client = await serve_guests(serve, tmp_path, shared=g.module(proxy_on_request_headers=body))
    r = Results((await client.call("shared"))[2])
    assert r.u32() == NOT_FOUND
    assert r.u32() == OK and r.ret() == (OK, b"one")
    assert r.u32() == CAS_MISMATCH  # a stale cas is refused
    assert r.u32() == OK and r.ret() == (OK, b"two")
    assert r.u32() == OK and r.ret() == (OK, b"")
    # Shared by the whole process: the host sees what the guest stored.
    assert client.server.app.services.shared_data.get(b"counter")[0] == b"two"


async def test_shared_queues_and_queue_ready(serve, tmp_path: Path, caplog) -> None:
    caplog.set_level("INFO", logger="wasm.guest")
    g = WatGuest()
    name = g.s("jobs")
    register = f"""(drop {g.call("proxy_register_shared_queue", name, U32_B)}) (i32.const 1)"""
    queue = f"(i32.load (i32.const {U32_B}))"
    request = f"""
    (call $emit {g.call("proxy_resolve_shared_queue", (0, 0), name, U32_A)})
    (call $emit (i32.eq (i32.load (i32.const {U32_A})) {queue}))
    (call $emit {g.call("proxy_resolve_shared_queue", (0, 0), g.s("nope"), U32_A)})
    (call $emit {g.call("proxy_enqueue_shared_queue", 999, g.s("x"))})
    (call $emit {g.call("proxy_enqueue_shared_queue", queue, g.s("job-1"))})
    {ANSWER}"""
    # The root context hears about the item after the request released the only instance.
    ready = f"""
    (drop {g.call("proxy_dequeue_shared_queue", "(local.get $queue)", RET)})
    (drop {g.call("proxy_log", 2, f"(i32.load (i32.const {RET[0]}))", f"(i32.load (i32.const {RET[1]}))")})
    (drop {g.call("proxy_dequeue_shared_queue", "(local.get $queue)", RET)})"""
    module = g.module(proxy_on_configure=register, proxy_on_request_headers=request, proxy_on_queue_ready=ready)
    client = await serve_guests(serve, tmp_path, queues=module)
    r = Results((await client.call("queues"))[2])
    assert [r.u32() for _ in range(5)] == [OK, 1, NOT_FOUND, NOT_FOUND, OK]
    for _ in range(50):
        if "job-1" in caplog.text:
            break
        await asyncio.sleep(0.02)
    assert "[queues] job-1" in caplog.text
    # Dequeuing an empty queue answers Empty (checked from the host side, after the delivery).
    assert client.server.app.services.queues.dequeue(1)[0] == EMPTY


async def test_metrics(serve, tmp_path: Path) -> None:
    g = WatGuest()
    counter, gauge, hist = f"(i32.load (i32.const {U32_A}))", f"(i32.load (i32.const {U32_B}))", "(i32.const 3)"
    body = f"""
    (call $emit {g.call("proxy_define_metric", 0, g.s("requests"), U32_A)})
    (call $emit {g.call("proxy_increment_metric", counter, 5)})
    (call $emit {g.call("proxy_get_metric", counter, U64)})
    (call $emit (i32.load (i32.const {U64})))
    (call $emit {g.call("proxy_define_metric", 1, g.s("temperature"), U32_B)})
    (call $emit {g.call("proxy_record_metric", gauge, 42)})
    (call $emit {g.call("proxy_get_metric", gauge, U64)})
    (call $emit (i32.load (i32.const {U64})))
    (call $emit {g.call("proxy_define_metric", 2, g.s("latency"), 528)})
    (call $emit {g.call("proxy_record_metric", hist, 7)})
    (call $emit {g.call("proxy_increment_metric", hist, 1)})
    (call $emit {g.call("proxy_define_metric", 9, g.s("bad"), U32_A)})
    (call $emit {g.call("proxy_increment_metric", counter, -1)})
    {ANSWER}"""
    client = await serve_guests(serve, tmp_path, metrics=g.module(proxy_on_request_headers=body))
    await client.call("metrics")
    r = Results((await client.call("metrics"))[2])  # a second request: the counter keeps counting
    assert [r.u32() for _ in range(13)] == [OK, OK, OK, 10, OK, OK, OK, 42, OK, OK, BAD_ARGUMENT, BAD_ARGUMENT,
                                            BAD_ARGUMENT]
    snapshot = {m["name"]: m for m in client.server.app.services.metrics.snapshot()}
    assert snapshot["requests"]["value"] == 10 and snapshot["temperature"]["value"] == 42
    assert snapshot["latency"]["count"] == 2 and snapshot["latency"]["type"] == "histogram"


async def test_foreign_functions(serve, tmp_path: Path) -> None:
    g = WatGuest()
    body = f"""
    (call $emit_ret {g.call("proxy_call_foreign_function", g.s("compress"), g.s("aaaaaaaaaaaaaaaa"), RET)})
    (call $emit_ret {g.call("proxy_call_foreign_function", g.s("uncompress"), g.s("not zlib"), RET)})
    (call $emit_ret {g.call("proxy_call_foreign_function", g.s("no_such_function"), g.s("x"), RET)})
    {ANSWER}"""
    client = await serve_guests(serve, tmp_path, foreign=g.module(proxy_on_request_headers=body))
    r = Results((await client.call("foreign"))[2])
    status, compressed = r.ret()
    assert status == OK and zlib.decompress(compressed) == b"a" * 16
    assert r.ret() == (BAD_ARGUMENT, b"")
    assert r.ret() == (NOT_FOUND, b"")


def _http_call_guest(upstream: str, path: str, timeout_ms: int) -> str:
    g = WatGuest()
    headers = serialize_map([(":method", "GET"), (":path", path), ("x-from", "wat")])
    request = f"""
    (call $emit {g.call("proxy_http_call", g.s(upstream), g.s(headers), (0, 0), g.s(serialize_map([])),
                        timeout_ms, U32_A)})
    (i32.const 1)"""  # Pause until the answer arrives
    response = f"""
    (call $emit (local.get $headers))
    (call $emit_ret {g.call("proxy_get_buffer_bytes", 4, 0, 1000, RET)})
    (call $emit_ret {g.call("proxy_get_header_map_value", 6, g.s(":status"), RET)})
    (call $emit {g.call("proxy_get_status", U32_B, RET)})
    (call $emit (i32.load (i32.const {U32_B})))
    (call $emit_bytes (i32.load (i32.const {RET[0]})) (i32.load (i32.const {RET[1]})))
    (call $flush)
    (drop {g.call("proxy_continue_stream", 0)})"""
    return g.module(proxy_on_request_headers=request, proxy_on_http_call_response=response)


async def _upstream() -> tuple[web.AppRunner, int]:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=f"hello {request.headers.get('x-from')}")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/echo", echo)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_http_call_timeout_and_unreachable(serve, tmp_path: Path, caplog) -> None:
    runner, port = await _upstream()
    try:
        folder = functions_dir(tmp_path)
        write_guest(folder, "caller", _http_call_guest("echo", "/echo", 1000))
        write_guest(folder, "impatient", _http_call_guest("echo", "/slow", 200))
        write_guest(folder, "stranded", _http_call_guest("nowhere", "/", 1000))
        write_guest(folder, "lost", _http_call_guest("unknown", "/", 1000))
        (folder / "lost.toml").write_text("timeout_ms = 300\n")
        config = make_config(tmp_path, folder, function_defaults={"instance_num": 1}, upstreams={
            "echo": f"http://127.0.0.1:{port}", "nowhere": f"http://127.0.0.1:{_closed_port()}"})
        client = await serve(config)

        status, _, body = await client.call("caller")
        r = Results(body)
        assert status == 200 and r.u32() == OK  # the call was accepted, the stream paused...
        assert r.u32() > 0  # ...and resumed in the callback, which saw the upstream's headers,
        assert r.ret() == (OK, b"hello wat")  # its body (buffer 4),
        assert r.ret() == (OK, b"200")  # and :status in map 6
        assert r.u32() == OK and r.u32() == 200

        started = asyncio.get_running_loop().time()
        status, _, body = await client.call("impatient")
        assert asyncio.get_running_loop().time() - started < 1.5
        r = Results(body)
        assert r.u32() == OK and r.u32() == 0  # no headers: the call failed
        assert r.ret()[1] == b""  # an empty buffer 4
        assert r.ret()[0] == NOT_FOUND  # no :status in map 6
        assert r.u32() == OK and r.u32() == 0 and b"timeout" in r.bytes()  # proxy_get_status says why

        r = Results((await client.call("stranded"))[2])
        assert r.u32() == OK and r.u32() == 0
        r.ret(), r.ret()
        assert r.u32() == OK and r.u32() == 0 and b"nowhere" in r.bytes()  # connection refused

        # Unknown upstream: refused at once (BadArgument). The stream stays paused, as in Envoy, with
        # nothing that could resume it: the request's own deadline ends it (504), not a hang.
        status, _, body = await client.call("lost")
        assert status == 504, body
        assert "proxy_http_call to unknown upstream 'unknown'" in caplog.text
    finally:
        await runner.cleanup()


async def test_tick_timer(serve, tmp_path: Path, caplog) -> None:
    caplog.set_level("INFO", logger="wasm.guest")
    g = WatGuest()
    configure = f"(drop {g.call('proxy_set_tick_period_milliseconds', 50)}) (i32.const 1)"
    tick = f"(drop {g.call('proxy_log', 2, g.s('tick!'))})"
    client = await serve_guests(serve, tmp_path, ticker=g.module(proxy_on_configure=configure, proxy_on_tick=tick))
    await asyncio.sleep(0.4)
    assert caplog.text.count("[ticker] tick!") >= 3
    assert (await client.admin_get("/functions/ticker"))[0] == 200


ABI_0_1_0_WAT = r"""
(module
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_configuration" (func $config (param i32 i32) (result i32)))
  (import "env" "proxy_continue_request" (func $continue (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 16) "legacy:")
  (func (export "proxy_abi_version_0_1_0"))
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32) (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n))) (local.get $p))
  ;; 0.1.0: proxy_on_request_headers has no end_of_stream argument
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $count i32) (result i32)
    (drop (call $set (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 16) (i32.const 7)))
    (drop (call $config (i32.const 64) (i32.const 68)))
    (drop (call $set (i32.const 1) (i32.const -1) (i32.const 0) (i32.load (i32.const 64)) (i32.load (i32.const 68))))
    (drop (call $continue))
    (i32.const 0)))
"""


async def test_abi_0_1_0_module_end_to_end(serve, tmp_path: Path) -> None:
    folder = functions_dir(tmp_path)
    (folder / "legacy.wat").write_text(ABI_0_1_0_WAT)
    (folder / "legacy.toml").write_text('plugin_config = { mode = "old" }\n')
    client = await serve(make_config(tmp_path, folder))
    status, _, body = await client.call("legacy")
    assert status == 200 and body.startswith(b"legacy:")
    assert json.loads(body[len(b"legacy:"):]) == {"mode": "old"}
    info = (await client.admin_get("/functions/legacy"))[1]["versions"][0]
    assert info["abi_version"] == "0.1.0"


async def test_envoy_attribute_properties(serve, tmp_path: Path) -> None:
    import struct

    g = WatGuest()
    paths = ["request.url_path", "request.query", "request.host", "request.headers.x-tenant", "request.scheme",
             "source.port", "connection.mtls", "plugin_root_id", "request.headers"]
    body = "\n    ".join(f"(call $emit_ret {g.call('proxy_get_property', g.s(p), RET)})" for p in paths)
    client = await serve_guests(serve, tmp_path, attrs=g.module(proxy_on_request_headers=f"{body}\n    {ANSWER}"))
    status, _, answer = await client.call("attrs", "/a/b?c=d", headers={"X-Tenant": "acme"})
    r = Results(answer)
    values = {p: r.ret() for p in paths}
    assert values["request.url_path"] == (OK, b"/a/b") and values["request.query"] == (OK, b"c=d")
    assert values["request.host"][1].startswith(b"127.0.0.1:")
    assert values["request.headers.x-tenant"] == (OK, b"acme")
    assert values["request.scheme"] == (OK, b"http")
    assert struct.unpack("<q", values["source.port"][1])[0] > 0  # integers are 8-byte little-endian
    assert values["connection.mtls"] == (OK, b"\x00")
    assert values["plugin_root_id"] == (OK, b"")
    from tests.guest_wat import parse_map
    assert ("x-tenant", "acme") in parse_map(values["request.headers"][1])  # maps are serialized

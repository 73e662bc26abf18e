"""What the implemented host imports do in normal use and at their edges, driven by WAT guests.

Each guest records statuses and returned bytes in order (see tests/guest_wat.py) and the test reads
them back from the response body, so every check goes through a real server and real HTTP.
"""

from __future__ import annotations

import logging
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ENGINE_BACKENDS, EXAMPLES, functions_dir, make_config
from tests.guest_wat import RET, U32_A, U32_B, U64, Results, WatGuest, failure, parse_map, serialize_map, write_guest

OK, NOT_FOUND, BAD_ARGUMENT = 0, 1, 2
WASI_BADF, WASI_NOTSUP = 8, 58
APPEND = 0xFFFFFFFF  # start = max size_t: the SDKs' way to append

GUEST_LOG = "wasm.guest"


async def start(serve, tmp_path: Path, *, backend: Any = None, **guests: str):
    """A server whose functions folder holds hello.wasm and the given WAT guests (one instance each)."""
    folder = functions_dir(tmp_path, EXAMPLES / "hello.wasm")
    for name, wat in guests.items():
        write_guest(folder, name, wat)
    config = make_config(tmp_path, folder, function_defaults={"instance_num": 1})
    return await serve(config, engine_backend=backend)


def u32s(wat_calls: list[str]) -> str:
    return "\n    ".join(f"(call $emit {call})" for call in wat_calls)


# -- buffers ---------------------------------------------------------------------------------------

# Both back-ends: wasmtime-py hands i32 arguments to Python signed, so start=0xFFFFFFFF must still append.
@pytest.mark.parametrize("backend", ENGINE_BACKENDS)
async def test_set_buffer_bytes_prepend_append_replace(serve, tmp_path: Path, backend: str) -> None:
    g = WatGuest()
    edits = [
        g.call("proxy_set_buffer_bytes", 1, 0, 0, g.s("world")),          # empty buffer: "world"
        g.call("proxy_set_buffer_bytes", 1, 0, 0, g.s("hello ")),         # start=0,size=0 prepends
        g.call("proxy_set_buffer_bytes", 1, APPEND, 0, g.s("!")),         # start=max appends
        g.call("proxy_set_buffer_bytes", 1, 12, 0, g.s("?")),             # start == len appends
        g.call("proxy_set_buffer_bytes", 1, 1000, 0, g.s("#")),           # start > len appends
        g.call("proxy_set_buffer_bytes", 1, 6, 5, g.s("there")),          # start < len replaces size bytes
        g.call("proxy_set_buffer_bytes", 1, 5, 0, g.s(",")),              # size 0 inside: inserts
    ]
    # Each edit must answer Ok: any other status traps (a 500).
    body = "\n    ".join(f"(if {call} (then (unreachable)))" for call in edits)
    client = await start(serve, tmp_path, backend=backend,
                         edits=g.module(proxy_on_request_headers=f"{body}\n    (i32.const 0)"))
    status, _, body_bytes = await client.call("edits")
    assert (status, body_bytes) == (200, b"hello, there!?#")


async def test_get_buffer_bytes_from_offset_and_status(serve, tmp_path: Path) -> None:
    g = WatGuest()
    get = lambda start, max_size: g.call("proxy_get_buffer_bytes", 0, start, max_size, RET)  # noqa: E731
    on_body = f"""
    (call $emit_ret {get(2, 3)})
    (call $emit_ret {get(6, 100)})
    (call $emit_ret {get(8, 4)})
    {u32s([get(9, 1),
           g.call("proxy_get_buffer_status", 0, U32_A, U32_B), f"(i32.load (i32.const {U32_A}))",
           g.call("proxy_get_buffer_bytes", 99, 0, 1, RET),
           g.call("proxy_get_buffer_status", 99, U32_A, U32_B),
           g.call("proxy_get_buffer_bytes", 4, 0, 1, RET)])}
    (call $flush)
    (i32.const 0)"""
    client = await start(serve, tmp_path, buffers=g.module(proxy_on_request_body=on_body))
    status, _, body = await client.call("buffers", method="POST", data=b"abcdefgh")
    assert status == 200
    r = Results(body)
    assert r.ret() == (OK, b"cde")  # 3 bytes from offset 2
    assert r.ret() == (OK, b"gh")  # max_size past the end: what is there
    assert r.ret() == (OK, b"")  # start == len: nothing, but not an error
    assert r.u32() == BAD_ARGUMENT  # start > len
    assert (r.u32(), r.u32()) == (OK, 8)  # proxy_get_buffer_status: the body's size
    assert r.u32() == BAD_ARGUMENT  # unknown buffer type 99
    assert r.u32() == BAD_ARGUMENT
    assert r.u32() == NOT_FOUND  # HttpCallResponseBody: a known type, not available here
    assert r.done()


# -- header maps -----------------------------------------------------------------------------------

async def test_header_map_get_add_replace_remove(serve, tmp_path: Path) -> None:
    g = WatGuest()
    value = lambda key: g.call("proxy_get_header_map_value", 0, g.s(key), RET)  # noqa: E731
    new_response_headers = serialize_map([("x-set", "a")])
    on_headers = f"""
    (call $emit_ret {value("x-a")})
    (call $emit_ret {value("X-A")})
    (call $emit {value("missing")})
    (call $emit {g.call("proxy_add_header_map_value", 0, g.s("x-a"), g.s("2"))})
    (call $emit_ret {value("x-a")})
    (call $emit {g.call("proxy_replace_header_map_value", 0, g.s("x-a"), g.s("3"))})
    (call $emit_ret {value("x-a")})
    (call $emit {g.call("proxy_remove_header_map_value", 0, g.s("x-a"))})
    (call $emit {value("x-a")})
    (call $emit {g.call("proxy_remove_header_map_value", 0, g.s("x-a"))})
    (call $emit {g.call("proxy_get_header_map_size", 0, U32_A)})
    (call $emit (i32.load (i32.const {U32_A})))
    (call $emit_ret {g.call("proxy_get_header_map_pairs", 0, RET)})
    (call $emit {g.call("proxy_set_header_map_pairs", 2, g.s(new_response_headers))})
    (call $emit {g.call("proxy_add_header_map_value", 2, g.s("x-added"), g.s("yes"))})
    (call $emit {g.call("proxy_replace_header_map_value", 2, g.s("x-replaced"), g.s("r"))})
    (call $flush)
    (i32.const 0)"""
    client = await start(serve, tmp_path, maps=g.module(proxy_on_request_headers=on_headers))
    status, headers, body = await client.call("maps", "/m", headers={"X-A": "1", "X-B": "B"})
    assert status == 200
    r = Results(body)
    assert r.ret() == (OK, b"1")
    assert r.ret() == (OK, b"1")  # keys are case-insensitive
    assert r.u32() == NOT_FOUND  # a missing header
    assert r.u32() == OK
    assert r.ret() == (OK, b"1,2")  # add keeps the old value: both, joined
    assert r.u32() == OK
    assert r.ret() == (OK, b"3")  # replace leaves one value
    assert r.u32() == OK
    assert r.u32() == NOT_FOUND  # removed
    assert r.u32() == OK  # removing a missing key is Ok (spec)
    assert r.u32() == OK
    size = r.u32()
    status_pairs, serialized = r.ret()
    assert [r.u32(), r.u32(), r.u32()] == [OK, OK, OK]  # set pairs, add, replace on the response map
    assert r.done()
    assert status_pairs == OK and size == len(serialized)  # get_header_map_size == len(serialized pairs)
    pairs = parse_map(serialized)
    assert pairs[:2] == [(":method", "GET"), (":path", "/m")]
    assert ("x-b", "B") in pairs and all(k != "x-a" for k, _ in pairs)
    # The response header map was replaced, then added to.
    assert headers["x-set"] == "a" and headers["x-added"] == "yes" and headers["x-replaced"] == "r"


async def test_bad_arguments(serve, tmp_path: Path) -> None:
    g = WatGuest()
    truncated = struct.pack("<I", 5)  # claims 5 pairs, has none
    short_entry = struct.pack("<III", 1, 10, 10) + b"k\0"  # sizes run past the end
    calls = [
        g.call("proxy_get_header_map_value", 99, g.s("x"), RET),  # unknown map type
        g.call("proxy_get_header_map_pairs", 99, RET),
        g.call("proxy_get_header_map_size", 99, U32_A),
        g.call("proxy_add_header_map_value", 99, g.s("x"), g.s("y")),
        g.call("proxy_replace_header_map_value", 99, g.s("x"), g.s("y")),
        g.call("proxy_remove_header_map_value", 99, g.s("x")),
        g.call("proxy_set_header_map_pairs", 99, g.s(serialize_map([]))),
        g.call("proxy_set_header_map_pairs", 0, g.s(truncated)),  # malformed maps
        g.call("proxy_set_header_map_pairs", 0, g.s(short_entry)),
        g.call("proxy_get_header_map_value", 0, g.s(":method"), RET),  # the request map is intact
        g.call("proxy_log", 9, g.s("never logged")),  # unknown log levels
        g.call("proxy_log", 6, g.s("never logged")),
        g.call("proxy_set_buffer_bytes", 99, 0, 0, g.s("x")),  # unknown buffer type
        g.call("proxy_continue_stream", 9),  # unknown stream type
        g.call("proxy_close_stream", 9),
    ]
    on_headers = f"{u32s(calls)}\n    (call $flush)\n    (i32.const 0)"
    client = await start(serve, tmp_path, bad_args=g.module(proxy_on_request_headers=on_headers))
    status, _, body = await client.call("bad_args")
    assert status == 200
    r = Results(body)
    got = [r.u32() for _ in calls]
    assert r.done()
    assert got == [BAD_ARGUMENT] * 9 + [OK] + [BAD_ARGUMENT] * 5


# -- logging, properties, contexts -----------------------------------------------------------------

async def test_proxy_log_and_log_level(serve, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=GUEST_LOG)
    g = WatGuest()
    calls = [g.call("proxy_log", 2, g.s("guest says hi")),
             g.call("proxy_log", 4, g.s("guest is upset")),
             g.call("proxy_log", 9, g.s("bad level")),
             g.call("proxy_get_log_level", U32_A), f"(i32.load (i32.const {U32_A}))"]
    client = await start(serve, tmp_path, logger=g.module(
        proxy_on_request_headers=f"{u32s(calls)}\n    (call $flush)\n    (i32.const 0)"))
    status, _, body = await client.call("logger")
    assert status == 200
    r = Results(body)
    assert [r.u32() for _ in calls] == [OK, OK, BAD_ARGUMENT, OK, 1]  # 1 = Debug: the logger's level
    records = [(rec.levelno, rec.getMessage()) for rec in caplog.records if rec.name == GUEST_LOG]
    assert (logging.INFO, "[logger] guest says hi") in records
    assert (logging.ERROR, "[logger] guest is upset") in records
    assert not any("bad level" in message for _, message in records)


async def test_properties(serve, tmp_path: Path) -> None:
    g = WatGuest()
    prop = lambda path: g.call("proxy_get_property", g.s(path), RET)  # noqa: E731
    on_headers = f"""
    (call $emit {prop("my.prop")})
    (call $emit_ret {prop("request.path")})
    (call $emit_ret {prop("request" + chr(0) + "method")})
    (call $emit_ret {prop("plugin_name")})
    (call $emit {prop("no.such.property")})
    (call $emit {g.call("proxy_set_property", g.s("my.prop"), g.s("set by guest"))})
    (call $emit_ret {prop("my.prop")})
    (call $emit_ret {prop("my" + chr(0) + "prop")})
    (call $emit {g.call("proxy_set_property", g.s(""), g.s("x"))})
    (call $flush)
    (i32.const 0)"""
    client = await start(serve, tmp_path, props=g.module(proxy_on_request_headers=on_headers))
    for _ in range(2):  # a property set during a request does not outlive it
        status, _, body = await client.call("props", "/p?q=1", method="PUT")
        assert status == 200
        r = Results(body)
        assert r.u32() == NOT_FOUND  # not set yet in this request
        assert r.ret() == (OK, b"/p?q=1")
        assert r.ret() == (OK, b"PUT")  # the NUL-separated path form
        assert r.ret() == (OK, b"props")  # the configured name: the file stem
        assert r.u32() == NOT_FOUND
        assert r.u32() == OK
        assert r.ret() == (OK, b"set by guest")
        assert r.ret() == (OK, b"set by guest")
        assert r.u32() == BAD_ARGUMENT  # an empty path names nothing
        assert r.done()


async def test_effective_context_and_done(serve, tmp_path: Path) -> None:
    g = WatGuest()
    calls = [g.call("proxy_set_effective_context", 12345),  # unknown id
             g.call("proxy_set_effective_context", "(local.get $ctx)"),  # this stream
             g.call("proxy_set_effective_context", 1),  # the root context
             g.call("proxy_done")]  # nothing is pending finalization
    client = await start(serve, tmp_path, contexts=g.module(
        proxy_on_request_headers=f"{u32s(calls)}\n    (call $flush)\n    (i32.const 0)"))
    status, _, body = await client.call("contexts")
    assert status == 200
    r = Results(body)
    assert [r.u32() for _ in calls] == [BAD_ARGUMENT, OK, OK, NOT_FOUND]


async def test_module_with_missing_import_is_refused(serve, tmp_path: Path) -> None:
    missing = """(module
      (import "env" "proxy_no_such_thing" (func (param i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0)))"""
    wrong_signature = """(module
      (import "env" "proxy_log" (func (param i32) (result i32)))
      (memory (export "memory") 1))"""
    client = await start(serve, tmp_path, missing_import=missing, wrong_signature=wrong_signature)
    status, functions = await client.admin_get("/functions")
    assert status == 200
    assert "env.proxy_no_such_thing (not provided)" in failure(functions["failed"], "missing_import")
    assert "env.proxy_log (module expects (i32)" in failure(functions["failed"], "wrong_signature")
    status, readiness = await client.admin_get("/actuator/health/readiness")
    assert (status, readiness["status"]) == (503, "DOWN")
    assert "proxy_no_such_thing" in failure(readiness["details"]["failed"], "missing_import")
    assert (await client.call("missing_import"))[0] == 404
    status, _, _ = await client.call("hello")  # the others keep serving
    assert status == 200


# -- WASI ------------------------------------------------------------------------------------------

async def test_fd_write_goes_to_the_guest_log(serve, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=GUEST_LOG)
    g = WatGuest()
    two_parts = struct.pack("<IIII", g.addr("part one, "), 10, g.addr("part two\n"), 9)
    stdout = struct.pack("<II", g.addr("to stdout\n"), 10)
    stderr = struct.pack("<II", g.addr("to stderr\n"), 10)
    wasi = "wasi_snapshot_preview1"
    calls = [g.call("fd_write", 1, g.addr(stdout), 1, U32_A, module=wasi), f"(i32.load (i32.const {U32_A}))",
             g.call("fd_write", 1, g.addr(two_parts), 2, U32_A, module=wasi), f"(i32.load (i32.const {U32_A}))",
             g.call("fd_write", 2, g.addr(stderr), 1, U32_A, module=wasi),
             g.call("fd_write", 5, g.addr(stdout), 1, U32_A, module=wasi)]  # no such fd
    client = await start(serve, tmp_path, printer=g.module(
        proxy_on_request_headers=f"{u32s(calls)}\n    (call $flush)\n    (i32.const 0)"))
    status, _, body = await client.call("printer")
    assert status == 200
    r = Results(body)
    assert [r.u32() for _ in calls] == [0, 10, 0, 19, 0, WASI_BADF]  # errno, bytes written
    records = [(rec.levelno, rec.getMessage()) for rec in caplog.records if rec.name == GUEST_LOG]
    assert (logging.INFO, "[printer] to stdout") in records
    assert (logging.INFO, "[printer] part one, part two") in records  # the iovecs are joined
    assert (logging.ERROR, "[printer] to stderr") in records


@pytest.mark.parametrize("wasi_module", ["wasi_snapshot_preview1", "wasi_unstable"])
async def test_proc_exit_in_a_request_answers_500(serve, tmp_path: Path, wasi_module: str) -> None:
    g = WatGuest()
    client = await start(serve, tmp_path, quitter=g.module(
        proxy_on_request_headers=f"{g.call('proc_exit', 3, module=wasi_module)}\n    (i32.const 0)"))
    for _ in range(2):  # the exited instance is replaced, and the replacement exits the same way
        status, _, body = await client.call("quitter")
        assert status == 500 and b"proc_exit(3)" in body
    assert (await client.call("hello"))[0] == 200


async def test_clocks(serve, tmp_path: Path) -> None:
    g = WatGuest()
    wasi = "wasi_snapshot_preview1"
    low, high = f"(i32.load (i32.const {U64}))", f"(i32.load (i32.const {U64 + 4}))"
    calls = [g.call("clock_time_get", 0, 1, U64, module=wasi), low, high,
             g.call("proxy_get_current_time_nanoseconds", U64), low, high,
             g.call("clock_time_get", 1, 1, U64, module=wasi),  # monotonic
             g.call("clock_time_get", 99, 1, U64, module=wasi)]  # no such clock
    client = await start(serve, tmp_path, clock=g.module(
        proxy_on_request_headers=f"{u32s(calls)}\n    (call $flush)\n    (i32.const 0)"))
    before = time.time_ns()
    status, _, body = await client.call("clock")
    after = time.time_ns()
    assert status == 200
    r = Results(body)
    assert r.u32() == 0
    wasi_now = r.u32() | r.u32() << 32
    assert r.u32() == OK
    proxy_now = r.u32() | r.u32() << 32  # a full u64 (Layotto writes only 32 bits)
    assert before <= wasi_now <= proxy_now <= after  # the wall clock, in Unix-epoch nanoseconds
    assert (r.u32(), r.u32()) == (0, WASI_NOTSUP)


# -- the stream lifecycle --------------------------------------------------------------------------

async def test_a_pause_nothing_resumes_answers_504_at_the_deadline(serve, tmp_path: Path) -> None:
    # As in Envoy, a paused stream waits for a later callback to resume it (tests/abi/test_pause_resume.py);
    # when none does, the request's own deadline ends it and the instance serves the next request.
    g = WatGuest()
    folder = functions_dir(tmp_path, EXAMPLES / "hello.wasm")
    write_guest(folder, "pauser", g.module(proxy_on_request_headers="(i32.const 1)"))
    client = await serve(make_config(tmp_path, folder, function_defaults={"instance_num": 1, "timeout_ms": 300}))
    started = time.perf_counter()
    status, _, _ = await client.call("pauser")
    assert status == 504 and 0.25 < time.perf_counter() - started < 5
    assert (await client.call("pauser"))[0] == 504  # the same single instance answers again
    _, info = await client.admin_get("/functions/pauser")
    assert info["versions"][0]["replaced_instances"] == 0


TRACE = 2048  # where the lifecycle guests record which callbacks ran


def _tracing_guest(g: WatGuest) -> None:
    g.extra.append(f"""  (global $trace_len (mut i32) (i32.const 0))
  (func $trace (param $c i32)
    (i32.store8 (i32.add (i32.const {TRACE}) (global.get $trace_len)) (local.get $c))
    (global.set $trace_len (i32.add (global.get $trace_len) (i32.const 1))))""")


async def test_response_callbacks_run_after_request_callbacks(serve, tmp_path: Path) -> None:
    g = WatGuest()
    _tracing_guest(g)
    size = f"(i32.load (i32.const {U32_A}))"
    module = g.module(
        proxy_on_request_headers=f"""(global.set $trace_len (i32.const 0))
    (call $trace (i32.const 72))  ;; H
    (drop {g.call("proxy_set_buffer_bytes", 1, 0, 0, g.s("req"))})
    (i32.const 0)""",
        proxy_on_request_body="(call $trace (i32.const 66)) (i32.const 0)",  # B
        proxy_on_response_headers=f"""(call $trace (i32.const 104))  ;; h
    (drop {g.call("proxy_add_header_map_value", 2, g.s("x-resp"), g.s("added"))})
    (i32.const 0)""",
        proxy_on_response_body=f"""(call $trace (i32.const 98))  ;; b
    (call $trace (i32.add (i32.const 48) (local.get $size)))  ;; the body size it was given, as a digit
    (drop {g.call("proxy_set_buffer_bytes", 1, 0, 0, g.s("pre-"))})
    (drop {g.call("proxy_get_buffer_status", 1, U32_A, U32_B)})
    (drop {g.call("proxy_set_buffer_bytes", 1, size, 0, g.s("|"))})
    (drop {g.call("proxy_get_buffer_status", 1, U32_A, U32_B)})
    (drop {g.call("proxy_set_buffer_bytes", 1, size, 0, f"(i32.const {TRACE})", "(global.get $trace_len)")})
    (i32.const 0)""")
    client = await start(serve, tmp_path, lifecycle=module)
    status, headers, body = await client.call("lifecycle", method="POST", data=b"x")
    assert (status, body) == (200, b"pre-req|HBhb3")
    assert headers["x-resp"] == "added"
    status, headers, body = await client.call("lifecycle")  # no body, no query: no proxy_on_request_body
    assert (status, body) == (200, b"pre-req|Hhb3")


async def test_done_log_delete_order(serve, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The spec's order: proxy_on_done, then proxy_on_log (after done returned true), then proxy_on_delete,
    all for the stream's context."""
    g = WatGuest()
    g.extra.append("  (global $stream (mut i32) (i32.const -1))")

    def log(message: str) -> str:
        return f"(drop {g.call('proxy_log', 2, g.s(message))})"

    def same_context(callback: str) -> str:
        return (f"(if (i32.eq (local.get $ctx) (global.get $stream)) (then {log(callback)}) "
                f"(else {log(callback + ' on another context')}))")

    module = g.module(
        proxy_on_request_headers=f"(global.set $stream (local.get $ctx)) {log('request_headers')} (i32.const 0)",
        proxy_on_done=f"{same_context('done')} (i32.const 1)",
        proxy_on_log=same_context("log"),
        proxy_on_delete=same_context("delete"))
    client = await start(serve, tmp_path, order=module)
    caplog.set_level(logging.INFO, logger=GUEST_LOG)
    caplog.clear()
    status, _, _ = await client.call("order")
    assert status == 200
    messages = [rec.getMessage() for rec in caplog.records if rec.name == GUEST_LOG]
    assert messages == ["[order] request_headers", "[order] done", "[order] log", "[order] delete"]

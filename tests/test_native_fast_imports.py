"""The native back-end's C fast paths of proxy_get_header_map_value, proxy_add_header_map_value,
proxy_set_buffer_bytes, proxy_get_buffer_status, proxy_get_buffer_bytes and
proxy_send_local_response (abi/engine/_native_fast.c): every case gives exactly what the Python
implementations give. Each scenario runs the same guest twice, on a linker built with the fast
paths and on one built without (`_native_backend.FAST_IMPORTS = False`), and compares everything
observable: the statuses, guest memory, the maps, the bodies, the local response, the bytes
charged, the trap. Counting the Python implementations' calls shows which path each case took."""

from __future__ import annotations

import dataclasses
import gc
import struct
import tracemalloc
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import wasmtime

from abi import HostServices, HttpRequest, PluginSettings, ProxyWasmVM, WasmEngine, all_host_functions
from abi.engine import HostFunction, available_backends
from abi.http import HttpResponse
from abi.limits import ENTRY_COST, MAX_MAP_ENTRIES
from abi.maps import encode_map

pytestmark = pytest.mark.skipif("native" not in available_backends(), reason="the C extension is not built")

FAST = ("proxy_get_header_map_value", "proxy_add_header_map_value", "proxy_set_buffer_bytes",
        "proxy_get_buffer_status", "proxy_get_buffer_bytes", "proxy_send_local_response")
OK, NOT_FOUND, BAD_ARGUMENT, INVALID_MEMORY_ACCESS = 0, 1, 2, 6
REQUEST_HEADERS, RESPONSE_HEADERS, REQUEST_BODY, RESPONSE_BODY = 0, 2, 0, 1
DOWNSTREAM_DATA, CALL_RESPONSE_BODY, VM_CONFIGURATION, PLUGIN_CONFIGURATION, CALL_DATA = 2, 4, 6, 7, 8
APPEND = 0xFFFFFFFF

# Guest memory: the allocator's mode, the results of the scenario's calls, the out-pointers, more
# out-parameters (OUTS), strings, heap.
MODE, ITERATIONS, RESULTS, RET_PTR, RET_SIZE, OUTS, STRINGS, HEAP = 8, 12, 256, 512, 516, 768, 1024, 32768
FAR = 0xFFFFFFF0  # outside the one page
# Allocator modes: bump, 0, trap, out-of-range pointer, a fresh page (memory.grow), always HEAP, and
# bump after emptying the request body (proxy_set_buffer_bytes from inside the allocator).
BUMP, ZERO, TRAP, OUTSIDE, GROW, FIXED, EMPTY_BODY = range(7)

REQUEST_HEADER_LIST = [("greeting", "hi"), ("dup", "a"), ("dup", "b"), ("x-utf", "h\u00e9llo"),
                       ("x-\u00fcni", "v"), ("x-empty", "")]


class Strings:
    """Constant strings of a guest: each is placed once and passed as (pointer, length)."""

    def __init__(self) -> None:
        self.data: dict[bytes, int] = {}
        self.next = STRINGS

    def __call__(self, text: str | bytes) -> str:
        raw = text.encode() if isinstance(text, str) else text
        if raw not in self.data:
            self.data[raw] = self.next
            self.next += len(raw) + 1
        return f"(i32.const {self.data[raw]}) (i32.const {len(raw)})"

    def segments(self) -> str:
        return "\n  ".join(f'(data (i32.const {at}) "{_escaped(raw)}")' for raw, at in self.data.items())


def _escaped(raw: bytes) -> str:
    return "".join(f"\\{byte:02x}" for byte in raw)


def guest_module(s: Strings, calls: list[str], loop: list[str] | None = None) -> bytes:
    """proxy_on_request_headers stores each call's status at RESULTS + 4 i; then (with `loop`) runs
    those calls [ITERATIONS] times, trapping on any status but OK and NOT_FOUND."""
    stores = "\n    ".join(f"(i32.store (i32.const {RESULTS + 4 * i}) {call})" for i, call in enumerate(calls))
    repeated = "\n      ".join(f"(if (i32.gt_u {call} (i32.const {NOT_FOUND})) (then unreachable))"
                               for call in loop or [])
    signature = "(param i32 i32 i32 i32 i32) (result i32)"
    wat = f"""(module
  (import "env" "proxy_get_header_map_value" (func $get {signature}))
  (import "env" "proxy_add_header_map_value" (func $add {signature}))
  (import "env" "proxy_set_buffer_bytes" (func $set {signature}))
  (import "env" "proxy_get_buffer_status" (func $status (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $bytes {signature}))
  (import "env" "proxy_send_local_response" (func $respond (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  {s.segments()}
  (global $heap (mut i32) (i32.const {HEAP}))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32) (local $mode i32)
    (local.set $mode (i32.load (i32.const {MODE})))
    (if (i32.eq (local.get $mode) (i32.const {ZERO})) (then (return (i32.const 0))))
    (if (i32.eq (local.get $mode) (i32.const {TRAP})) (then unreachable))
    (if (i32.eq (local.get $mode) (i32.const {OUTSIDE})) (then (return (i32.const 0xFFFFFF00))))
    (if (i32.eq (local.get $mode) (i32.const {GROW}))
      (then (return (i32.mul (memory.grow (i32.const 1)) (i32.const 65536)))))
    (if (i32.eq (local.get $mode) (i32.const {FIXED})) (then (return (i32.const {HEAP}))))
    (if (i32.eq (local.get $mode) (i32.const {EMPTY_BODY}))
      (then (drop (call $set (i32.const {REQUEST_BODY}) (i32.const 0) (i32.const -1) (i32.const 0) (i32.const 0)))))
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (local.get $n)))
    (local.get $p))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (local $i i32)
    {stores}
    (local.set $i (i32.load (i32.const {ITERATIONS})))
    (block $done (loop $again
      (br_if $done (i32.eqz (local.get $i)))
      {repeated}
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (br $again)))
    (i32.const 0)))"""
    return bytes(wasmtime.wat2wasm(wat))


CALLS: Counter[str] = Counter()  # calls of the Python implementations of FAST


def _counted(host: HostFunction) -> HostFunction:
    if host.name not in FAST:
        return host
    impl = host.impl

    def counting(vm: Any, *args: int) -> int:
        CALLS[host.name] += 1
        return impl(vm, *args)

    return dataclasses.replace(host, impl=counting)


@pytest.fixture(scope="module")
def linkers() -> dict[bool, Any]:
    from abi.engine import _native_backend

    engine = WasmEngine("native")
    functions = [_counted(host) for host in all_host_functions()]
    fast = engine.linker(functions)
    _native_backend.FAST_IMPORTS = False
    try:
        slow = engine.linker(functions)
    finally:
        _native_backend.FAST_IMPORTS = True
    return {True: fast, False: slow}


Prepare = Callable[[Any], None]


def run(linkers: dict[bool, Any], fast: bool, module: bytes, *, mode: int = BUMP, iterations: int = 0,
        prepare: Prepare | None = None, limit: int | None = None, results: int = 8, request_body: bytes = b"",
        call_buffers: dict[int, bytes] | None = None, streamless: bool = False) -> dict[str, Any]:
    """`call_buffers`: as in an http-call callback; `streamless`: the guest runs with no stream (as
    root-context work does), called directly instead of through run_step."""
    linker = linkers[fast]
    compiled = linker.engine.compile(module)
    settings = PluginSettings(name="fast", memory_limit_bytes=limit, vm_config=b"vm-config",
                              plugin_config=b"plugin-config")
    vm = ProxyWasmVM(linker.engine, linker, compiled, settings, HostServices())
    vm.start()
    vm.guest.write_u32(MODE, mode)
    vm.guest.write_u32(ITERATIONS, iterations)
    request = HttpRequest.build("GET", "/x", list(REQUEST_HEADER_LIST), authority="localhost", lowered=True)
    stream = vm.open_stream(request, None, 10.0)
    stream.request_body.extend(request_body)
    vm.call_data.extend(b"call-data")
    if prepare is not None:
        prepare(stream)
    if call_buffers is not None:
        vm.call_buffers = call_buffers
    CALLS.clear()
    error = None
    try:
        if streamless:
            on_request_headers = vm.guest.func("proxy_on_request_headers")
            assert on_request_headers is not None
            on_request_headers(stream.context_id, 0, 1)
        else:
            vm.run_step(stream, "request_headers", True)
    except Exception as failure:  # noqa: BLE001 - the failure is part of what is compared
        error = (type(failure).__name__, str(failure))
    return {"error": error, "statuses": [vm.guest.read_u32(RESULTS + 4 * i) for i in range(results)],
            "ret": vm.guest.read(RET_PTR, 8), "outs": vm.guest.read(OUTS, 64), "heap": vm.guest.read(HEAP, 256),
            "memory_size": vm.guest._memory.data_len(vm.guest.store) if vm.guest._memory else 0,
            "request_headers": list(stream.request_headers), "response_headers": list(stream.response.headers),
            "body": bytes(stream.response_body), "request_body": bytes(stream.request_body),
            "local_response": stream.local_response, "guest_bytes": stream.guest_bytes,
            "python_calls": dict(CALLS)}


def same_both_ways(linkers: dict[bool, Any], module: bytes, **options: Any) -> tuple[dict[str, Any], dict[str, int]]:
    """What the guest observes (identical with and without the fast paths), and the Python
    implementations' calls with them on."""
    slow = run(linkers, False, module, **options)
    fast = run(linkers, True, module, **options)
    fast_calls = fast.pop("python_calls")
    slow.pop("python_calls")
    assert fast == slow
    return fast, fast_calls


def get_value(s: Strings, key: str | bytes, *, map_type: int = REQUEST_HEADERS, out: tuple[int, int] = (RET_PTR,
              RET_SIZE)) -> str:
    return f"(call $get (i32.const {map_type}) {s(key)} (i32.const {out[0]}) (i32.const {out[1]}))"


def returned(seen: dict[str, Any], heap_offset: int = 0) -> bytes:
    """The bytes a get returned through RET (read from the heap the bump allocator hands out)."""
    ptr = int.from_bytes(seen["ret"][:4], "little")
    size = int.from_bytes(seen["ret"][4:], "little")
    assert HEAP <= ptr < HEAP + 256 - size
    return seen["heap"][ptr - HEAP:ptr - HEAP + size]


# -- proxy_get_header_map_value -------------------------------------------------------------------

@pytest.mark.parametrize(("key", "status", "value", "fast"), [
    ("greeting", OK, b"hi", True),
    ("GREETING", OK, b"hi", True),  # lower-cased as str.lower() does
    (":method", OK, b"GET", True),
    ("missing", NOT_FOUND, None, True),
    ("a" * 300, NOT_FOUND, None, False),  # a long key: left to Python
    ("dup", OK, b"a,b", False),  # several values: joined by Python
    ("x-utf", OK, "h\u00e9llo".encode(), False),  # a non-ASCII value
    ("X-\u00dcNI", OK, b"v", False),  # a non-ASCII key (Unicode lower-casing)
    (b"x-\xff", NOT_FOUND, None, False),  # not UTF-8 at all
])
def test_get_header_map_value(linkers: dict[bool, Any], key: str | bytes, status: int, value: bytes | None,
                              fast: bool) -> None:
    s = Strings()
    seen, calls = same_both_ways(linkers, guest_module(s, [get_value(s, key)]))
    assert seen["error"] is None and seen["statuses"][0] == status
    if value is not None:
        assert returned(seen) == value
    assert calls.get("proxy_get_header_map_value", 0) == (0 if fast else 1)


def test_get_header_map_value_of_an_empty_value_skips_the_allocator(linkers: dict[bool, Any]) -> None:
    s = Strings()
    seen, calls = same_both_ways(linkers, guest_module(s, [get_value(s, "x-empty")]), mode=TRAP)
    assert seen["error"] is None and seen["statuses"][0] == OK and seen["ret"] == bytes(8)
    assert calls == {}


def test_get_header_map_value_bad_pointers(linkers: dict[bool, Any]) -> None:
    s = Strings()
    calls = [f"(call $get (i32.const 0) (i32.const {FAR}) (i32.const 4) (i32.const {RET_PTR}) (i32.const {RET_SIZE}))",
             get_value(s, "greeting", out=(FAR, RET_SIZE)),
             get_value(s, "greeting", out=(RET_PTR, FAR)),
             get_value(s, "missing", out=(FAR, FAR)),  # not found: the out-pointers are never used
             get_value(s, "greeting", out=(65534, RET_SIZE))]  # straddles the end of memory
    seen, python_calls = same_both_ways(linkers, guest_module(s, calls))
    assert seen["error"] is None
    assert seen["statuses"][:5] == [INVALID_MEMORY_ACCESS, INVALID_MEMORY_ACCESS, INVALID_MEMORY_ACCESS, NOT_FOUND,
                                    INVALID_MEMORY_ACCESS]
    assert seen["ret"] == bytes(8) and python_calls == {"proxy_get_header_map_value": 5}


@pytest.mark.parametrize(("mode", "status"), [(ZERO, INVALID_MEMORY_ACCESS), (OUTSIDE, INVALID_MEMORY_ACCESS),
                                              (GROW, OK), (FIXED, OK)])
def test_get_header_map_value_allocator_results(linkers: dict[bool, Any], mode: int, status: int) -> None:
    s = Strings()
    seen, calls = same_both_ways(linkers, guest_module(s, [get_value(s, "greeting")]), mode=mode)
    assert seen["error"] is None and seen["statuses"][0] == status and calls == {}
    if mode == GROW:  # the value went into the page the allocator just added
        assert seen["memory_size"] == 2 * 65536 and seen["ret"] == (65536).to_bytes(4, "little") + b"\2\0\0\0"


def test_get_header_map_value_allocator_trapping(linkers: dict[bool, Any]) -> None:
    s = Strings()
    seen, calls = same_both_ways(linkers, guest_module(s, [get_value(s, "greeting")]), mode=TRAP)
    assert seen["error"] is not None and "unreachable" in seen["error"][1]
    assert calls == {}


def test_get_header_map_value_of_other_maps_is_python(linkers: dict[bool, Any]) -> None:
    s = Strings()
    calls = [get_value(s, "x-hello", map_type=RESPONSE_HEADERS), get_value(s, "x", map_type=1),
             get_value(s, "x", map_type=99)]
    seen, python_calls = same_both_ways(linkers, guest_module(s, calls),
                                        prepare=lambda stream: stream.response.headers.append(("x-hello", "1")))
    assert seen["statuses"][:3] == [OK, NOT_FOUND, BAD_ARGUMENT] and returned(seen) == b"1"
    assert python_calls == {"proxy_get_header_map_value": 3}


# -- proxy_add_header_map_value -------------------------------------------------------------------

def add_value(s: Strings, key: str | bytes, value: str | bytes, map_type: int = RESPONSE_HEADERS) -> str:
    return f"(call $add (i32.const {map_type}) {s(key)} {s(value)})"


def test_add_header_map_value(linkers: dict[bool, Any]) -> None:
    s = Strings()
    calls = [add_value(s, "X-Hello", "1"), add_value(s, "x-hello", "2"), add_value(s, "x-empty", ""),
             add_value(s, "x-utf", "h\u00e9llo"), add_value(s, b"x-bad", b"\xff\xfe")]
    seen, python_calls = same_both_ways(linkers, guest_module(s, calls))
    assert seen["error"] is None and seen["statuses"][:5] == [OK] * 5
    assert seen["response_headers"] == [("x-hello", "1"), ("x-hello", "2"), ("x-empty", ""),
                                        ("x-utf", "h\u00e9llo"), ("x-bad", "\udcff\udcfe")]
    assert seen["guest_bytes"] == sum(len(k) + len(v) + ENTRY_COST for k, v in seen["response_headers"])
    assert python_calls == {}  # an ASCII name: any value is decoded in C exactly as Python does


def test_add_header_map_value_fallbacks(linkers: dict[bool, Any]) -> None:
    s = Strings()
    calls = [add_value(s, "X-\u00dcNI", "v"),  # Unicode lower-casing: Python
             add_value(s, "x-request", "1", map_type=REQUEST_HEADERS),
             add_value(s, "x", "1", map_type=99),
             f"(call $add (i32.const 2) (i32.const {FAR}) (i32.const 2) {s('v')})",
             f"(call $add (i32.const 2) {s('k')} (i32.const 65535) (i32.const 2))"]
    seen, python_calls = same_both_ways(linkers, guest_module(s, calls))
    assert seen["error"] is None
    assert seen["statuses"][:5] == [OK, OK, BAD_ARGUMENT, INVALID_MEMORY_ACCESS, INVALID_MEMORY_ACCESS]
    assert seen["response_headers"] == [("x-\u00fcni", "v")] and seen["request_headers"][-1] == ("x-request", "1")
    assert python_calls == {"proxy_add_header_map_value": 5}


def test_add_header_map_value_over_the_entry_limit_traps(linkers: dict[bool, Any]) -> None:
    s = Strings()
    module = guest_module(s, [add_value(s, "x-one", "1"), add_value(s, "x-two", "2")])

    def almost_full(stream: Any) -> None:
        stream.response.headers.extend([("x-filler", "")] * (MAX_MAP_ENTRIES - 1))

    seen, calls = same_both_ways(linkers, module, prepare=almost_full)
    assert seen["error"][0] == "HostLimitExceeded" and "entries" in seen["error"][1]
    assert seen["statuses"][0] == OK and len(seen["response_headers"]) == MAX_MAP_ENTRIES
    assert calls == {"proxy_add_header_map_value": 1}  # the first in C, the one over the limit in Python


def test_add_header_map_value_over_the_memory_limit_traps(linkers: dict[bool, Any]) -> None:
    s = Strings()
    limit = 1 << 20
    module = guest_module(s, [add_value(s, "k", "v"), add_value(s, "k", "vv")])
    cost = 2 + ENTRY_COST

    def nearly_spent(stream: Any) -> None:
        stream.guest_bytes = limit - cost  # the first entry fits exactly, the second does not

    seen, calls = same_both_ways(linkers, module, prepare=nearly_spent, limit=limit)
    assert seen["error"][0] == "HostLimitExceeded" and "memory limit" in seen["error"][1]
    assert seen["guest_bytes"] == limit and seen["response_headers"] == [("k", "v")]
    assert calls == {"proxy_add_header_map_value": 1}


# -- proxy_set_buffer_bytes -----------------------------------------------------------------------

def set_bytes(s: Strings, start: int, size: int, data: str, buffer_type: int = RESPONSE_BODY) -> str:
    return f"(call $set (i32.const {buffer_type}) (i32.const {start}) (i32.const {size}) {s(data)})"


def test_set_buffer_bytes_append_and_replace(linkers: dict[bool, Any]) -> None:
    s = Strings()
    calls = [set_bytes(s, 0, 0, "world"), set_bytes(s, APPEND, 0, "!"), set_bytes(s, 6, 0, "?"),
             set_bytes(s, 1000, 0, ""), set_bytes(s, 0, 0, "hello "), set_bytes(s, 6, 5, "there"),
             set_bytes(s, 0, 0, "req", buffer_type=REQUEST_BODY), set_bytes(s, 0, 0, "x", buffer_type=99)]
    seen, python_calls = same_both_ways(linkers, guest_module(s, calls))
    assert seen["error"] is None and seen["statuses"] == [OK] * 7 + [BAD_ARGUMENT]
    assert seen["body"] == b"hello there!?"
    assert python_calls == {"proxy_set_buffer_bytes": 4}  # the replacements and the other buffers


def test_set_buffer_bytes_bad_pointer(linkers: dict[bool, Any]) -> None:
    s = Strings()
    calls = [f"(call $set (i32.const 1) (i32.const 0) (i32.const 0) (i32.const {FAR}) (i32.const 4))",
             "(call $set (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 65535) (i32.const 2))"]
    seen, python_calls = same_both_ways(linkers, guest_module(s, calls))
    assert seen["statuses"][:2] == [INVALID_MEMORY_ACCESS] * 2 and seen["body"] == b""
    assert python_calls == {"proxy_set_buffer_bytes": 2}


def test_set_buffer_bytes_over_the_limit_traps(linkers: dict[bool, Any]) -> None:
    s = Strings()
    limit = 1 << 20
    module = guest_module(s, [set_bytes(s, APPEND, 0, "ab"), set_bytes(s, APPEND, 0, "c")])

    def nearly_full(stream: Any) -> None:
        stream.response_body.extend(bytes(limit - 2))  # "ab" fills it exactly, "c" is one byte over

    seen, calls = same_both_ways(linkers, module, prepare=nearly_full, limit=limit)
    assert seen["error"][0] == "HostLimitExceeded" and "response body" in seen["error"][1]
    assert len(seen["body"]) == limit and seen["body"].endswith(b"ab")
    assert calls == {"proxy_set_buffer_bytes": 1}


# -- proxy_get_buffer_status ----------------------------------------------------------------------

BODY = b"hello world"


def out(i: int) -> tuple[int, int]:
    """The i-th out-parameter pair in OUTS."""
    return OUTS + 8 * i, OUTS + 8 * i + 4


def outs(seen: dict[str, Any], count: int) -> list[tuple[int, int]]:
    """The first `count` out-parameter pairs the calls wrote into OUTS."""
    words = [int.from_bytes(seen["outs"][4 * i:4 * i + 4], "little") for i in range(2 * count)]
    return list(zip(words[::2], words[1::2], strict=True))


def status_of(buffer_type: int, at: tuple[int, int]) -> str:
    return f"(call $status (i32.const {buffer_type}) (i32.const {at[0]}) (i32.const {at[1]}))"


def test_get_buffer_status(linkers: dict[bool, Any]) -> None:
    s = Strings()
    calls = [status_of(REQUEST_BODY, out(0)), status_of(RESPONSE_BODY, out(1)), set_bytes(s, APPEND, 0, "!"),
             status_of(RESPONSE_BODY, out(2))]
    seen, python_calls = same_both_ways(linkers, guest_module(s, calls), request_body=BODY,
                                        prepare=lambda stream: stream.response_body.extend(b"response"))
    assert seen["error"] is None and seen["statuses"][:4] == [OK] * 4
    assert outs(seen, 3) == [(len(BODY), 0), (8, 0), (9, 0)]  # (size, flags 0)
    assert python_calls == {}


def test_get_buffer_status_fallbacks(linkers: dict[bool, Any]) -> None:
    calls = [status_of(REQUEST_BODY, (FAR, OUTS)), status_of(REQUEST_BODY, (OUTS, FAR)),
             status_of(RESPONSE_BODY, (65534, OUTS)),  # straddles the end of memory
             status_of(DOWNSTREAM_DATA, out(0)), status_of(VM_CONFIGURATION, out(1)),
             status_of(PLUGIN_CONFIGURATION, out(2)), status_of(CALL_DATA, out(3)), status_of(99, out(4)),
             status_of(CALL_RESPONSE_BODY, out(5))]
    seen, python_calls = same_both_ways(linkers, guest_module(Strings(), calls), results=9, request_body=BODY)
    assert seen["error"] is None
    assert seen["statuses"] == [INVALID_MEMORY_ACCESS] * 3 + [NOT_FOUND, OK, OK, OK, BAD_ARGUMENT, NOT_FOUND]
    assert outs(seen, 6) == [(0, 0), (9, 0), (13, 0), (9, 0), (0, 0), (0, 0)]
    assert python_calls == {"proxy_get_buffer_status": 9}


def test_get_buffer_status_in_a_call_callback(linkers: dict[bool, Any]) -> None:
    """In an http-call callback the stream's bodies are still fast; the call's body is Python's."""
    calls = [status_of(CALL_RESPONSE_BODY, out(0)), status_of(REQUEST_BODY, out(1))]
    seen, python_calls = same_both_ways(linkers, guest_module(Strings(), calls), request_body=BODY,
                                        call_buffers={CALL_RESPONSE_BODY: b"reply"})
    assert seen["statuses"][:2] == [OK, OK] and outs(seen, 2) == [(5, 0), (len(BODY), 0)]
    assert python_calls == {"proxy_get_buffer_status": 1}


def test_get_buffer_status_without_a_stream_is_python(linkers: dict[bool, Any]) -> None:
    calls = [status_of(REQUEST_BODY, out(0)), status_of(RESPONSE_BODY, out(1)), status_of(REQUEST_BODY, (FAR, FAR))]
    seen, python_calls = same_both_ways(linkers, guest_module(Strings(), calls), request_body=BODY, streamless=True)
    assert seen["error"] is None and seen["statuses"][:3] == [NOT_FOUND] * 3  # the buffer first, then memory
    assert python_calls == {"proxy_get_buffer_status": 3}


# -- proxy_get_buffer_bytes -----------------------------------------------------------------------

def get_bytes(buffer_type: int, start: int, max_size: int, at: tuple[int, int] = (RET_PTR, RET_SIZE)) -> str:
    return (f"(call $bytes (i32.const {buffer_type}) (i32.const {start}) (i32.const {max_size}) "
            f"(i32.const {at[0]}) (i32.const {at[1]}))")


def with_body(buffer_type: int) -> dict[str, Any]:
    """run()'s options that put BODY into the body of `buffer_type`."""
    if buffer_type == REQUEST_BODY:
        return {"request_body": BODY}
    return {"prepare": lambda stream: stream.response_body.extend(BODY)}


@pytest.mark.parametrize("buffer_type", [REQUEST_BODY, RESPONSE_BODY])
@pytest.mark.parametrize(("start", "max_size", "status", "value", "fast"), [
    (0, 5, OK, b"hello", True),
    (6, 100, OK, b"world", True),
    (0, 0xFFFFFFFF, OK, BODY, True),  # start + max_size past 2**32: still the rest of the body
    (10, 1, OK, b"d", True),
    (3, 0, OK, b"", True),  # empty results: (0, 0), and the allocator is not called
    (11, 5, OK, b"", True),  # at the end
    (12, 1, BAD_ARGUMENT, None, False),  # past the end: Python's answer
    (0xFFFFFFFF, 1, BAD_ARGUMENT, None, False),
])
def test_get_buffer_bytes(linkers: dict[bool, Any], buffer_type: int, start: int, max_size: int, status: int,
                          value: bytes | None, fast: bool) -> None:
    module = guest_module(Strings(), [get_bytes(buffer_type, start, max_size)])
    seen, calls = same_both_ways(linkers, module, mode=TRAP if value == b"" else BUMP, **with_body(buffer_type))
    assert seen["error"] is None and seen["statuses"][0] == status
    if value:
        assert returned(seen) == value
    elif value == b"":
        assert seen["ret"] == bytes(8)
    assert calls.get("proxy_get_buffer_bytes", 0) == (0 if fast else 1)


@pytest.mark.parametrize(("mode", "status"), [(ZERO, INVALID_MEMORY_ACCESS), (OUTSIDE, INVALID_MEMORY_ACCESS),
                                              (GROW, OK), (FIXED, OK)])
def test_get_buffer_bytes_allocator_results(linkers: dict[bool, Any], mode: int, status: int) -> None:
    module = guest_module(Strings(), [get_bytes(REQUEST_BODY, 0, 5)])
    seen, calls = same_both_ways(linkers, module, mode=mode, request_body=BODY)
    assert seen["error"] is None and seen["statuses"][0] == status and calls == {}
    if mode == GROW:  # the bytes went into the page the allocator just added
        assert seen["memory_size"] == 2 * 65536 and seen["ret"] == (65536).to_bytes(4, "little") + b"\5\0\0\0"


def test_get_buffer_bytes_allocator_trapping(linkers: dict[bool, Any]) -> None:
    module = guest_module(Strings(), [get_bytes(REQUEST_BODY, 0, 5)])
    seen, calls = same_both_ways(linkers, module, mode=TRAP, request_body=BODY)
    assert seen["error"] is not None and "unreachable" in seen["error"][1]
    assert calls == {}


def test_get_buffer_bytes_returns_the_body_as_it_was_before_allocating(linkers: dict[bool, Any]) -> None:
    """The allocator is guest code: here it empties the body it is allocating for."""
    module = guest_module(Strings(), [get_bytes(REQUEST_BODY, 6, 100)])
    seen, calls = same_both_ways(linkers, module, mode=EMPTY_BODY, request_body=BODY)
    assert seen["error"] is None and seen["statuses"][0] == OK
    assert returned(seen) == b"world" and seen["request_body"] == b""
    assert calls == {"proxy_set_buffer_bytes": 1}  # the replacement inside the allocator


def test_get_buffer_bytes_bad_pointers(linkers: dict[bool, Any]) -> None:
    calls = [get_bytes(REQUEST_BODY, 0, 5, (FAR, RET_SIZE)), get_bytes(REQUEST_BODY, 0, 5, (RET_PTR, FAR)),
             get_bytes(RESPONSE_BODY, 0, 5, (65534, RET_SIZE)),  # straddles the end of memory
             get_bytes(REQUEST_BODY, 3, 0, (FAR, FAR)),  # an empty result: the pointers are still checked
             get_bytes(REQUEST_BODY, 100, 5, (FAR, FAR))]  # past the end: answered before the pointers
    seen, python_calls = same_both_ways(linkers, guest_module(Strings(), calls), mode=TRAP, request_body=BODY)
    assert seen["error"] is None
    assert seen["statuses"][:5] == [INVALID_MEMORY_ACCESS] * 4 + [BAD_ARGUMENT]
    assert python_calls == {"proxy_get_buffer_bytes": 5}


def test_get_buffer_bytes_of_other_buffers_is_python(linkers: dict[bool, Any]) -> None:
    calls = [get_bytes(VM_CONFIGURATION, 0, 100, out(0)), get_bytes(PLUGIN_CONFIGURATION, 7, 100, out(1)),
             get_bytes(CALL_DATA, 0, 4, out(2)), get_bytes(CALL_RESPONSE_BODY, 1, 3, out(3)),
             get_bytes(DOWNSTREAM_DATA, 0, 1, out(4)), get_bytes(99, 0, 1, out(5))]
    seen, python_calls = same_both_ways(linkers, guest_module(Strings(), calls), request_body=BODY,
                                        call_buffers={CALL_RESPONSE_BODY: b"reply"})
    assert seen["error"] is None and seen["statuses"][:6] == [OK] * 4 + [NOT_FOUND, BAD_ARGUMENT]
    heap = seen["heap"]
    assert [heap[ptr - HEAP:ptr - HEAP + size] for ptr, size in outs(seen, 4)] == [b"vm-config", b"config",
                                                                                   b"call", b"epl"]
    assert python_calls == {"proxy_get_buffer_bytes": 6}


def test_get_buffer_bytes_without_a_stream_is_python(linkers: dict[bool, Any]) -> None:
    calls = [get_bytes(REQUEST_BODY, 0, 5), get_bytes(RESPONSE_BODY, 0, 5)]
    seen, python_calls = same_both_ways(linkers, guest_module(Strings(), calls), request_body=BODY, streamless=True)
    assert seen["statuses"][:2] == [NOT_FOUND] * 2 and python_calls == {"proxy_get_buffer_bytes": 2}


# -- proxy_send_local_response --------------------------------------------------------------------

NO_GRPC_STATUS = 0xFFFFFFFF
HEADERS = [("X-Hello", "1"), ("x-utf", "h\u00e9llo"), ("x-bad", "\udcff\udcfe")]  # the last: not UTF-8


def respond(s: Strings, status: int = 200, *, details: str | bytes = "", body: str | bytes = "",
            headers: bytes | None = None, grpc_status: int = NO_GRPC_STATUS, raw: str | None = None) -> str:
    """`raw`: the (pointer, size) arguments of details, body and headers, spelled out."""
    spans = raw or f"{s(details)} {s(body)} {s(encode_map(HEADERS) if headers is None else headers)}"
    return f"(call $respond (i32.const {status}) {spans} (i32.const {grpc_status}))"


def test_send_local_response(linkers: dict[bool, Any]) -> None:
    s = Strings()
    module = guest_module(s, [respond(s, 404, details=b"not_found\xff", body=b"gone\n\0")])
    seen, calls = same_both_ways(linkers, module)
    assert seen["error"] is None and seen["statuses"][0] == OK and calls == {}
    assert seen["local_response"] == HttpResponse(
        status=404, headers=[("x-hello", "1"), ("x-utf", "h\u00e9llo"), ("x-bad", "\udcff\udcfe")],
        body=b"gone\n\0", local_reply_details="not_found\udcff")


def test_send_local_response_replaces_an_earlier_one(linkers: dict[bool, Any]) -> None:
    s = Strings()
    module = guest_module(s, [respond(s, 500, body="first"), respond(s, 200, body="second", headers=b"")])
    seen, calls = same_both_ways(linkers, module)
    assert seen["statuses"][:2] == [OK, OK] and calls == {}
    assert seen["local_response"] == HttpResponse(status=200, headers=[], body=b"second")


@pytest.mark.parametrize(("grpc_status", "added"), [(0, "0"), (16, "16"), (17, None), (NO_GRPC_STATUS, None)])
def test_send_local_response_grpc_status(linkers: dict[bool, Any], grpc_status: int, added: str | None) -> None:
    s = Strings()
    seen, calls = same_both_ways(linkers, guest_module(s, [respond(s, headers=b"", grpc_status=grpc_status)]))
    assert seen["statuses"][0] == OK and calls == {}
    assert seen["local_response"].headers == ([("grpc-status", added)] if added else [])


@pytest.mark.parametrize(("status", "answer", "fast"), [(99, BAD_ARGUMENT, False), (100, OK, True),
                                                        (599, OK, True), (600, BAD_ARGUMENT, False),
                                                        (0xFFFFFFFF, BAD_ARGUMENT, False)])
def test_send_local_response_status_codes(linkers: dict[bool, Any], status: int, answer: int, fast: bool) -> None:
    s = Strings()
    seen, calls = same_both_ways(linkers, guest_module(s, [respond(s, status)]))
    assert seen["statuses"][0] == answer and (seen["local_response"] is None) == (answer != OK)
    assert calls.get("proxy_send_local_response", 0) == (0 if fast else 1)


def _map(count: int, *sizes: int, data: bytes = b"") -> bytes:
    return struct.pack(f"<{1 + len(sizes)}I", count, *sizes) + data


@pytest.mark.parametrize(("headers", "answer", "fast"), [
    (b"", OK, True),  # no map at all: no headers
    (_map(0), OK, True),
    (_map(1, 2, 2, data=b"abXcdY"), OK, True),  # the separators are not checked
    (encode_map([("k", "v")]) + b"junk", OK, True),  # nor what follows the map
    (encode_map([("", "")]), OK, True),
    (b"\0\0\0", BAD_ARGUMENT, False),  # shorter than its count
    (_map(MAX_MAP_ENTRIES + 1), BAD_ARGUMENT, False),
    (_map(2, 1, 1), BAD_ARGUMENT, False),  # the sizes run past the end
    (_map(1, 5, 1, data=b"key\0v"), BAD_ARGUMENT, False),  # an entry runs past the end
    (_map(1, 1, 1, data=b"k\0v"), BAD_ARGUMENT, False),  # only its last NUL is missing
    (_map(1, 0xFFFFFFFF, 0xFFFFFFFF), BAD_ARGUMENT, False),
    (encode_map([("X-\u00dcNI", "v")]), OK, False),  # a non-ASCII name: Unicode lower-casing
    (encode_map([("\udcff", "v")]), OK, False),  # a name that is not UTF-8
])
def test_send_local_response_header_maps(linkers: dict[bool, Any], headers: bytes, answer: int, fast: bool) -> None:
    s = Strings()
    seen, calls = same_both_ways(linkers, guest_module(s, [respond(s, headers=headers)]))
    assert seen["error"] is None and seen["statuses"][0] == answer
    assert calls.get("proxy_send_local_response", 0) == (0 if fast else 1)


def test_send_local_response_bad_pointers(linkers: dict[bool, Any]) -> None:
    s = Strings()
    good = s("x")
    calls = [respond(s, raw=f"(i32.const {FAR}) (i32.const 1) {good} {good}"),
             respond(s, raw=f"{good} (i32.const {FAR}) (i32.const 0) {good}"),  # past the end, even when empty
             respond(s, raw=f"{good} {good} (i32.const 65535) (i32.const 2)"),  # straddles the end of memory
             respond(s, 99, raw=f"{good} {good} (i32.const {FAR}) (i32.const 4)")]  # memory is checked first
    seen, python_calls = same_both_ways(linkers, guest_module(s, calls))
    assert seen["error"] is None and seen["statuses"][:4] == [INVALID_MEMORY_ACCESS] * 4
    assert seen["local_response"] is None and python_calls == {"proxy_send_local_response": 4}


def test_send_local_response_without_a_stream_is_python(linkers: dict[bool, Any]) -> None:
    s = Strings()
    calls = [respond(s), respond(s, raw=f"(i32.const {FAR}) (i32.const 1) {s('x')} {s('x')}")]
    seen, python_calls = same_both_ways(linkers, guest_module(s, calls), streamless=True)
    assert seen["statuses"][:2] == [NOT_FOUND, INVALID_MEMORY_ACCESS] and seen["local_response"] is None
    assert python_calls == {"proxy_send_local_response": 2}


# -- all of them together ------------------------------------------------------------------------

def test_no_reference_is_leaked_by_the_fast_paths(linkers: dict[bool, Any]) -> None:
    """100,000 iterations of hello's six calls and the demos' three (in 100 requests): traced memory
    stays flat."""
    s = Strings()
    loop = [get_value(s, ":method"), get_value(s, ":path"), get_value(s, "greeting"), get_value(s, "missing"),
            set_bytes(s, APPEND, 0, "hello\n"), add_value(s, "x-hello", "1"), status_of(REQUEST_BODY, out(0)),
            get_bytes(REQUEST_BODY, 0, 100), respond(s, 500, details="failed", body="failed\n", grpc_status=2)]
    module = guest_module(s, [], loop=loop)
    linker = linkers[True]
    vm = ProxyWasmVM(linker.engine, linker, linker.engine.compile(module), PluginSettings(name="hammer"),
                     HostServices())
    vm.start()
    vm.guest.write_u32(MODE, FIXED)
    vm.guest.write_u32(ITERATIONS, 1000)
    request = HttpRequest.build("GET", "/x", list(REQUEST_HEADER_LIST), authority="localhost", lowered=True)

    def requests(count: int) -> None:
        for _ in range(count):
            stream = vm.open_stream(request, None, 10.0)
            stream.request_body.extend(BODY)
            vm.run_step(stream, "request_headers", False)  # not the end: the local response does not end it
            assert len(stream.response.headers) == 1000 and len(stream.response_body) == 6000
            assert stream.local_response is not None and len(stream.local_response.headers) == 4

    CALLS.clear()
    requests(5)  # warm every cache first
    assert CALLS == {}  # every call took its fast path
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        requests(100)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 256 * 1024, grown  # 600,000 calls: a leak of one object per call would be tens of MB

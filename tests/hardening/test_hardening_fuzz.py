"""Issue 15 "Must show": fuzzing the HTTP parser path and the host imports (hypothesis).

1. The function listener's protocol (host/http/protocol.py `HttpConnection`, httptools underneath)
   fed through a fake transport: generated request streams — valid ones (Content-Length or chunked
   bodies, trailers, pipelining, HTTP/1.0 and 1.1), then the same with bytes inserted, replaced or
   cut, all split at random points. Whatever arrives, no exception escapes, what is written parses
   as a sequence of HTTP responses, no request is answered twice, nothing follows a closing answer,
   and a valid stream gets one answer per request, in order, routed by its headers (never by a
   trailer).
2. The host imports that make the host hold guest bytes (buffers, header maps, properties, shared
   data, queues, logs, local responses), called in random sequences on one instance with a small
   memory limit: each call answers a status or traps with HostLimitExceeded, and what the host
   holds for the guest never exceeds the limit.

Each test prints how many inputs it tried. WASM_FAAS_FUZZ_EXAMPLES raises the count (and the run is
then randomized rather than derandomized), for a longer run by hand.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

import httptools
import pytest
import wasmtime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abi import HostServices, HttpRequest, PluginSettings, ProxyWasmVM, WasmEngine, all_host_functions
from abi.engine import I32
from abi.limits import HostLimitExceeded
from abi.maps import MAX_MAP_ENTRIES
from abi.vm import StreamState
from host.http.protocol import HttpConnection, HttpServer, Limits, Request, Response
from tests.test_abi_property import FUNCTIONS, GROUPS, _forwarders

EXAMPLES = int(os.environ.get("WASM_FAAS_FUZZ_EXAMPLES", "0"))
RANDOMIZED = EXAMPLES > 0


def _settings(default: int) -> settings:
    return settings(max_examples=EXAMPLES or default, deadline=None, derandomize=not RANDOMIZED, database=None,
                    suppress_health_check=list(HealthCheck))


# == 1. the HTTP parser path ====================================================================================

class FakeTransport:
    """What HttpConnection uses of an asyncio transport, recording what is written."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.eof = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: bytes) -> None:
        assert not self.eof, "written after the write side was closed"
        if not self.closed:
            self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _handler(request: Request) -> Response | Any:
    """Echoes what routing sees: the method, target, `id` header and body length."""
    echo = f"{request.method} {request.target} id={request.header('id')} len={len(request.body)}".encode()
    if request.target.startswith("/async"):
        async def later() -> Response:
            await asyncio.sleep(0)
            return Response(200, echo, content_type="text/plain")
        return later()
    if request.target.startswith("/forged"):
        return Response(200, echo, headers=[("bad name", "x")])  # refused by the framing: a 500
    return Response(200, echo, content_type="text/plain")


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""


class _Responses:
    """httptools' response parser callbacks: every response in what the server wrote."""

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.answers.append(Answer(0))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.answers[-1].headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.answers[-1].status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.answers[-1].body += body


def _parse_answers(data: bytes) -> list[Answer]:
    responses = _Responses()
    responses.parser.feed_data(data)  # raises if the server wrote something that is not HTTP
    return [answer for answer in responses.answers if answer.status != 100]


TOKEN = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=24).map(str.strip)
TARGET = st.text("abcdefghijklmnopqrstuvwxyz0123456789/-._~%", max_size=30)


@st.composite
def _request(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
    target = "/" + draw(st.sampled_from(["", "async", "forged"])) + draw(TARGET)
    function_id = draw(st.one_of(st.none(), TOKEN))
    headers = [(name, value) for name, value in draw(st.lists(st.tuples(TOKEN, VALUE), max_size=5))
               if name not in ("id", "content-length", "transfer-encoding", "connection", "expect", "upgrade",
                               "host")]
    if function_id is not None:
        headers.append(("id", function_id))
    body = draw(st.binary(max_size=64))
    chunked = draw(st.booleans())
    trailer_id = draw(st.one_of(st.none(), TOKEN)) if chunked else None
    head = f"{method} {target} HTTP/1.1\r\nHost: h\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    if chunked:
        pieces, rest = [], body
        while rest:
            size = draw(st.integers(1, max(1, len(rest))))
            pieces.append(rest[:size])
            rest = rest[size:]
        payload = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces) + b"0\r\n"
        payload += f"id: {trailer_id}\r\n".encode() if trailer_id else b""
        raw = (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + payload + b"\r\n"
    else:
        raw = (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    return raw, {"method": method, "target": target, "id": function_id, "len": len(body)}


@st.composite
def _stream(draw: st.DrawFn) -> tuple[list[bytes], list[dict[str, Any]], bool]:
    requests = draw(st.lists(_request(), min_size=1, max_size=4))
    data = b"".join(raw for raw, _ in requests)
    corrupt = draw(st.booleans())
    if corrupt:
        at = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["insert", "replace", "cut"]))
        junk = draw(st.binary(min_size=1, max_size=8) | st.sampled_from(
            [b"\r\n", b"\x00", b"\n\n", b"Transfer-Encoding: chunked\r\n", b"Content-Length: 99999999\r\n"]))
        if how == "insert":
            data = data[:at] + junk + data[at:]
        elif how == "replace":
            data = data[:at] + junk + data[at + len(junk):]
        else:
            data = data[:at]
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True) if b > a]
    return chunks, [expected for _, expected in requests], corrupt


HTTP_INPUTS = [0]


async def _feed(chunks: list[bytes]) -> FakeTransport:
    server = HttpServer(_handler, Limits(max_target=512, max_field=256, max_headers=16, max_body=1024))
    connection = HttpConnection(server)
    transport = FakeTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    for chunk in chunks:
        if transport.closed:
            break
        connection.data_received(chunk)
        for _ in range(3):
            await asyncio.sleep(0)  # an async handler's answer, then the next queued request
    for _ in range(10):
        await asyncio.sleep(0)
    connection.connection_lost(None)
    return transport


def test_the_http_parser_path_survives_whatever_arrives() -> None:
    loop = asyncio.new_event_loop()

    @_settings(600)
    @given(stream=_stream())
    def check(stream: tuple[list[bytes], list[dict[str, Any]], bool]) -> None:
        chunks, expected, corrupt = stream
        HTTP_INPUTS[0] += 1
        transport = loop.run_until_complete(_feed(chunks))
        answers = _parse_answers(bytes(transport.written))
        assert len(answers) <= len(expected) + 1  # one per request, at most one refusal more
        for answer in answers:
            assert 200 <= answer.status <= 599
        for earlier in answers[:-1]:  # only the last answer may close the connection
            assert (b"connection", b"close") not in earlier.headers
        if not corrupt:
            assert [a.status for a in answers] == [500 if e["target"].startswith("/forged") else 200 for e in expected]
            for answer, wanted in zip(answers, expected, strict=True):
                if answer.status == 200:  # routed by its header `id`, never by a trailer
                    assert answer.body == (f"{wanted['method']} {wanted['target']} id={wanted['id']} "
                                           f"len={wanted['len']}").encode()

    try:
        check()
    finally:
        loop.close()
    print(f"HTTP parser path: {HTTP_INPUTS[0]} generated request streams, no failure")


# == 2. the host imports that make the host hold bytes ===========================================================

HOLDING = ("proxy_set_buffer_bytes", "proxy_add_header_map_value", "proxy_replace_header_map_value",
           "proxy_remove_header_map_value", "proxy_set_header_map_pairs", "proxy_set_property",
           "proxy_set_shared_data", "proxy_register_shared_queue", "proxy_enqueue_shared_queue",
           "proxy_dequeue_shared_queue", "proxy_log", "proxy_send_local_response", "proxy_get_header_map_pairs",
           "proxy_get_buffer_bytes", "proxy_define_metric")
INDEXES = [i for i, f in enumerate(FUNCTIONS) if f.module == "env" and f.name in HOLDING and GROUPS[i] == 0]
LIMIT = 256 * 1024
PAGE = 65536
# Mostly in-bounds pointers and lengths (so calls get past their checks), with the edges.
POINTER = st.one_of(st.integers(0, PAGE - 1), st.sampled_from([0, PAGE - 4, PAGE, 0xFFFFFFFF]))
LENGTH = st.one_of(st.integers(0, 64), st.integers(0, PAGE), st.sampled_from([0, 4, PAGE, 0xFFFFFFFF]))
SMALL = st.one_of(st.integers(0, 9), st.sampled_from([0xFFFFFFFF, 0x7FFFFFFF]))


def _argument(name: str, position: int) -> st.SearchStrategy[int]:
    if position == 0 and name in ("proxy_set_buffer_bytes", "proxy_get_buffer_bytes") or \
            position == 0 and "header_map" in name:
        return SMALL  # buffer or map type
    return st.one_of(POINTER, LENGTH, SMALL)


CALLS = st.lists(st.sampled_from(INDEXES).flatmap(
    lambda i: st.tuples(st.just(i), st.tuples(*(_argument(FUNCTIONS[i].name, n) if kind == I32
                                                else st.integers(-(2**63), 2**63 - 1)
                                                for n, kind in enumerate(FUNCTIONS[i].params))))),
    min_size=1, max_size=40)
IMPORT_INPUTS = [0, 0]  # sequences, calls


@pytest.fixture(scope="module")
def holder_vm() -> ProxyWasmVM:
    engine = WasmEngine()
    module = engine.compile(wasmtime.wat2wasm(_forwarders(0)))
    vm = ProxyWasmVM(engine, engine.linker(all_host_functions()), module,
                     PluginSettings(name="fuzz", memory_limit_bytes=LIMIT), HostServices())
    vm.start()
    return vm


def _fresh_stream() -> StreamState:
    request = HttpRequest.build("POST", "/p", [("x-a", "1")], b"body")
    return StreamState(context_id=2, request=request, request_headers=list(request.headers),
                       request_body=bytearray(b"body"), request_trailers=[])


def test_imports_never_let_a_guest_hold_more_than_its_limit(holder_vm: ProxyWasmVM) -> None:
    vm = holder_vm
    services = vm.services

    @_settings(200)
    @given(calls=CALLS)
    def check(calls: list[tuple[int, tuple[int, ...]]]) -> None:
        IMPORT_INPUTS[0] += 1
        stream = vm.stream = _fresh_stream()
        try:
            for index, args in calls:
                IMPORT_INPUTS[1] += 1
                try:
                    result = vm.guest.func(f"call_{index}")(*args)  # type: ignore[misc]
                except HostLimitExceeded:
                    continue  # the guest traps: in the host its request answers 500
                assert isinstance(result, int) and 0 <= result <= 0xFFFFFFFF
                assert len(stream.response_body) <= LIMIT and len(stream.request_body) <= LIMIT
                assert stream.guest_bytes <= LIMIT
                for pairs in (stream.request_headers, stream.response.headers):
                    assert len(pairs) <= MAX_MAP_ENTRIES
                assert sum(len(k) + len(v) for k, v in stream.properties.items()) <= LIMIT
                assert services.shared_data.held_by(vm.function_id) <= LIMIT
                assert services.queues.held_by(vm.function_id) <= LIMIT
        finally:
            vm.stream = None

    check()
    print(f"host imports: {IMPORT_INPUTS[0]} call sequences, {IMPORT_INPUTS[1]} calls, no failure")

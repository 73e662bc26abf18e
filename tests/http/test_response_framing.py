"""Response framing is the host's (issue 15, item 6), checked as bytes on the wire: a guest's status
outside 200-599 is refused with a 500 naming the function; 204 and 304 go out without content or
Content-Length; header names must be RFC 9110 tokens and values free of CR, LF, NUL and the other
control characters (TAB is allowed); a guest's framing fields (Content-Length, Transfer-Encoding,
Connection, ...) never reach the wire; and a trap whose text merely mentions "interrupt" or "fuel"
is a 500, not a 504."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from tests.conftest import ENGINE_BACKENDS, make_config
from tests.guest_wat import WatGuest, serialize_map, write_guest

NO_GRPC_STATUS = 0xFFFFFFFF


def local_response(status: int, body: bytes = b"", headers: list[tuple[str, str]] | None = None) -> str:
    """A guest answering every request with proxy_send_local_response(status, body, headers)."""
    g = WatGuest()
    pairs = serialize_map(headers) if headers else b""
    send = g.call("proxy_send_local_response", status, g.s(""), g.s(body), g.s(pairs), NO_GRPC_STATUS)
    return g.module(proxy_on_request_headers=f"(drop {send})\n    (i32.const 0)")


def answering(headers: list[tuple[bytes, bytes]], body: bytes = b"") -> str:
    """A guest that adds `headers` to the response (in order, `:status` included) and sets `body`."""
    g = WatGuest()
    calls = [f"(drop {g.call('proxy_add_header_map_value', 2, g.s(name), g.s(value))})" for name, value in headers]
    if body:
        calls.append(f"(drop {g.call('proxy_set_buffer_bytes', 1, 0, 0, g.s(body))})")
    return g.module(proxy_on_request_headers="\n    ".join([*calls, "(i32.const 0)"]))


def request(function: str, *, method: str = "GET", last: bool = False) -> bytes:
    close = "Connection: close\r\n" if last else ""
    return f"{method} / HTTP/1.1\r\nHost: t\r\nid: {function}\r\n{close}\r\n".encode()


async def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send `data` (its last request says Connection: close) and read everything until the server
    closes; each Date value is replaced by `D` (it is the only thing on the wire that varies)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(-1), timeout)
    finally:
        writer.close()
    assert raw.count(b"Date: ") == raw.count(b"HTTP/1.1 "), raw  # one Date per answer: the host's own
    return re.sub(rb"Date: [^\r\n]*\r\n", b"Date: D\r\n", raw)


def error_answer(raw: bytes, *, last: bool) -> tuple[dict, bytes]:
    """The JSON of a 500 at the start of `raw` (after checking its head byte for byte), and the rest."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    close = b"Connection: close\r\n" if last else b""
    assert head + b"\r\n\r\n" == (b"HTTP/1.1 500 Internal Server Error\r\nDate: D\r\nContent-Type: application/json\r\n"
                                  b"Content-Length: %d\r\n%s\r\n" % (length, close)), head
    return json.loads(rest[:length]), rest[length:]


async def _serve_guests(serve, tmp_path: Path, guests: dict[str, str], **defaults):
    folder = tmp_path / "functions"
    for name, wat in guests.items():
        write_guest(folder, name, wat)
    return await serve(make_config(tmp_path, folder, function_defaults={"instance_num": 1, **defaults}))


OK_TEXT = b"ok"
OK_HEAD = (b"HTTP/1.1 200 OK\r\nDate: D\r\nContent-Type: application/octet-stream\r\nContent-Length: 2\r\n")


async def test_a_status_outside_200_to_599_is_refused_naming_the_function(serve, tmp_path: Path) -> None:
    # 1xx through proxy_send_local_response (the import takes 100-599), the rest through `:status`.
    local = {f"local_{status}": (str(status), local_response(status, b"body")) for status in (100, 101, 103, 199)}
    pseudo = {f"pseudo_{i}": (value, answering([(b":status", value.encode())], b"body"))
              for i, value in enumerate(["0", "99", "600", "999", "12345", "abc", "\u00b2\u00b2\u00b2", ""])}
    cases = {**local, **pseudo}
    guests = {name: wat for name, (_, wat) in cases.items()}
    guests["fine"] = answering([], OK_TEXT)
    client = await _serve_guests(serve, tmp_path, guests)
    port = client.server.listen_port
    for name, (status, _) in cases.items():
        # Pipelined: the refused answer is framed properly, so the next one follows on the same connection.
        raw = await exchange(port, request(name) + request("fine", last=True))
        error, rest = error_answer(raw, last=False)
        assert error["function"] == name, (name, error)
        assert "not a final HTTP status (200-599)" in error["error"], (name, error)
        if status.isascii() and status.isdigit() and len(status) <= 3:
            assert f"status {int(status)} " in error["error"], (name, error)
        assert b"body" not in raw, name  # nothing of what the guest wrote
        assert rest == OK_HEAD + b"Connection: close\r\n\r\n" + OK_TEXT, (name, rest)
    assert (await client.call("fine"))[0] == 200


async def test_204_and_304_carry_no_content_and_no_content_length(serve, tmp_path: Path) -> None:
    client = await _serve_guests(serve, tmp_path, {
        "nothing": local_response(204, b"a body a 204 cannot have"),
        "unchanged": local_response(304, b"a body a 304 cannot have",
                                    [("etag", '"v1"'), ("content-type", "text/plain")]),
        "pseudo_204": answering([(b":status", b"204"), (b"content-length", b"24")], b"a body a 204 cannot have"),
        "fine": answering([], OK_TEXT),
    })
    port = client.server.listen_port
    raw = await exchange(port, request("nothing") + request("unchanged") + request("pseudo_204")
                         + request("nothing", method="HEAD") + request("fine", last=True))
    assert raw == (b"HTTP/1.1 204 No Content\r\nDate: D\r\n\r\n"
                   b"HTTP/1.1 304 Not Modified\r\nDate: D\r\netag: \"v1\"\r\nContent-Type: text/plain\r\n\r\n"
                   b"HTTP/1.1 204 No Content\r\nDate: D\r\n\r\n"
                   b"HTTP/1.1 204 No Content\r\nDate: D\r\n\r\n"
                   + OK_HEAD + b"Connection: close\r\n\r\n" + OK_TEXT)


async def test_head_answers_the_length_without_the_body(serve, tmp_path: Path) -> None:
    client = await _serve_guests(serve, tmp_path, {"fine": answering([(b"x-a", b"1")], OK_TEXT)})
    raw = await exchange(client.server.listen_port, request("fine", method="HEAD") + request("fine", last=True))
    head = b"HTTP/1.1 200 OK\r\nDate: D\r\nx-a: 1\r\nContent-Type: application/octet-stream\r\nContent-Length: 2\r\n"
    assert raw == head + b"\r\n" + head + b"Connection: close\r\n\r\n" + OK_TEXT


FORGED_NAMES = [b"x(y)", b"x@y", b"x y", b"x:y", b"x\x00y", b"x\ty", b"x\r\ny", b"caf\xc3\xa9", b"", b"x,y", b'x"y']
FORGED_VALUES = [(b"a\x00b", "a NUL"), (b"a\rb", "a line break"), (b"a\nb", "a line break"),
                 (b"a\r\nInjected: 1", "a line break"), (b"a\x01b", "a control character"),
                 (b"a\x7fb", "a control character"), (b"a\x1bb", "a control character")]


async def test_forged_header_names_and_values_are_refused(serve, tmp_path: Path) -> None:
    names = {f"name_{i}": answering([(b"x-before", b"1"), (name, b"v")], OK_TEXT)
             for i, name in enumerate(FORGED_NAMES)}
    values = {f"value_{i}": answering([(b"x-forged", value)], OK_TEXT) for i, (value, _) in enumerate(FORGED_VALUES)}
    client = await _serve_guests(serve, tmp_path, {**names, **values, "fine": answering([], OK_TEXT)})
    port = client.server.listen_port
    for i, name in enumerate(FORGED_NAMES):
        raw = await exchange(port, request(f"name_{i}") + request("fine", last=True))
        error, rest = error_answer(raw, last=False)
        assert error["function"] == f"name_{i}" and "is not an RFC 9110 token" in error["error"], (name, error)
        assert b"x-before" not in raw and rest.startswith(b"HTTP/1.1 200 OK\r\n"), name
    for i, (value, what) in enumerate(FORGED_VALUES):
        raw = await exchange(port, request(f"value_{i}") + request("fine", last=True))
        error, rest = error_answer(raw, last=False)
        assert error["function"] == f"value_{i}", error
        assert f"response header 'x-forged' has {what}" in error["error"], (value, error)
        assert b"Injected" not in raw and b"x-forged" not in raw.partition(b"\r\n\r\n")[0], value
        assert rest.startswith(b"HTTP/1.1 200 OK\r\n"), value


async def test_tab_and_non_ascii_values_pass_verbatim(serve, tmp_path: Path) -> None:
    # RFC 9110 5.5: field-content may hold HTAB and SP inside, and obs-text (0x80-0xFF).
    headers = [(b"x-tab", b"a\tb"), (b"x-space", b"a b"), (b"x-utf8", "caf\u00e9".encode()),
               (b"x-raw", b"\xff\xfe"), (b"x-token-chars", b"!#$%&'*+-.^_`|~"), (b"x!#$%&'*+-.^_`|~09az", b"1")]
    client = await _serve_guests(serve, tmp_path, {"tab": answering(headers, OK_TEXT)})
    raw = await exchange(client.server.listen_port, request("tab", last=True))
    assert raw == (b"HTTP/1.1 200 OK\r\nDate: D\r\nx-tab: a\tb\r\nx-space: a b\r\nx-utf8: caf\xc3\xa9\r\n"
                   b"x-raw: \xff\xfe\r\nx-token-chars: !#$%&'*+-.^_`|~\r\nx!#$%&'*+-.^_`|~09az: 1\r\n"
                   b"Content-Type: application/octet-stream\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


async def test_a_guest_cannot_set_the_framing(serve, tmp_path: Path) -> None:
    framing = [(b"content-length", b"999"), (b"transfer-encoding", b"chunked"), (b"connection", b"close"),
               (b"keep-alive", b"timeout=1"), (b"upgrade", b"h2c"), (b"trailer", b"x-t"), (b"te", b"trailers"),
               (b"date", b"Thu, 01 Jan 1970 00:00:00 GMT"), (b"proxy-connection", b"close"), (b"x-kept", b"1")]
    local = [(name.decode(), value.decode()) for name, value in framing]
    client = await _serve_guests(serve, tmp_path, {"framing": answering(framing, OK_TEXT),
                                                   "local": local_response(200, OK_TEXT, local)})
    raw = await exchange(client.server.listen_port, request("framing") + request("local") + request("framing")
                         + request("local", last=True))
    answer = (b"HTTP/1.1 200 OK\r\nDate: D\r\nx-kept: 1\r\nContent-Type: application/octet-stream\r\n"
              b"Content-Length: 2\r\n")
    # The guest's `connection: close` does not close the connection; its Content-Length does not frame.
    assert raw == (answer + b"\r\nok") * 3 + answer + b"Connection: close\r\n\r\nok"
    assert b"1970" not in raw and b"chunked" not in raw


# WAT identifiers of functions that trap: each name is in the module's name section, so in
# wasmtime's backtrace, so in the trap's text — next to the real cause.
FORGED_TRAP_NAMES = ["$interrupt", "$out_of_fuel", '$"wasm trap: interrupt (deadline exceeded)"',
                     '$"wasm trap: all fuel consumed by WebAssembly"',
                     r'$"x\n\nCaused by:\n    wasm trap: interrupt (deadline exceeded)\n"']


def _trap_guest(identifier: str) -> str:
    g = WatGuest()
    g.extra.append(f"  (func {identifier} unreachable)")
    return g.module(proxy_on_request_headers=f"(call {identifier})\n    (i32.const 0)")


LOOP_GUEST = WatGuest().module(proxy_on_request_headers="(loop $forever (br $forever))\n    (i32.const 0)")


@pytest.mark.parametrize("backend", ENGINE_BACKENDS)
async def test_a_trap_that_mentions_interrupt_or_fuel_is_a_500(serve, tmp_path: Path, backend: str) -> None:
    folder = tmp_path / "functions"
    for i, identifier in enumerate(FORGED_TRAP_NAMES):
        write_guest(folder, f"trap_{i}", _trap_guest(identifier))
    write_guest(folder, "loop", LOOP_GUEST)
    config = make_config(tmp_path, folder, function_defaults={"instance_num": 1, "timeout_ms": 300})
    client = await serve(config, engine_backend=backend)
    for i, identifier in enumerate(FORGED_TRAP_NAMES):
        status, _, body = await client.call(f"trap_{i}")
        assert status == 500, (identifier, status, body)
        assert json.loads(body) == {"error": f"function 'trap_{i}' trapped: wasm trap: wasm `unreachable` "
                                             "instruction executed", "function": f"trap_{i}"}
    status, _, body = await client.call("loop")  # a real interruption is still a 504
    assert status == 504 and b"exceeded its 0.3s deadline" in body, body

"""The function listener against hostile or unusual clients (issue 15, item 7), over raw sockets:
request trailers are not headers, a malformed request after valid pipelined ones is answered after
them, `100 Continue` waits for its request's turn, HTTP/1.0 keep-alive follows RFC 9112, and the
connection caps keep new clients and the admin probes served while one client holds hundreds of
idle connections."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp

from tests.conftest import EXAMPLES, functions_dir, make_config
from tests.guest_wat import RET, Results, WatGuest, write_guest
from tests.test_http_protocol import Connection, get


def _trailer_probe() -> str:
    """Records what map 0 (request headers) and map 1 (request trailers) hold for `x-t` and `id`,
    in proxy_on_request_headers and proxy_on_request_trailers, and answers with the records."""
    g = WatGuest()

    def probe(map_type: int, name: str) -> str:
        return f"(call $emit_ret {g.call('proxy_get_header_map_value', map_type, g.s(name), RET)})"

    headers = " ".join(probe(0, name) for name in ("x-t", "id"))
    trailers = " ".join(probe(1, name) for name in ("x-t", "id")) + " " + probe(0, "x-t")
    g.extra.append(f'  (func (export "proxy_on_request_trailers") (param $ctx i32) (param $n i32) (param $eos i32)'
                   f' (result i32)\n    {trailers} (call $flush) (i32.const 0))')
    return g.module(proxy_on_request_headers=f"{headers}\n    (i32.const 0)")


async def test_request_trailers_never_become_headers(serve, tmp_path: Path) -> None:
    folder = functions_dir(tmp_path, EXAMPLES / "hello.wasm")
    write_guest(folder, "probe", _trailer_probe())
    client = await serve(make_config(tmp_path, folder))
    port = client.server.listen_port
    conn = await Connection.open(port)
    try:
        # An `id` only in the trailer section does not route.
        await conn.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"3\r\nabc\r\n0\r\nid: hello\r\n\r\n")
        (answer,) = await conn.answers(1)
        assert answer.status == 400 and "missing 'id' header" in json.loads(answer.body)["error"]
        # Nor does one after a real `id` header replace it; the guest sees trailers as trailers only.
        await conn.send(b"POST / HTTP/1.1\r\nHost: t\r\nid: probe\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"3\r\nabc\r\n0\r\nid: hello\r\nx-t: tv\r\n\r\n")
        (answer,) = await conn.answers(1)
        assert answer.status == 200, answer.body
        records = Results(answer.body)
        not_found = 1  # proxy_get_header_map_value's NotFound
        # proxy_on_request_headers: no x-t header, id is the header's
        assert [records.ret() for _ in range(2)] == [(not_found, b""), (0, b"probe")]
        # proxy_on_request_trailers: x-t and id in the trailers, still no x-t header
        assert [records.ret() for _ in range(3)] == [(0, b"tv"), (0, b"hello"), (not_found, b"")]
        assert records.done()
        await conn.send(get("hello"))  # the connection is still in step
        assert (await conn.answers(1))[0].status == 200
    finally:
        conn.close()


async def test_an_endless_trailer_line_is_cut(serve, tmp_path: Path) -> None:
    folder = functions_dir(tmp_path, EXAMPLES / "hello.wasm")
    client = await serve(make_config(tmp_path, folder, server={"max_header_bytes": 512, "max_headers": 10}))
    conn = await Connection.open(client.server.listen_port)
    await conn.send(b"POST / HTTP/1.1\r\nid: hello\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nx-endless: ")
    await asyncio.sleep(0.05)
    # Sent slowly (what one read brings is bounded by the read size): cut once it is longer than
    # any valid header block (512 + 10 x 516 bytes) could be.
    for _ in range(12):
        await conn.send(b"v" * 1024)
        await asyncio.sleep(0.02)
    (answer,) = await conn.answers(1)
    assert answer.status == 400 and "trailers" in json.loads(answer.body)["error"]
    assert await conn.closed()


async def _with_slow(serve, tmp_path: Path, c_guests: Path, **server):
    folder = functions_dir(tmp_path, c_guests / "slow.wasm", EXAMPLES / "hello.wasm", EXAMPLES / "function_2.wasm")
    return await serve(make_config(tmp_path, folder, server=server))


async def test_a_malformed_request_is_answered_after_the_valid_ones_before_it(serve, tmp_path: Path,
                                                                              c_guests: Path) -> None:
    client = await _with_slow(serve, tmp_path, c_guests, max_body_bytes=1024)
    port = client.server.listen_port
    cases = [
        # answered at once, then the garbage
        (get("hello", "/1") + get("hello", "/2") + b"GARBAGE\r\n\r\n", [200, 200, 400]),
        # the first one is still running (in a guest thread) when the garbage arrives
        (get("slow", extra="x-sleep-ms: 200\r\n") + get("hello", "/2") + b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
         [200, 200, 400]),
        # a body too large after a valid request
        (get("hello", "/1") + b"POST / HTTP/1.1\r\nid: hello\r\nContent-Length: 2048\r\n\r\n" + b"x" * 2048,
         [200, 413]),
    ]
    for data, statuses in cases:
        conn = await Connection.open(port)
        await conn.send(data)
        answers = await conn.answers(len(statuses))
        assert [a.status for a in answers] == statuses, [(a.status, a.body) for a in answers]
        assert answers[0].body in (b"hello method=GET path=/1 greeting=-\n", b"slept 200\n")
        if len(statuses) == 3:
            assert answers[1].body == b"hello method=GET path=/2 greeting=-\n"
        assert answers[-1].headers["connection"] == "close"
        assert await conn.closed()


async def test_100_continue_waits_for_its_turn(serve, tmp_path: Path, c_guests: Path) -> None:
    client = await _with_slow(serve, tmp_path, c_guests)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.listen_port)
    try:
        writer.write(get("slow", extra="x-sleep-ms: 300\r\n")
                     + b"POST / HTTP/1.1\r\nid: id_2\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        # The slow answer comes first, then (its turn) the 100 Continue: nothing in between.
        first = await asyncio.wait_for(reader.readuntil(b"slept 300\n"), 5)
        assert first.startswith(b"HTTP/1.1 200 OK\r\n") and b"100 Continue" not in first, first
        interim = await asyncio.wait_for(reader.readexactly(len(b"HTTP/1.1 100 Continue\r\n\r\n")), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"book1")
        second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert second.startswith(b"HTTP/1.1 200 OK\r\n")
        assert await asyncio.wait_for(reader.readexactly(3), 5) == b"100"
        # An HTTP/1.0 client gets no 100 Continue (RFC 9110 10.1.1): it sends its body after waiting.
        writer.write(b"POST / HTTP/1.0\r\nid: id_2\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        try:
            early = await asyncio.wait_for(reader.read(100), 0.3)
            raise AssertionError(f"answered before the body: {early!r}")
        except TimeoutError:
            pass
        writer.write(b"book1")
        answer = await asyncio.wait_for(reader.read(-1), 5)  # HTTP/1.0 without keep-alive: closed after
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\n100"), answer
        assert b"Connection: close\r\n" in answer
    finally:
        writer.close()


def _connection_header(head: bytes) -> list[bytes]:
    return re.findall(rb"\r\nConnection: ([^\r]*)", head)


async def test_http_1_0_keep_alive_as_rfc_9112_says(serve, tmp_path: Path) -> None:
    client = await serve(make_config(tmp_path, functions_dir(tmp_path, EXAMPLES / "hello.wasm")))
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.listen_port)
    body = b"hello method=GET path=/old greeting=-\n"
    try:
        for _ in range(2):  # asked for: kept, and the answer says so
            writer.write(b"GET /old HTTP/1.0\r\nid: hello\r\nConnection: keep-alive\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert _connection_header(head) == [b"keep-alive"], head
            assert await asyncio.wait_for(reader.readexactly(len(body)), 5) == body
        writer.write(b"GET /old HTTP/1.0\r\nid: hello\r\n\r\n")  # not asked for: closed after the answer
        rest = await asyncio.wait_for(reader.read(-1), 5)
        assert _connection_header(rest) == [b"close"] and rest.endswith(body), rest
    finally:
        writer.close()
    # HTTP/1.1 is persistent by default: nothing to announce.
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.listen_port)
    writer.write(get("hello", "/old", extra="Connection: keep-alive\r\n"))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and _connection_header(head) == []
    writer.close()


# -- connection caps ---------------------------------------------------------------------------------

REFUSED = b"HTTP/1.1 503 Service Unavailable\r\n"


async def _open(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def _first_bytes(reader: asyncio.StreamReader, wait: float) -> bytes | None:
    """What the server sent and then closed, or None when it keeps the connection open and silent."""
    try:
        return await asyncio.wait_for(reader.read(-1), wait)
    except TimeoutError:
        return None


async def _admin_alive(client) -> bool:
    async with aiohttp.ClientSession() as session:
        async with session.get(client.admin + "/actuator/health/liveness") as response:
            return response.status == 200


async def test_one_client_with_hundreds_of_idle_connections_locks_nobody_out(serve, tmp_path: Path) -> None:
    config = make_config(tmp_path, functions_dir(tmp_path, EXAMPLES / "hello.wasm"),
                         server={"max_connections": 40, "max_connections_per_client": 20})
    client = await serve(config)
    port = client.server.listen_port
    hog = [await _open(port, "127.0.0.2") for _ in range(300)]
    outcomes = await asyncio.gather(*(_first_bytes(reader, 1.0) for reader, _ in hog))
    kept = [conn for conn, outcome in zip(hog, outcomes, strict=True) if outcome is None]
    refused = [outcome for outcome in outcomes if outcome is not None]
    assert len(kept) == 20 and len(refused) == 280
    assert all(answer.startswith(REFUSED) and b"Retry-After: 1\r\n" in answer and b"Connection: close\r\n" in answer
               for answer in refused), refused[0]
    error = json.loads(refused[0].partition(b"\r\n\r\n")[2])
    assert error == {"error": "too many connections from 127.0.0.2 (at most 20)"}
    # Others are served: another address, and the probes on the admin listener.
    reader, writer = await _open(port, "127.0.0.1")
    writer.write(get("hello", extra="Connection: close\r\n"))
    answer = await asyncio.wait_for(reader.read(-1), 5)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"hello method=GET path=/ greeting=-\n")
    writer.close()
    assert await _admin_alive(client)
    listener = client.server.listener
    while len(listener.connections) > 20:  # the closed one is forgotten
        await asyncio.sleep(0.01)
    # The hog's admitted connections work.
    reader, writer = kept[-1]
    writer.write(get("hello"))
    assert (await asyncio.wait_for(reader.readuntil(b"greeting=-\n"), 5)).startswith(b"HTTP/1.1 200 OK\r\n")
    # Up to the total cap (40): a second address takes the other 20 ...
    second = [await _open(port, "127.0.0.3") for _ in range(20)]
    assert await asyncio.gather(*(_first_bytes(reader, 0.3) for reader, _ in second)) == [None] * 20
    # ... and a newcomer still gets in: the longest-idle connection (the hog's first) makes room.
    reader, writer = await _open(port, "127.0.0.4")
    writer.write(get("hello"))
    assert (await asyncio.wait_for(reader.readuntil(b"greeting=-\n"), 5)).startswith(b"HTTP/1.1 200 OK\r\n")
    assert await _first_bytes(kept[0][0], 2.0) == b""  # closed without an answer: it had asked nothing
    assert [await _first_bytes(r, 0.05) for r, _ in kept[1:]] == [None] * 19
    assert len(listener.connections) == 40
    for _, w in [*hog, *second, (reader, writer)]:
        w.close()


async def test_when_every_connection_is_busy_a_newcomer_is_answered_503(serve, tmp_path: Path) -> None:
    config = make_config(tmp_path, functions_dir(tmp_path, EXAMPLES / "hello.wasm"),
                         server={"max_connections": 10, "max_connections_per_client": 0})
    client = await serve(config)
    port = client.server.listen_port
    busy = [await _open(port, "127.0.0.2") for _ in range(10)]
    for _, writer in busy:
        writer.write(b"GET / HTTP/1.1\r\nid: hel")  # a request being read: not idle, not evicted
    await asyncio.sleep(0.2)
    reader, writer = await _open(port, "127.0.0.3")
    answer = await _first_bytes(reader, 5.0)
    assert answer is not None and answer.startswith(REFUSED)
    assert json.loads(answer.partition(b"\r\n\r\n")[2]) == {"error": "too many open connections (at most 10)"}
    assert await _admin_alive(client)
    for reader, writer in busy:  # none of them was harmed
        writer.write(b"lo\r\n\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"greeting=-\n"), 5)).startswith(b"HTTP/1.1 200 OK\r\n")
    # Now they are idle: a newcomer gets in.
    reader, writer = await _open(port, "127.0.0.3")
    writer.write(get("hello"))
    assert (await asyncio.wait_for(reader.readuntil(b"greeting=-\n"), 5)).startswith(b"HTTP/1.1 200 OK\r\n")
    for _, w in [*busy, (reader, writer)]:
        w.close()

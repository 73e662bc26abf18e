"""The HttpServer object of host/http/protocol.py on its own, with a trivial handler: its lifecycle
(start on port 0, requests in flight, stop accepting, drain). The protocol itself is covered in
depth by tests/test_http_protocol.py through the whole host."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable

import pytest
import pytest_asyncio

from host.http.protocol import HttpServer, Request, Response
from tests.functions.fn_wait import wait_for


class Handler:
    """`/sync` answers at once; `/slow` waits until the test lets it go."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0
        self.cancelled = 0

    def __call__(self, request: Request) -> Response | Awaitable[Response]:
        if request.target == "/sync":
            return Response(200, b"sync:" + request.body, content_type="text/plain")
        return self._slow(request)

    async def _slow(self, request: Request) -> Response:
        self.started += 1
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return Response(201, f"slow:{request.method}".encode())


@pytest_asyncio.fixture
async def server() -> AsyncIterator[tuple[HttpServer, Handler, int]]:
    handler = Handler()
    http = HttpServer(handler)
    port = await http.start("127.0.0.1", 0)
    yield http, handler, port
    http.stop_accepting()
    await http.drain(0)


async def _send(port: int, target: str, body: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()
    return reader, writer


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
    status_line, *lines = head.strip().split("\r\n")
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    return int(status_line.split()[1]), headers, body


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 2) == b""
    except ConnectionError:
        return True


Server = tuple[HttpServer, Handler, int]


async def test_starts_on_an_ephemeral_port_and_answers_at_once_or_later(server: Server) -> None:
    http, handler, port = server
    assert port > 0
    reader, writer = await _send(port, "/sync", b"abc")
    status, headers, body = await _answer(reader)
    assert (status, body, headers["content-type"]) == (200, b"sync:abc", "text/plain")
    assert "connection" not in headers  # kept alive: the next request goes on the same connection
    writer.write(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
    await wait_for(lambda: handler.started == 1)
    assert http.in_flight == 1
    handler.release.set()
    assert (await _answer(reader))[::2] == (201, b"slow:GET")
    assert http.in_flight == 0 and len(http.connections) == 1
    writer.close()


async def test_in_flight_counts_requests_being_handled_not_connections(server: Server) -> None:
    http, handler, port = server
    idle_reader, idle_writer = await _send(port, "/sync")
    await _answer(idle_reader)
    busy = [await _send(port, "/slow") for _ in range(3)]
    await wait_for(lambda: handler.started == 3)
    assert (http.in_flight, len(http.connections)) == (3, 4)
    handler.release.set()
    for reader, writer in busy:
        assert (await _answer(reader))[0] == 201
        writer.close()
    assert http.in_flight == 0
    idle_writer.close()


async def test_stop_accepting_closes_idle_connections_and_finishes_busy_ones(
        server: Server) -> None:
    http, handler, port = server
    idle_reader, _ = await _send(port, "/sync")
    await _answer(idle_reader)
    busy_reader, _ = await _send(port, "/slow")
    await wait_for(lambda: handler.started == 1)
    http.stop_accepting()
    assert http.closing
    assert await _closed(idle_reader)  # idle keep-alive connection: closed at once
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    handler.release.set()
    status, headers, body = await _answer(busy_reader)
    assert (status, body, headers["connection"]) == (201, b"slow:POST", "close")
    assert await _closed(busy_reader)
    assert await http.drain(1) and http.in_flight == 0


async def test_drain_waits_for_the_request_in_flight(server: Server) -> None:
    http, handler, port = server
    reader, _ = await _send(port, "/slow")
    await wait_for(lambda: handler.started == 1)
    http.stop_accepting()
    draining = asyncio.ensure_future(http.drain(5))
    await asyncio.sleep(0.1)
    assert not draining.done()  # still waiting for the request
    handler.release.set()
    assert await asyncio.wait_for(draining, 2) is True
    assert (await _answer(reader))[0] == 201 and handler.cancelled == 0
    await asyncio.sleep(0)
    assert not http.connections


async def test_drain_cuts_what_is_still_running_after_the_grace(server: Server) -> None:
    http, handler, port = server
    reader, _ = await _send(port, "/slow")
    await wait_for(lambda: handler.started == 1)
    http.stop_accepting()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await http.drain(0.2) is False
    assert 0.15 < loop.time() - started < 1.5
    assert await _closed(reader)  # cut without an answer
    await asyncio.sleep(0.05)
    assert handler.cancelled == 1 and http.in_flight == 0 and not http.connections


async def test_drain_with_nothing_in_flight_returns_at_once(server: Server) -> None:
    http, _, port = server
    reader, _ = await _send(port, "/sync")
    await _answer(reader)
    http.stop_accepting()
    assert await asyncio.wait_for(http.drain(10), 0.5) is True

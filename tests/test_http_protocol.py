"""The function listener's HTTP/1.1 server (host/http/protocol.py), spoken to over raw sockets:
keep-alive, pipelining, chunked bodies, Expect: 100-continue, HEAD, limits, malformed requests,
framing a guest cannot break, idle timeouts and a client that goes away."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import httptools

from host.http import protocol
from tests.conftest import EXAMPLES, functions_dir, make_config
from tests.guest_wat import WatGuest, write_guest


class Answer:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


class Connection:
    """A raw client: send bytes, read back parsed answers in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self._answers: list[Answer] = []
        self._current = Answer()
        self._parser = httptools.HttpResponseParser(self)
        self._head_only = False

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._current.on_header(name, value)

    def on_body(self, body: bytes) -> None:
        self._current.on_body(body)

    def on_headers_complete(self) -> bool | None:
        self._current.status = self._parser.get_status_code()
        return None

    def on_message_complete(self) -> None:
        self._current.done = True
        self._answers.append(self._current)
        self._current = Answer()

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answers(self, count: int, timeout: float = 10.0) -> list[Answer]:
        async def fill() -> None:
            while len(self._answers) < count:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError(f"closed after {len(self._answers)} answer(s)")
                self._parser.feed_data(data)

        await asyncio.wait_for(fill(), timeout)
        answers, self._answers = self._answers[:count], self._answers[count:]
        return answers

    async def closed(self, timeout: float = 5.0) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(65536), timeout) == b""
        except (TimeoutError, ConnectionError):
            return False

    def close(self) -> None:
        self.writer.close()


def get(function: str, path: str = "/", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\nid: {function}\r\n{extra}\r\n".encode()


async def _hello(serve, tmp_path: Path, **server):
    folder = functions_dir(tmp_path, EXAMPLES / "hello.wasm", EXAMPLES / "function_2.wasm")
    return await serve(make_config(tmp_path, folder, server=server))


async def test_keep_alive_and_pipelined_requests_answer_in_order(serve, tmp_path: Path) -> None:
    client = await _hello(serve, tmp_path)
    conn = await Connection.open(client.server.listen_port)
    try:
        await conn.send(get("hello", "/one") + get("nope", "/two") + get("hello", "/three") + get("", "/four"))
        answers = await conn.answers(4)
        assert [a.status for a in answers] == [200, 404, 200, 400]
        assert answers[0].body == b"hello method=GET path=/one greeting=-\n"
        assert answers[2].body == b"hello method=GET path=/three greeting=-\n"
        assert answers[0].headers["x-hello"] == "1" and answers[0].headers["content-length"] == "38"
        assert answers[0].headers["content-type"] == "application/octet-stream"
        assert "date" in answers[0].headers and "connection" not in answers[0].headers
        await conn.send(get("hello", "/again"))  # the connection is still usable
        assert (await conn.answers(1))[0].status == 200
    finally:
        conn.close()


async def test_connection_close_and_http_1_0(serve, tmp_path: Path) -> None:
    client = await _hello(serve, tmp_path)
    conn = await Connection.open(client.server.listen_port)
    await conn.send(get("hello", extra="Connection: close\r\n"))
    (answer,) = await conn.answers(1)
    assert answer.status == 200 and answer.headers["connection"] == "close"
    assert await conn.closed()
    conn = await Connection.open(client.server.listen_port)
    await conn.send(b"GET /old HTTP/1.0\r\nid: hello\r\n\r\n")
    (answer,) = await conn.answers(1)
    assert answer.body == b"hello method=GET path=/old greeting=-\n"
    assert await conn.closed()


async def test_chunked_body_and_expect_continue(serve, tmp_path: Path) -> None:
    client = await _hello(serve, tmp_path)
    conn = await Connection.open(client.server.listen_port)
    try:
        # function_2 (id_2) reads the body as the key to look up: "book1" in two chunks.
        await conn.send(b"POST / HTTP/1.1\r\nid: id_2\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"3\r\nboo\r\n2\r\nk1\r\n0\r\n\r\n")
        (answer,) = await conn.answers(1)
        assert answer.status == 200 and answer.body == b"100"
        await conn.send(b"POST / HTTP/1.1\r\nid: id_2\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        await conn.send(b"book1")
        (answer,) = await conn.answers(1)
        assert answer.status == 200 and answer.body == b"100"
    finally:
        conn.close()


async def test_head_has_the_length_but_no_body(serve, tmp_path: Path) -> None:
    client = await _hello(serve, tmp_path)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.listen_port)
    writer.write(b"HEAD /x HTTP/1.1\r\nid: hello\r\n\r\n" + get("hello", "/y"))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 37\r\n" in head
    # The very next bytes are the second answer: the HEAD answer carried no body.
    second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert second.startswith(b"HTTP/1.1 200 OK\r\n")
    writer.close()


async def test_limits_answer_and_close(serve, tmp_path: Path) -> None:
    client = await _hello(serve, tmp_path, max_body_bytes=1024, max_header_bytes=512, max_headers=10)
    port = client.server.listen_port
    cases = [
        (get("hello", "/" + "p" * 600), 400, "request target longer than 512 bytes"),
        (get("hello", extra=f"x-big: {'y' * 600}\r\n"), 400, "header field longer than 512 bytes"),
        (get("hello", extra="".join(f"x-{i}: v\r\n" for i in range(12))), 400, "more than 10 headers"),
        (b"POST / HTTP/1.1\r\nid: hello\r\nContent-Length: 2048\r\n\r\n" + b"x" * 2048, 413,
         "request body larger than 1024 bytes"),
        (b"POST / HTTP/1.1\r\nid: hello\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + b"x" * 2048 + b"\r\n0\r\n\r\n",
         413, "request body larger than 1024 bytes"),
        (b"GARBAGE\r\n\r\n", 400, "malformed request"),
    ]
    for request, status, message in cases:
        conn = await Connection.open(port)
        await conn.send(request)
        (answer,) = await conn.answers(1)
        assert answer.status == status, (request[:40], answer.status, answer.body)
        assert message in json.loads(answer.body)["error"], answer.body
        assert answer.headers["connection"] == "close"
        assert await conn.closed()
    conn = await Connection.open(port)
    await conn.send(b"POST / HTTP/1.1\r\nid: hello\r\nContent-Length: 100\r\n\r\n" + b"x" * 100)
    assert (await conn.answers(1))[0].status == 200
    conn.close()
    # A header line that never ends is cut once it is longer than any valid header block could be.
    conn = await Connection.open(port)
    await conn.send(b"GET / HTTP/1.1\r\nid: hello\r\nx-endless: ")
    for _ in range(8):
        await conn.send(b"v" * 1024)
    (answer,) = await conn.answers(1)
    assert answer.status == 400 and "header" in json.loads(answer.body)["error"]


async def test_a_body_in_the_same_packets_as_small_headers_is_not_a_header_block(serve, tmp_path: Path) -> None:
    client = await _hello(serve, tmp_path, max_body_bytes=1 << 20, max_header_bytes=512, max_headers=10)
    conn = await Connection.open(client.server.listen_port)
    try:
        body = b"x" * 200_000  # far more than 10 headers of 512 bytes
        await conn.send(b"POST / HTTP/1.1\r\nid: hello\r\nContent-Length: %d\r\n\r\n" % len(body) + body
                        + get("hello", "/after"))
        first, second = await conn.answers(2)
        assert (first.status, second.status) == (200, 200)
    finally:
        conn.close()


async def test_an_upgrade_is_ignored_and_the_connection_closed(serve, tmp_path: Path) -> None:
    client = await _hello(serve, tmp_path)
    conn = await Connection.open(client.server.listen_port)
    await conn.send(get("hello", extra="Connection: Upgrade\r\nUpgrade: websocket\r\n") + b"\x81\x05hello")
    (answer,) = await conn.answers(1)
    assert answer.status == 200 and answer.headers["connection"] == "close"
    assert await conn.closed()


async def test_a_body_too_large_names_the_function(serve, tmp_path: Path) -> None:
    client = await _hello(serve, tmp_path, max_body_bytes=10)
    status, _, body = await client.call("hello", method="POST", data=b"x" * 11)
    assert status == 413 and json.loads(body) == {"error": "request body larger than 10 bytes", "function": "hello"}


async def test_a_guest_cannot_break_the_framing(serve, tmp_path: Path) -> None:
    g = WatGuest()
    bad = g.call("proxy_add_header_map_value", 2, g.s("x-evil"), g.s("a\r\nInjected: 1"))
    own = g.call("proxy_add_header_map_value", 2, g.s("content-length"), g.s("999"))
    folder = functions_dir(tmp_path, EXAMPLES / "hello.wasm")
    write_guest(folder, "evil", g.module(proxy_on_request_headers=f"(drop {bad})\n    (i32.const 0)"))
    write_guest(folder, "framing", g.module(proxy_on_request_headers=f"(drop {own})\n    (i32.const 0)"))
    client = await serve(make_config(tmp_path, folder))
    status, headers, body = await client.call("evil")
    assert status == 500 and "Injected" not in headers and b"line break" in body
    status, headers, body = await client.call("framing")  # the server's Content-Length wins
    assert status == 200 and headers["Content-Length"] == "0" and body == b""
    assert (await client.call("hello"))[0] == 200


async def test_idle_keep_alive_connections_are_closed(serve, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(protocol.Limits, "__init__", _with(protocol.Limits.__init__, idle_timeout_s=0.3))
    client = await _hello(serve, tmp_path)
    conn = await Connection.open(client.server.listen_port)
    await conn.send(get("hello"))
    assert (await conn.answers(1))[0].status == 200
    assert await conn.closed(timeout=5)  # idle for longer than 0.3 s


async def test_a_request_sent_too_slowly_is_cut(serve, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(protocol.Limits, "__init__", _with(protocol.Limits.__init__, read_timeout_s=0.3))
    client = await _hello(serve, tmp_path)
    conn = await Connection.open(client.server.listen_port)
    await conn.send(b"GET / HTTP/1.1\r\nid: hel")  # and nothing more
    assert await conn.closed(timeout=5)


def _with(init, **overrides):
    def patched(self, *args, **kwargs):
        init(self, *args, **{**kwargs, **overrides})
    return patched


async def test_many_pipelined_requests_from_a_client_that_reads_late(serve, tmp_path: Path) -> None:
    client = await _hello(serve, tmp_path)
    conn = await Connection.open(client.server.listen_port)
    try:
        count = 400  # far more than the server parses ahead (it pauses reading, then resumes)
        await conn.send(b"".join(get("hello", f"/{i}") for i in range(count)))
        await asyncio.sleep(0.3)  # the answers pile up unread meanwhile
        answers = await conn.answers(count, timeout=30)
        assert [a.body for a in answers] == [f"hello method=GET path=/{i} greeting=-\n".encode()
                                             for i in range(count)]
    finally:
        conn.close()


async def test_a_client_that_goes_away_mid_request_costs_nothing(serve, tmp_path: Path, c_guests: Path) -> None:
    config = make_config(tmp_path, functions_dir(tmp_path, c_guests / "slow.wasm", EXAMPLES / "hello.wasm"),
                         function_defaults={"instance_num": 1})
    client = await serve(config)
    sock = socket.create_connection(("127.0.0.1", client.server.listen_port))
    sock.sendall(get("slow", extra="x-sleep-ms: 300\r\n"))
    await asyncio.sleep(0.05)
    sock.close()  # gone while the guest runs
    await asyncio.sleep(0.4)
    status, _, body = await client.call("slow", headers={"x-sleep-ms": "1"})
    assert (status, body) == (200, b"slept 1\n")  # the instance was released as usual
    assert client.server.listener.in_flight == 0 and (await client.call("hello"))[0] == 200


async def test_stopping_closes_idle_connections_and_finishes_busy_ones(serve, tmp_path: Path,
                                                                       c_guests: Path) -> None:
    config = make_config(tmp_path, functions_dir(tmp_path, c_guests / "slow.wasm", EXAMPLES / "hello.wasm"),
                         server={"shutdown_grace_ms": 5000})
    client = await serve(config)
    port = client.server.listen_port
    idle = await Connection.open(port)
    await idle.send(get("hello"))
    assert (await idle.answers(1))[0].status == 200
    busy = await Connection.open(port)
    await busy.send(get("slow", extra="x-sleep-ms: 400\r\n"))
    await asyncio.sleep(0.1)
    stopping = asyncio.create_task(client.server.stop())
    assert await idle.closed(timeout=2)  # closed at once, without an answer owed
    (answer,) = await busy.answers(1)  # the request in flight is finished...
    assert answer.status == 200 and answer.body == b"slept 400\n"
    assert answer.headers["connection"] == "close"  # ...and its connection not kept
    assert await busy.closed(timeout=2)
    await stopping
    try:
        await Connection.open(port)
        raise AssertionError("the listener still accepts connections")
    except OSError:
        pass

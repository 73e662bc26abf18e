"""A lean HTTP/1.1 server for the function listener: httptools parses, this module does the rest.

Why not aiohttp's server here: its per-request machinery (request and response objects, a task per
request, header multidicts, the stream writer) costs several times what the host itself spends on
a cheap function (bench/results). The admin listener and the Dapr HTTP API run on it too
(host/http/router.py): the host's own listeners do not import aiohttp (issue 16: start-up time).

What it does: keep-alive (HTTP/1.0's too, RFC 9112 9.3) and pipelining (answers in order, one
request per connection at a time; a malformed request after valid ones is answered 400 after them),
Content-Length and chunked request bodies (trailers are kept apart from the headers), `Expect:
100-continue` (sent when that request's turn comes), HEAD, `Upgrade` ignored (the request is
answered as a plain one, then the connection closes), limits (request target and header field
sizes, header count, body size) answered 400/413 and the connection closed, caps on open
connections (in all and per client address), an idle timeout for keep-alive connections, and a
graceful stop (stop accepting, close idle connections, wait for the requests in flight). A handler
answers at once (a `Response`) or later (an awaitable); answering at once costs no task.

The framing of every answer is the server's (`serialize`): a status outside 200-599, a header name
that is not an RFC 9110 token or a value with a control character other than TAB is refused (500),
204 and 304 carry no content, and Content-Length, Transfer-Encoding, Connection and the other
hop-by-hop fields a handler sets are dropped.
"""

from __future__ import annotations

import asyncio
import collections
import http
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import cast

import httptools

from abi.maps import first_value
from host.http.errors import error_body

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Request:
    method: str
    target: str  # path and query string, as sent
    headers: list[tuple[str, str]]  # names in lower case, in the order received
    body: bytes
    peer: tuple | None  # (address, port) of the client
    trailers: list[tuple[str, str]] = field(default_factory=list)  # a chunked body's trailer fields, lower case

    def header(self, name: str) -> str | None:
        """The first value of header `name` (lower case), or None."""
        return first_value(self.headers, name)


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/octet-stream"  # sent when `headers` has no content-type
    function: str | None = None  # the function that produced it: named when the answer is refused


def error_response(status: int, message: str, *, function: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    """A JSON error answer naming what went wrong (and the function, when there is one)."""
    return Response(status, error_body(message, function), list((headers or {}).items()), "application/json")


Handler = Callable[[Request], Response | Awaitable[Response]]


@dataclass(frozen=True)
class Limits:
    max_target: int = 8190  # request target (path and query)
    max_field: int = 8190  # one header name or value
    max_headers: int = 100
    max_body: int = 16 * 1024 * 1024
    idle_timeout_s: float = 75.0  # keep-alive connections idle this long are closed
    read_timeout_s: float = 60.0  # a request still incomplete this long after its first byte: closed
    max_pipelined: int = 16  # parsed requests waiting for their turn before reading pauses
    # Open connections in all: past it the longest-idle keep-alive connection is closed to make
    # room, or (none is idle) the new one is answered 503. 0: no cap.
    max_connections: int = 0
    max_connections_per_client: int = 0  # open connections from one client address; more answer 503. 0: no cap


class _Reject(Exception):
    """A request the server answers itself (400, 413) before closing the connection."""

    def __init__(self, status: int, message: str, function: str | None = None):
        super().__init__(message)
        self.status = status
        self.function = function


_REASONS = {status.value: status.phrase for status in http.HTTPStatus}
# Fields that frame the message or describe the connection (RFC 9110 7.6.1, RFC 9112 6): the
# server's alone. A handler's own are dropped, so it cannot smuggle a second answer or end one early.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection",
                      "upgrade", "te", "trailer", "date"})
_NO_CONTENT = frozenset({204, 304})  # answers that never carry content (RFC 9110 15.3.5, 15.4.5)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 5.6.2
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # not field-vchar, SP or HTAB (RFC 9110 5.5)
_TOKENS_SEEN: set[str] = set()  # header names already found valid (functions reuse a few names)
_TOKENS_SEEN_MAX = 4096
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_TRAILER_ALLOWANCE = 64  # bytes of chunk framing (size line, CRLF) allowed per chunk besides the trailers
# After refusing a request the server stops writing but keeps reading (and dropping) what the client
# still sends, for a while: closing with unread data would reset the connection, and the client
# could lose the answer before reading it.
_DISCARD_LIMIT = 1024 * 1024  # at most this much more (a 413 with a Content-Length: the rest of it)
_DISCARD_WAIT_S = 2.0  # and for at most this long


class _Clock:
    """The Date header, formatted once a second."""

    def __init__(self) -> None:
        self._second = 0
        self._value = ""

    def date(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, formatdate(now, usegmt=True)
        return self._value


def serialize(response: Response, *, head: bool, keep_alive: bool, date: str,
              announce_keep_alive: bool = False) -> bytes:
    """The bytes of `response`. Raises ValueError for a status or header that would break the framing.

    `head`: the answer to a HEAD request (Content-Length of the body, no body). `announce_keep_alive`:
    say `Connection: keep-alive` (an HTTP/1.0 client assumes the connection closes otherwise)."""
    status = response.status
    if not 200 <= status <= 599:
        raise ValueError(f"status {status} is not a final HTTP status (200-599)")
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\nDate: {date}\r\n"]
    content_type: str | None = None
    for name, value in response.headers:
        if name.startswith(":"):
            continue  # pseudo headers (:status) are not HTTP/1.1 headers
        lower = name.lower()
        if lower in _FRAMING:
            continue  # framing is the server's; a function cannot break it
        if name not in _TOKENS_SEEN:
            if _TOKEN.fullmatch(name) is None:
                raise ValueError(f"response header name {name[:64]!r} is not an RFC 9110 token")
            if len(_TOKENS_SEEN) < _TOKENS_SEEN_MAX:
                _TOKENS_SEEN.add(name)
        # Printable ASCII (the common case) is valid as is; anything else is checked character by character.
        if not (value.isascii() and value.isprintable()) and _CONTROL.search(value) is not None:
            raise ValueError(_bad_value(name, value))
        if lower == "content-type":
            content_type = value
            continue
        lines.append(f"{name}: {value}\r\n")
    body = response.body
    if status in _NO_CONTENT:
        body = b""  # no content and no Content-Length: nothing a client could take for one
        if content_type is not None:
            lines.append(f"Content-Type: {content_type}\r\n")
    else:
        lines.append(f"Content-Type: {content_type if content_type is not None else response.content_type}\r\n"
                     f"Content-Length: {len(body)}\r\n")
    if not keep_alive:
        lines.append("Connection: close\r\n\r\n")
    elif announce_keep_alive:
        lines.append("Connection: keep-alive\r\n\r\n")
    else:
        lines.append("\r\n")
    head_bytes = "".join(lines).encode("utf-8", "surrogateescape")
    return head_bytes if head or not body else head_bytes + body


def _bad_value(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        what = "a line break (CR or LF)"
    elif "\0" in value:
        what = "a NUL"
    else:
        what = "a control character"
    return f"response header {name[:64]!r} has {what} in its value"


class HttpServer:
    """The listening socket and its connections."""

    def __init__(self, handler: Handler, limits: Limits = Limits(),
                 on_refused: Callable[[str | None, int], None] | None = None):
        self.handler = handler
        self.limits = limits
        self.on_refused = on_refused  # (function id the request named, status): counts what the server refused
        self.connections: set[HttpConnection] = set()
        self.closing = False
        self.clock = _Clock()
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._idle_event: asyncio.Event | None = None
        # Idle connections, longest idle first (a dict keeps insertion order): the one to close
        # when the connection cap is reached.
        self._idle: dict[HttpConnection, None] = {}
        self._per_client: collections.Counter[str] = collections.Counter()

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen; the bound port. `reuse_port` (SO_REUSEPORT) only for the workers of `serve --workers N`,
        which share the port their supervisor reserved: otherwise a port another process holds is refused."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: HttpConnection(self), host, port, reuse_port=reuse_port,
                                                backlog=1024)
        self._sweep_later(loop)
        return self._server.sockets[0].getsockname()[1]

    @property
    def in_flight(self) -> int:
        return sum(1 for connection in self.connections if connection.busy)

    # -- connection caps ---------------------------------------------------------------------------
    def admit(self, connection: HttpConnection) -> str | None:
        """Count a new connection in; or why it is refused (every slot is taken by busy connections,
        or its client holds its share already). At the cap, an idle keep-alive connection is closed
        to make room: a client that holds many idle connections cannot lock newcomers out."""
        limits = self.limits
        client = connection.client
        per_client = limits.max_connections_per_client
        if per_client and client is not None and self._per_client[client] >= per_client:
            return f"too many connections from {client} (at most {per_client})"
        if limits.max_connections and len(self.connections) >= limits.max_connections:
            longest_idle = next(iter(self._idle), None)
            if longest_idle is None:
                return f"too many open connections (at most {limits.max_connections})"
            longest_idle.close()
            self.forget(longest_idle)
        self.connections.add(connection)
        if client is not None:
            self._per_client[client] += 1
        self._idle[connection] = None
        return None

    def forget(self, connection: HttpConnection) -> None:
        """The connection no longer counts (closed, or being closed). Safe to call twice."""
        if connection in self.connections:
            self.connections.discard(connection)
            client = connection.client
            if client is not None:
                self._per_client[client] -= 1
                if self._per_client[client] <= 0:
                    del self._per_client[client]
        self._idle.pop(connection, None)

    def mark_idle(self, connection: HttpConnection, idle: bool) -> None:
        """`connection` has nothing to do (it goes to the end of the idle order) or has work again."""
        self._idle.pop(connection, None)
        if idle and connection in self.connections:
            self._idle[connection] = None

    # -- timeouts and stopping ---------------------------------------------------------------------
    def _sweep_later(self, loop: asyncio.AbstractEventLoop) -> None:
        limits = self.limits
        self._sweeper = loop.call_later(min(5.0, limits.idle_timeout_s, limits.read_timeout_s), self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close keep-alive connections idle past the timeout, and those whose request is still
        not complete past the read timeout (a slow sender). One timer, not one per request."""
        now = loop.time()
        idle_since, reading_since = now - self.limits.idle_timeout_s, now - self.limits.read_timeout_s
        for connection in list(self.connections):
            if connection.idle and connection.last_active < idle_since:
                connection.close()
            elif connection.reading_since is not None and connection.reading_since < reading_since:
                log.info("closing the connection of %s: its request was not complete within %.0fs",
                         connection.peer, self.limits.read_timeout_s)
                connection.close()
        self._sweep_later(loop)

    def request_done(self) -> None:
        if self._idle_event is not None and self.in_flight == 0:
            self._idle_event.set()

    def stop_accepting(self) -> None:
        """Close the listening socket and the idle keep-alive connections; answers still owed are
        sent with `Connection: close`."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            if connection.idle:
                connection.close()

    async def drain(self, grace_s: float) -> bool:
        """Give requests in flight `grace_s` to finish, then close every connection (cutting what
        is still running). True when nothing was cut."""
        self._idle_event = asyncio.Event()
        finished = True
        if self.in_flight:
            try:
                await asyncio.wait_for(self._idle_event.wait(), grace_s)
            except TimeoutError:
                finished = False
        for connection in list(self.connections):
            connection.abort()
        return finished


# A parsed request waiting for its turn: the request, whether the connection stays open after its
# answer, and whether the answer must say so (HTTP/1.0 keep-alive).
_Queued = tuple[Request, bool, bool]


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests, runs them one at a time, writes answers in order."""

    def __init__(self, server: HttpServer):
        self.server = server
        self.limits = server.limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer: tuple | None = None
        self.client: str | None = None  # the peer's address: what the per-client cap counts
        self.busy = False  # a request is being handled
        self.last_active = self.loop.time()
        self._queue: collections.deque[_Queued] = collections.deque()
        self._task: asyncio.Task | None = None
        self._reading_paused = False
        self._writing_paused = False  # the transport's buffer is full: the client is not reading
        self._in_message = False
        self.reading_since: float | None = None  # when the request being read began
        self._rejected = False  # a request was refused: nothing more is parsed on this connection
        self._pending_reject: _Reject | None = None  # sent once the requests before it are answered
        self._discarding = 0  # bytes still to read (and drop) after a refusal, before closing
        self._continue_owed = False  # the request being read expects 100 Continue; earlier ones are owed answers
        self._messages = 0  # requests begun on this connection
        self._target = b""
        self._headers: list[tuple[str, str]] = []
        self._trailers: list[tuple[str, str]] = []
        self._headers_done = False  # what on_header reports now is a trailer
        self._body: list[bytes] = []
        self._body_size = 0
        self._head_size = 0
        self._overhead = 0  # bytes of the request being read that were neither head nor body
        self._chunks = 0

    # -- connection ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = transport = cast(asyncio.Transport, transport)
        self.peer = transport.get_extra_info("peername")
        self.client = str(self.peer[0]) if isinstance(self.peer, tuple) and self.peer else None
        refusal = self.server.admit(self)
        if refusal is not None:
            log.warning("refused a connection from %s: %s", self.peer, refusal)
            self._rejected = True  # whatever it sends is dropped
            response = error_response(503, refusal, headers={"Retry-After": "1"})
            transport.write(serialize(response, head=False, keep_alive=False, date=self.server.clock.date()))
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.forget(self)
        self.transport = None
        self._queue.clear()
        # A running request finishes (its instance is released as usual); its answer is dropped.

    @property
    def idle(self) -> bool:
        return not self.busy and not self._queue and not self._in_message

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        if self._rejected:
            if self._discarding > 0:
                self._discarding -= len(data)
                if self._discarding <= 0 and self._pending_reject is None:
                    self.close()
            return
        if self._head_size >= 0:
            self._head_size += len(data)  # bytes since the last request ended, until a header block ends
        # Past the header block, count what is not body (chunk framing, trailers) while one request
        # is being read: the parser keeps a trailer line it has not seen the end of.
        in_body, message, body_before = self._in_message and self._head_size < 0, self._messages, self._body_size
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:
            reason = error.__context__
            self._reject(reason if isinstance(reason, _Reject) else _Reject(400, f"bad request: {reason}"))
            return
        except httptools.HttpParserUpgrade:
            # Upgrades are ignored (RFC 9110 7.8 allows it): the request was answered as a plain
            # one, and its connection closes after the answer; what follows is not HTTP/1.1.
            self._rejected = True
            return
        except httptools.HttpParserError as error:
            self._reject(_Reject(400, f"malformed request: {error}"))
            return
        if not self._in_message:
            return
        # The parser keeps a header line it has not seen the end of: bound what it may hold.
        limits = self.limits
        head_limit = limits.max_target + limits.max_headers * (limits.max_field + 4)
        if self._head_size > head_limit:
            self._reject(_Reject(400, "request header block too large"))
        elif in_body and message == self._messages:
            self._overhead += len(data) - (self._body_size - body_before)
            if self._overhead > head_limit + _TRAILER_ALLOWANCE * self._chunks:
                self._reject(_Reject(400, "request trailers or chunk framing too large"))

    # -- parser callbacks ----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._in_message = True
        self._messages += 1
        self.server.mark_idle(self, False)
        self.reading_since = self.last_active
        self._target = b""
        self._headers = []
        self._trailers = []
        self._headers_done = False
        self._body = []
        self._body_size = 0
        self._overhead = 0
        self._chunks = 0

    def on_url(self, url: bytes) -> None:
        self._target += url
        if len(self._target) > self.limits.max_target:
            raise _Reject(400, f"request target longer than {self.limits.max_target} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        limits = self.limits
        if len(name) > limits.max_field or len(value) > limits.max_field:
            raise _Reject(400, f"header field longer than {limits.max_field} bytes")
        if len(self._headers) + len(self._trailers) >= limits.max_headers:
            raise _Reject(400, f"more than {limits.max_headers} headers")
        # A trailer (after a chunked body) is kept apart: it must not stand in for a header — an
        # `id` there does not route, a `content-length` there does not frame (RFC 9110 6.5.1).
        fields = self._trailers if self._headers_done else self._headers
        fields.append((name.decode("latin-1").lower(), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        self._head_size = -1  # the header block is parsed: the body has limits of its own
        self._headers_done = True
        max_body = self.limits.max_body
        expect_continue = False
        for name, value in self._headers:
            if name == "content-length" and value.strip().isdigit() and int(value) > max_body:
                raise self._too_large(int(value))
            if name == "expect" and value.lower() == "100-continue":
                expect_continue = True
        # An HTTP/1.0 client does not know 100 Continue (RFC 9110 10.1.1). Pipelined behind requests
        # still owed an answer, it is sent when this request's turn comes: never among their answers.
        if expect_continue and self.parser.get_http_version() != "1.0" and self.transport is not None:
            if self.busy or self._queue:
                self._continue_owed = True
            else:
                self.transport.write(_CONTINUE)

    def on_chunk_header(self) -> None:
        self._chunks += 1

    def on_body(self, chunk: bytes) -> None:
        self._continue_owed = False  # the client sends the body without waiting: no 100 is needed
        self._body_size += len(chunk)
        if self._body_size > self.limits.max_body:
            raise self._too_large(None)
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        self._in_message = False
        self._continue_owed = False
        self.reading_since = None
        self._head_size = 0
        parser = self.parser
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        request = Request(parser.get_method().decode("ascii", "replace"),
                          self._target.decode("utf-8", "surrogateescape"), self._headers, body, self.peer,
                          self._trailers)
        keep_alive = parser.should_keep_alive() and not parser.should_upgrade()
        # RFC 9112 9.3: an HTTP/1.0 connection persists only when the client asked (Connection:
        # keep-alive, which should_keep_alive reads), and the answer must say it does.
        self._queue.append((request, keep_alive, keep_alive and parser.get_http_version() == "1.0"))
        if self.busy:
            self._update_reading()
            return
        self._run_queued()

    # -- flow control ------------------------------------------------------------------------------
    def pause_writing(self) -> None:
        """The client does not read its answers: handle nothing more until it does."""
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._update_reading()
        if not self.busy:
            self._run_queued()

    def _update_reading(self) -> None:
        """Read while answers flow and few parsed requests wait for their turn."""
        pause = self._writing_paused or len(self._queue) >= self.limits.max_pipelined
        if pause != self._reading_paused and self.transport is not None:
            self._reading_paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def _too_large(self, content_length: int | None) -> _Reject:
        """A 413; the rest of the body (when its length is known) is read and dropped before closing."""
        self._discarding = content_length - self._body_size if content_length is not None else _DISCARD_LIMIT
        function = next((value for name, value in self._headers if name == "id"), None)
        return _Reject(413, f"request body larger than {self.limits.max_body} bytes", function)

    def _reject(self, reject: _Reject) -> None:
        """Answer `reject` once the requests parsed before it are answered (in order), then close."""
        log.info("refused a request from %s: %s", self.peer, reject)
        if self.server.on_refused is not None:
            self.server.on_refused(reject.function, reject.status)
        self._rejected = True
        self._in_message = False
        self._continue_owed = False
        self.reading_since = None
        self.server.mark_idle(self, False)
        if self.busy or self._queue:
            self._pending_reject = reject
        else:
            self._send_reject(reject)

    def _send_reject(self, reject: _Reject) -> None:
        if self.transport is None:
            return
        response = error_response(reject.status, str(reject), function=reject.function)
        self.transport.write(serialize(response, head=False, keep_alive=False, date=self.server.clock.date()))
        if self._discarding <= 0:
            self._discarding = _DISCARD_LIMIT
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the client reads the answer, then sees the end
        self.loop.call_later(_DISCARD_WAIT_S, self.close)

    # -- handling ------------------------------------------------------------------------------
    def _run_queued(self) -> None:
        """Handle queued requests in order while they answer at once; start a task otherwise."""
        while self._queue and not self.busy and not self._writing_paused and self.transport is not None:
            request, keep_alive, announce = self._queue.popleft()
            self.busy = True
            try:
                result = self.server.handler(request)
            except Exception as error:  # noqa: BLE001 - a handler bug must not take the connection down
                log.exception("request handler failed")
                result = error_response(500, f"internal error: {error}")
            if isinstance(result, Response):
                self._answer(request, result, keep_alive, announce)
            else:
                self._task = self.loop.create_task(self._await(request, result, keep_alive, announce))

    async def _await(self, request: Request, pending: Awaitable[Response], keep_alive: bool,
                     announce: bool) -> None:
        try:
            response = await pending
        except asyncio.CancelledError:
            self.busy = False
            self.server.request_done()
            raise
        except Exception as error:  # noqa: BLE001
            log.exception("request handler failed")
            response = error_response(500, f"internal error: {error}")
        self._task = None
        self._answer(request, response, keep_alive, announce)
        self._run_queued()

    def _answer(self, request: Request, response: Response, keep_alive: bool, announce: bool) -> None:
        self.busy = False
        transport = self.transport
        if transport is not None:
            keep_alive = keep_alive and not self.server.closing
            head, date = request.method == "HEAD", self.server.clock.date()
            try:
                data = serialize(response, head=head, keep_alive=keep_alive, date=date,
                                 announce_keep_alive=announce)
            except ValueError as error:
                function = response.function or request.header("id")
                log.warning("invalid answer to %s %s (function %s): %s", request.method, request.target,
                            function, error)
                message = f"function {function!r} sent an invalid response: {error}" if function else \
                    f"invalid response: {error}"
                data = serialize(error_response(500, message, function=function), head=head,
                                 keep_alive=keep_alive, date=date, announce_keep_alive=announce)
            transport.write(data)
            self.last_active = self.loop.time()
            if not keep_alive:
                transport.close()
                self._queue.clear()
                self._pending_reject = None
            elif self._queue:
                self._update_reading()  # the next request's turn (the caller runs it)
            elif self._pending_reject is not None:
                reject, self._pending_reject = self._pending_reject, None
                self._send_reject(reject)
            else:
                if self._continue_owed:
                    self._continue_owed = False
                    transport.write(_CONTINUE)  # the request being read is next: it may send its body
                self._update_reading()
                if self.idle:
                    self.server.mark_idle(self, True)
        self.server.request_done()

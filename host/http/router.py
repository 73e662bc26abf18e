"""Routing for the host's own HTTP APIs (the admin API, Dapr's HTTP API) on the lean server of
host/http/protocol.py (issue 16: aiohttp's server and client cost ~120-140 ms of imports at start-up,
which a host no longer pays).

A route is a fixed path whose `{name}` segments match one non-empty path segment (percent-decoded,
so an id with a `/` in it travels as `%2F`), and whose last segment may be `{name:.+}` or
`{name:.*}`: the rest of the path. As aiohttp's router answers: the first route whose path and
method match handles the request; a path some route knows with another method is 405 (with
`Allow`), any other 404; HEAD goes wherever GET does; method `*` is any method. An optional guard
runs before routing (a token check)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, overload
from urllib.parse import parse_qsl, unquote, urlsplit

from abi.maps import first_value
from host.http.protocol import HttpServer, Limits, Request, Response

JSON_CONTENT_TYPE = "application/json; charset=utf-8"


class Query:
    """A query string's parameters in order (a name may repeat)."""

    __slots__ = ("_pairs",)

    def __init__(self, raw: str):
        self._pairs = parse_qsl(raw, keep_blank_values=True)

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str) -> str: ...

    def get(self, name: str, default: str | None = None) -> str | None:
        value = first_value(self._pairs, name)
        return default if value is None else value

    def getall(self, name: str) -> list[str]:
        return [value for key, value in self._pairs if key == name]

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs)


class Headers:
    """A request's header fields (names in lower case, as the server reads them), looked up
    case-insensitively."""

    __slots__ = ("_fields",)

    def __init__(self, fields: list[tuple[str, str]]):
        self._fields = fields

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str) -> str: ...

    def get(self, name: str, default: str | None = None) -> str | None:
        value = first_value(self._fields, name.lower())
        return default if value is None else value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def items(self) -> Iterator[tuple[str, str]]:
        return iter(self._fields)


class RoutedRequest:
    """One request: its method, decoded path, the target as sent (`raw_path`, with the query), query,
    headers, route captures and body (read in full by the server, within its body limit)."""

    __slots__ = ("method", "path", "raw_path", "query", "headers", "match_info", "body", "peer")

    def __init__(self, request: Request, raw_path: str, path: str, query: Query):
        self.method = request.method
        self.raw_path = raw_path
        self.path = path
        self.query = query
        self.headers = Headers(request.headers)
        self.match_info: dict[str, str] = {}
        self.body = request.body
        self.peer = request.peer

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def host(self) -> str:
        return self.headers.get("host") or ""


RouteHandler = Callable[[RoutedRequest], Awaitable[Response]]
Guard = Callable[[RoutedRequest], Response | None]  # an answer refuses the request; None lets it through
# What to answer when no route takes the request: (request, the methods its path allows; empty: none).
Unrouted = Callable[[RoutedRequest, set[str]], Response]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(data).encode(), list((headers or {}).items()), JSON_CONTENT_TYPE)


def _plain(status: int, text: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, text.encode(), headers or [], "text/plain; charset=utf-8")


def plain_unrouted(_: RoutedRequest, allowed: set[str]) -> Response:
    """aiohttp's answers: `404: Not Found`, `405: Method Not Allowed` with `Allow`."""
    if not allowed:
        return _plain(404, "404: Not Found")
    return _plain(405, "405: Method Not Allowed", [("Allow", ",".join(sorted(allowed)))])


class _Route:
    __slots__ = ("segments", "tail", "methods")

    def __init__(self, pattern: str):
        segments = pattern.split("/")
        self.tail: tuple[str, bool] | None = None  # (name, may be empty)
        last = segments[-1]
        if last.startswith("{") and (last.endswith(":.+}") or last.endswith(":.*}")):
            self.tail = (last[1:-4], last.endswith(":.*}"))
            segments = segments[:-1]
        self.segments = tuple(segments)
        self.methods: dict[str, RouteHandler] = {}

    def match(self, parts: list[str]) -> dict[str, str] | None:
        fixed = len(self.segments)
        if len(parts) < fixed or (self.tail is None and len(parts) != fixed) \
                or (self.tail is not None and len(parts) == fixed):
            return None
        captured: dict[str, str] = {}
        for pattern, raw in zip(self.segments, parts, strict=False):
            value = unquote(raw)
            if pattern.startswith("{") and pattern.endswith("}"):
                if not value:
                    return None
                captured[pattern[1:-1]] = value
            elif pattern != value:
                return None
        if self.tail is not None:
            name, may_be_empty = self.tail
            rest = unquote("/".join(parts[fixed:]))
            if not rest and not may_be_empty:
                return None
            captured[name] = rest
        return captured


class Router:
    def __init__(self, guard: Guard | None = None, unrouted: Unrouted = plain_unrouted):
        self.guard = guard
        self.unrouted = unrouted
        self._routes: list[_Route] = []

    def add(self, method: str, pattern: str, handler: RouteHandler) -> None:
        for route in self._routes:
            if route.segments == _Route(pattern).segments and route.tail == _Route(pattern).tail:
                route.methods[method] = handler
                return
        route = _Route(pattern)
        route.methods[method] = handler
        self._routes.append(route)

    def _find(self, method: str, raw_path: str) -> tuple[RouteHandler | None, dict[str, str], set[str]]:
        parts = raw_path.split("/")
        allowed: set[str] = set()
        for route in self._routes:
            captured = route.match(parts)
            if captured is None:
                continue
            methods = route.methods
            handler = methods.get(method) or methods.get("*")
            if handler is None and method == "HEAD":
                handler = methods.get("GET")
            if handler is not None:
                return handler, captured, allowed
            allowed.update(methods)
            if "GET" in methods:
                allowed.add("HEAD")
        return None, {}, allowed

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        target = request.target
        if not target.startswith("/"):  # absolute form (RFC 9112 3.2.2)
            split = urlsplit(target)
            target = (split.path or "/") + (f"?{split.query}" if split.query else "")
        raw_path, _, raw_query = target.partition("?")
        routed = RoutedRequest(request, target, unquote(raw_path), Query(raw_query))
        if self.guard is not None:
            refused = self.guard(routed)
            if refused is not None:
                return refused
        handler, captured, allowed = self._find(request.method, raw_path)
        if handler is None:
            return self.unrouted(routed, allowed)
        routed.match_info = captured
        return handler(routed)


class RoutedListener:
    """A server for a router: `start` binds it, `close` stops it (requests still running get
    `grace_s`) and runs the `on_close` callbacks."""

    def __init__(self, router: Router, max_body_bytes: int, grace_s: float):
        self.server = HttpServer(router.handle, Limits(max_body=max_body_bytes))
        self.grace_s = grace_s
        self.on_close: list[Callable[[], Awaitable[None]]] = []

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        return await self.server.start(host, port, reuse_port=reuse_port)

    async def close(self, grace_s: float | None = None) -> None:
        self.server.stop_accepting()
        await self.server.drain(self.grace_s if grace_s is None else grace_s)
        for callback in self.on_close:
            await callback()

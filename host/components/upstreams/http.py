"""HTTP upstreams for `proxy_http_call`: a name -> base URL map from config, called with aiohttp
on the event loop; the guest's thread waits on a concurrent future."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import urllib.parse
from typing import TYPE_CHECKING

from abi.maps import HeaderList
from abi.services import HttpCallResult
from host.lazy import lazy_module
from host.tracing.current import end_call, start_call

if TYPE_CHECKING:
    import aiohttp
else:  # aiohttp's client (~100 ms to import, two SSL contexts built) only once a guest calls out
    aiohttp = lazy_module("aiohttp")

log = logging.getLogger(__name__)

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "content-length", "host"}


class HttpUpstreams:
    def __init__(self, upstreams: dict[str, str]):
        self.upstreams = {name: url.rstrip("/") for name, url in upstreams.items()}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None  # made at the first call
        self._closed = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        return self._session

    def has_upstream(self, name: str) -> bool:
        return name in self.upstreams

    def health(self) -> dict[str, tuple[bool, str]]:
        """Blocking (run it in a thread): can each upstream be connected to?"""
        return {f"upstream:{name}": _reachable(url) for name, url in self.upstreams.items()}

    def dispatch(self, upstream: str, headers: HeaderList, body: bytes, trailers: HeaderList,
                 timeout_s: float) -> concurrent.futures.Future[HttpCallResult]:
        if self._loop is None:
            future: concurrent.futures.Future = concurrent.futures.Future()
            future.set_result(HttpCallResult(0, [], b"", error="upstreams not started"))
            return future
        # Called from the guest's thread: the request's trace context goes along (issue 14).
        sent, span = start_call(headers, "client", lambda: _describe(upstream, headers))
        call = asyncio.run_coroutine_threadsafe(self._call(upstream, sent, body, timeout_s), self._loop)
        if span is not None:
            call.add_done_callback(lambda done: _end_span(span, done))
        return call

    async def _call(self, upstream: str, headers: HeaderList, body: bytes, timeout_s: float) -> HttpCallResult:
        pseudo = {k: v for k, v in headers if k.startswith(":")}
        method = pseudo.get(":method", "GET")
        path = pseudo.get(":path", "/")
        request_headers = [(k, v) for k, v in headers if not k.startswith(":") and k.lower() not in _HOP_BY_HOP]
        url = self.upstreams[upstream] + (path if path.startswith("/") else "/" + path)
        if self._closed:
            return HttpCallResult(0, [], b"", error="upstreams closed (the host is stopping)")
        try:
            async with self._client().request(method, url, headers=request_headers, data=body or None,
                                             timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
                payload = await response.read()
                response_headers = [(":status", str(response.status))] + [
                    (k.lower(), v) for k, v in response.headers.items()]
                return HttpCallResult(response.status, response_headers, payload)
        except TimeoutError:
            return HttpCallResult(0, [], b"", error=f"timeout after {timeout_s:g}s calling {upstream}")
        except aiohttp.ClientError as error:
            return HttpCallResult(0, [], b"", error=f"{upstream}: {error}")


def _describe(upstream: str, headers: HeaderList) -> tuple[str, dict[str, object]]:
    """The client span's name and attributes (only made for a recorded request)."""
    pseudo = dict(headers)
    method = pseudo.get(":method", "GET")
    return method, {"wasm_faas.upstream": upstream, "http.request.method": method, "url.path": pseudo.get(":path", "/")}


def _end_span(span: object, done: concurrent.futures.Future[HttpCallResult]) -> None:
    if done.cancelled():
        end_call(span, "cancelled")
        return
    error = done.exception()
    result = done.result() if error is None else HttpCallResult(0, [], b"", error=str(error))
    end_call(span, result.error or (f"HTTP {result.status}" if result.status >= 500 else ""),
             {"http.response.status_code": result.status} if result.status else None)


def _reachable(url: str, timeout_s: float = 0.5) -> tuple[bool, str]:
    parsed = urllib.parse.urlsplit(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", port), timeout=timeout_s):
            return True, url
    except OSError as error:
        return False, f"{url}: {error.strerror or error}"

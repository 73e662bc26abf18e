"""The function listener: header `id` picks the function, the request goes through the one call
path (host/functions/dispatch.py) and its answer back to the client.

It runs on the lean HTTP/1.1 server of `protocol.py`, which frames the guest's answer itself (a
status or header that would break the framing is refused with a 500 naming the function). A request
that the dispatcher answers at once (an inline function with an idle instance) is answered
synchronously, without a task or a coroutine; everything else is awaited.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Awaitable

from abi import HttpRequest, HttpResponse
from host.config import ServerConfig
from host.functions.dispatch import Dispatcher, DispatchError
from host.functions.version import FunctionVersion
from host.http.protocol import HttpServer, Limits, Request, Response, error_response

log = logging.getLogger(__name__)


def _answer(response: HttpResponse, function_id: str) -> Response:
    return Response(response.status, response.body, response.headers, function=function_id)


def _refused(error: DispatchError) -> Response:
    headers = {"Retry-After": error.retry_after} if error.retry_after else None
    return error_response(error.status, str(error), function=error.function_id or None, headers=headers)


class FunctionListener:
    def __init__(self, dispatcher: Dispatcher):
        self.dispatcher = dispatcher

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        function_id = request.header("id")
        if not function_id:
            return error_response(400, "missing 'id' header: it names the function to call")
        try:
            version = self.dispatcher.find(function_id)
            peer = request.peer
            guest_request = HttpRequest.build(
                request.method, request.target, request.headers, request.body,
                authority=request.header("host") or "", scheme="http",  # this listener serves plain HTTP
                source_address=peer[0] if peer else "", source_port=peer[1] if peer else 0, lowered=True,
                trailers=request.trailers)
            response = self.dispatcher.try_now(version, guest_request)
        except DispatchError as error:
            return _refused(error)
        if response is not None:
            return _answer(response, version.function_id)
        return self._later(version, guest_request)

    async def _later(self, version: FunctionVersion, guest_request: HttpRequest) -> Response:
        try:
            return _answer(await self.dispatcher.call(version, guest_request), version.function_id)
        except DispatchError as error:
            return _refused(error)
        except Exception as error:  # noqa: BLE001 - a host bug must not take the listener down
            log.exception("function %s: unexpected error", version.function_id)
            return error_response(500, f"function {version.function_id!r} failed in the host: {error}",
                                  function=version.function_id)


def create_function_server(dispatcher: Dispatcher, server: ServerConfig) -> HttpServer:
    listener = FunctionListener(dispatcher)
    limits = Limits(max_target=server.max_header_bytes, max_field=server.max_header_bytes,
                    max_headers=server.max_headers, max_body=server.max_body_bytes,
                    max_connections=server.max_connections or default_max_connections(),
                    max_connections_per_client=server.max_connections_per_client)
    return HttpServer(listener.handle, limits, on_refused=lambda function_id, status: (
        dispatcher.metrics.listener_refused(function_id, status, "too_large" if status == 413 else "bad_request")))


def default_max_connections() -> int:
    """Three quarters of the open-file limit: the rest stays for the admin listener, module files,
    backend clients and the guests' own calls, so a flood of connections cannot starve them."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 65536
    return max(16, soft * 3 // 4)

"""Dapr's HTTP service invocation, `/v1.0/invoke/{id}/method/{method...}` with any verb (the Dapr
Python SDK's default invoke path): the request goes to function `id` through the one call path as
the function listener would pass it (header `id`, path = the method with its query string, the
caller's headers and body), and the function's answer comes back as it is, whatever its status.
"""

from __future__ import annotations

from abi import HttpRequest
from host.api import RuntimeApi
from host.api.errors import invalid
from host.http.protocol import Response
from host.http.router import RoutedRequest, Router

# Hop-by-hop headers (RFC 9110 7.6.1) and the API token are not the application's to forward.
_HOP_BY_HOP = frozenset(("connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
                         "upgrade", "proxy-authorization", "proxy-authenticate", "dapr-api-token", "id"))
_NOT_RETURNED = frozenset(("content-length", "transfer-encoding", "connection", "keep-alive", "date", "server"))
ROUTE = "/v1.0/invoke/{id}/method/{method:.*}"


class InvokeRoutes:
    def __init__(self, api: RuntimeApi):
        self.api = api

    def add_to(self, router: Router) -> None:
        router.add("*", ROUTE, self.invoke)

    async def invoke(self, request: RoutedRequest) -> Response:
        function_id = request.match_info["id"]
        # The raw path keeps the method's own escaping and its query string.
        _, separator, rest = request.raw_path.partition("/method/")
        if not separator:
            raise invalid("expected /v1.0/invoke/{id}/method/{method}")
        headers = [("id", function_id)] + [(name.lower(), value) for name, value in request.headers.items()
                                           if name.lower() not in _HOP_BY_HOP]
        peer = request.peer
        guest_request = HttpRequest.build(
            request.method, "/" + rest, headers, request.body, authority=request.host, lowered=True,
            source_address=peer[0] if peer else "", source_port=peer[1] if peer else 0)
        answer = await self.api.invoke.forward(function_id, guest_request)
        return Response(answer.status, answer.body, [(name, value) for name, value in answer.headers
                                                     if not name.startswith(":") and name.lower() not in _NOT_RETURNED])

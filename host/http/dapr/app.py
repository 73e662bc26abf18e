"""The Dapr HTTP API: health, then the routes of state.py, invoke.py and blocks.py, behind Dapr's
API token (`dapr-api-token` header; the health routes are exempt, as in Dapr) and the error map (an
`ApiError` becomes Dapr's `{"errorCode", "message"}` with Dapr's status; an unknown route is a JSON
404, another method a JSON 405; anything unexpected is logged and answered 500, never fatal).

It runs on the lean server of host/http/protocol.py (host/http/router.py), not aiohttp.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

from host.api import RuntimeApi
from host.api.errors import ApiError
from host.http.dapr._common import api_error_response, error_response
from host.http.dapr.blocks import BlockRoutes
from host.http.dapr.invoke import InvokeRoutes
from host.http.dapr.state import StateRoutes
from host.http.protocol import Response
from host.http.router import RoutedListener, RoutedRequest, RouteHandler, Router

log = logging.getLogger(__name__)

TOKEN_HEADER = "dapr-api-token"
HEALTH_PATHS = frozenset(("/v1.0/healthz", "/v1.0/healthz/outbound"))


def _token_check(token: str) -> Callable[[RoutedRequest], Response | None]:
    expected = token.encode()

    def check(request: RoutedRequest) -> Response | None:
        if request.method == "GET" and request.path in HEALTH_PATHS:
            return None
        sent = request.headers.get(TOKEN_HEADER)
        if sent is None or not hmac.compare_digest(sent.encode(), expected):
            return error_response(401, "ERR_UNAUTHORIZED", "missing api token in request header" if sent is None
                                  else "authentication error: api token mismatch")
        return None

    return check


def _unrouted(request: RoutedRequest, allowed: set[str]) -> Response:
    return error_response(405 if allowed else 404, "ERR_METHOD_NOT_ALLOWED" if allowed else "ERR_NOT_FOUND",
                          f"{request.method} {request.path} is not a route of the Dapr HTTP API here")


class _DaprRouter(Router):
    """Every route's errors answered as Dapr does: an `ApiError` as Dapr's error body and status,
    anything unexpected logged and answered 500 (never fatal)."""

    def add(self, method: str, pattern: str, handler: RouteHandler) -> None:
        async def mapped(request: RoutedRequest) -> Response:
            try:
                return await handler(request)
            except ApiError as error:
                return api_error_response(error)
            except Exception as error:  # noqa: BLE001 - a bad request must not take the listener down
                log.exception("Dapr HTTP %s %s failed in the host", request.method, request.path)
                return error_response(500, "ERR_INTERNAL", f"{request.method} {request.path} failed in the host: "
                                                           f"{error}")

        super().add(method, pattern, mapped)


def create_dapr_app(api: RuntimeApi, *, ready: Callable[[], bool], api_token: str | None,
                    max_body_bytes: int, grace_s: float) -> RoutedListener:
    """`ready()`: whether the host serves (healthz answers 204, else 500). Calls still running when
    it stops get `grace_s`."""
    api = api.for_api("http")  # runtime-call metrics under api="http" (host/api/__init__.py)
    router = _DaprRouter(_token_check(api_token) if api_token else None, _unrouted)

    async def healthz(request: RoutedRequest) -> Response:
        app_id = request.query.get("appid")
        if app_id is not None and app_id != api.app_id:
            return error_response(500, "ERR_HEALTH_APPID_NOT_MATCH", "dapr app-id does not match")
        if not ready():
            return error_response(500, "ERR_HEALTH_NOT_READY", "the host is not ready")
        return Response(204)

    async def healthz_outbound(_: RoutedRequest) -> Response:
        return Response(204)  # components are built before this listener starts

    router.add("GET", "/v1.0/healthz", healthz)
    router.add("GET", "/v1.0/healthz/outbound", healthz_outbound)
    StateRoutes(api).add_to(router)
    InvokeRoutes(api).add_to(router)
    BlockRoutes(api).add_to(router)
    return RoutedListener(router, max_body_bytes, grace_s)

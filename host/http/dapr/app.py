"""The Dapr HTTP API app: health, then the routes of state.py, invoke.py and blocks.py, behind two
middlewares: Dapr's API token (`dapr-api-token` header; the health routes are exempt, as in Dapr)
and the error map (an `ApiError` becomes Dapr's `{"errorCode", "message"}` with Dapr's status; an
unknown route is a JSON 404; anything unexpected is logged and answered 500, never fatal).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from host.api import RuntimeApi
from host.api.errors import ApiError
from host.http.dapr._common import api_error_response, error_response
from host.http.dapr.blocks import BlockRoutes
from host.http.dapr.invoke import InvokeRoutes
from host.http.dapr.state import StateRoutes

log = logging.getLogger(__name__)

TOKEN_HEADER = "dapr-api-token"
HEALTH_PATHS = frozenset(("/v1.0/healthz", "/v1.0/healthz/outbound"))


def _token_check(token: str) -> Callable[[web.Request, Handler], object]:
    expected = token.encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "GET" and request.path in HEALTH_PATHS:
            return await handler(request)
        sent = request.headers.get(TOKEN_HEADER)
        if sent is None or not hmac.compare_digest(sent.encode(), expected):
            return error_response(401, "ERR_UNAUTHORIZED", "missing api token in request header" if sent is None
                                  else "authentication error: api token mismatch")
        return await handler(request)

    return check


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        return api_error_response(error)
    except web.HTTPException as error:
        if error.status in (404, 405):
            return error_response(error.status, "ERR_NOT_FOUND" if error.status == 404 else "ERR_METHOD_NOT_ALLOWED",
                                  f"{request.method} {request.path} is not a route of the Dapr HTTP API here")
        raise
    except Exception as error:  # noqa: BLE001 - a bad request must not take the listener down
        log.exception("Dapr HTTP %s %s failed in the host", request.method, request.path)
        return error_response(500, "ERR_INTERNAL", f"{request.method} {request.path} failed in the host: {error}")


def create_dapr_app(api: RuntimeApi, *, ready: Callable[[], bool], api_token: str | None,
                    max_body_bytes: int) -> web.Application:
    """`ready()`: whether the host serves (healthz answers 204, else 500)."""
    api = api.for_api("http")  # runtime-call metrics under api="http" (host/api/__init__.py)
    middlewares = [_errors]
    if api_token:
        middlewares.insert(0, _token_check(api_token))  # type: ignore[arg-type]
    app = web.Application(middlewares=middlewares, client_max_size=max_body_bytes)
    routes = web.RouteTableDef()

    @routes.get("/v1.0/healthz")
    async def healthz(request: web.Request) -> web.StreamResponse:
        app_id = request.query.get("appid")
        if app_id is not None and app_id != api.app_id:
            return error_response(500, "ERR_HEALTH_APPID_NOT_MATCH", "dapr app-id does not match")
        if not ready():
            return error_response(500, "ERR_HEALTH_NOT_READY", "the host is not ready")
        return web.Response(status=204)

    @routes.get("/v1.0/healthz/outbound")
    async def healthz_outbound(request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)  # components are built before this listener starts

    StateRoutes(api).add_to(routes)
    InvokeRoutes(api).add_to(routes)
    BlockRoutes(api).add_to(routes)
    app.add_routes(routes)
    return app

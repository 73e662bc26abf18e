"""The admin listener: actuator health (Layotto's words: INIT, UP, DOWN) and function listings."""

from __future__ import annotations

from aiohttp import web

from ..runtime import UP, Host
from .errors import json_error


def create_admin_app(host: Host) -> web.Application:
    async def liveness(_: web.Request) -> web.Response:
        return web.json_response({"status": UP, "components": {}})

    async def readiness(_: web.Request) -> web.Response:
        status, details = host.readiness()
        return web.json_response({"status": status, "details": details}, status=200 if status == UP else 503)

    async def list_functions(_: web.Request) -> web.Response:
        return web.json_response({"functions": [v.describe() for v in host.router.versions()],
                                  "failed": host.failures, "module_cache": host.cache.stats()})

    async def get_function(request: web.Request) -> web.Response:
        function_id = request.match_info["id"]
        versions = [v.describe() for v in host.router.versions() if v.function_id == function_id]
        if not versions:
            return json_error(404, f"unknown function id {function_id!r}", function=function_id)
        return web.json_response({"id": function_id, "versions": versions})

    app = web.Application()
    app.router.add_get("/actuator/health/liveness", liveness)
    app.router.add_get("/actuator/health/readiness", readiness)
    app.router.add_get("/functions", list_functions)
    app.router.add_get("/functions/{id}", get_function)
    return app

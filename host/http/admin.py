"""The admin listener: actuator health (Layotto's INIT/UP/DOWN), function listings, and Layotto's
admin API (`POST /wasm/install`, `/wasm/update`, `/wasm/uninstall`: 200 with an empty body, or 500
with `{"error": ...}`). Everything but the health probes may require a bearer token."""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web
from pydantic import ValidationError

from ..config import FunctionConfig
from ..runtime import UP, Host
from .errors import json_error

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminError(Exception):
    """A refused admin request (Layotto answers these with HTTP 500 and {"error": ...})."""


def _token_guard(token: str) -> Callable:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/actuator/"):
            return await handler(request)
        offered = request.headers.get("Authorization", "")
        if not hmac.compare_digest(offered.encode(), f"Bearer {token}".encode()):
            return json_error(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return guard


def _inside(path: Path, folders: list[Path]) -> bool:
    return any(path == folder or folder in path.parents for folder in folders)


class LayottoAdmin:
    """Layotto's three admin calls, mapped onto the host's deployments."""

    def __init__(self, host: Host):
        self.host = host

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise AdminError("request body must be a JSON object") from None
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
            raise AdminError("field 'name' (a non-empty string) is required")
        return body

    def _module_path(self, vm_config: Any) -> Path:
        if not isinstance(vm_config, dict) or not isinstance(vm_config.get("path"), str):
            raise AdminError("field 'vm_config.path' is required")
        path = self.host.config.resolve(vm_config["path"])
        folders = [self.host.config.resolve(d) for d in self.host.config.functions_dirs]
        if not self.host.config.server.admin_allow_any_path and not _inside(path, folders):
            raise AdminError(f"path {vm_config['path']!r} is outside the functions folders "
                             "(set server.admin_allow_any_path to allow it)")
        if not path.is_file():
            raise AdminError(f"no module at {vm_config['path']!r}")
        return path

    async def install(self, request: web.Request) -> None:
        body = await self._body(request)
        path = self._module_path(body.get("vm_config"))
        try:
            override = FunctionConfig.model_validate({
                "name": body["name"], "instance_num": body.get("instance_num"),
                "md5": (body.get("vm_config") or {}).get("md5"),
                "engine": (body.get("vm_config") or {}).get("engine", "wasmtime")})
        except ValidationError as error:
            raise AdminError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()))
        record = await self.host.deploy_path(path, override)
        if record.last_outcome != "deployed":
            raise AdminError(record.last_error or "install failed")

    async def update(self, request: web.Request) -> None:
        body = await self._body(request)
        count = body.get("instance_num")
        if not isinstance(count, int) or isinstance(count, bool):
            raise AdminError("field 'instance_num' (an integer) is required")
        record = self.host.find(body["name"])
        if record is None or record.version is None:
            raise AdminError(f"no function named {body['name']!r}")
        record.version.pool.resize(count if count > 0 else self.host.default_instances())

    async def uninstall(self, request: web.Request) -> None:
        body = await self._body(request)
        record = self.host.find(body["name"])
        if record is None:
            raise AdminError(f"no function named {body['name']!r}")
        await self.host.remove_path(record.path)


def create_admin_app(host: Host) -> web.Application:
    layotto = LayottoAdmin(host)

    async def liveness(_: web.Request) -> web.Response:
        return web.json_response({"status": UP, "components": {}})

    async def readiness(_: web.Request) -> web.Response:
        status, details = host.readiness()
        return web.json_response({"status": status, "details": details}, status=200 if status == UP else 503)

    async def list_functions(_: web.Request) -> web.Response:
        return web.json_response({"functions": [d.describe() for d in host.deployments.values()],
                                  "failed": host.failures(), "module_cache": host.cache.stats()})

    async def get_function(request: web.Request) -> web.Response:
        key = request.match_info["id"]
        records = [d for d in host.deployments.values()
                   if (d.version is not None and key in (d.version.function_id, d.version.name))
                   or d.path.stem == key]
        if not records:
            return json_error(404, f"unknown function id {key!r}", function=key)
        return web.json_response({"id": key, "versions": [d.describe() for d in records]})

    def layotto_call(action: Callable[[web.Request], Awaitable[None]]) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            try:
                await action(request)
            except AdminError as error:
                return web.json_response({"error": str(error)}, status=500)
            return web.Response(status=200)

        return handle

    middlewares = [_token_guard(host.config.server.admin_token)] if host.config.server.admin_token else []
    app = web.Application(middlewares=middlewares)
    app.router.add_get("/actuator/health/liveness", liveness)
    app.router.add_get("/actuator/health/readiness", readiness)
    app.router.add_get("/functions", list_functions)
    app.router.add_get("/functions/{id}", get_function)
    app.router.add_post("/wasm/install", layotto_call(layotto.install))
    app.router.add_post("/wasm/update", layotto_call(layotto.update))
    app.router.add_post("/wasm/uninstall", layotto_call(layotto.uninstall))
    return app

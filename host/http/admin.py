"""The admin listener: actuator health (Layotto's INIT/UP/DOWN), function listings, and Layotto's
admin API (`POST /wasm/install`, `/wasm/update`, `/wasm/uninstall`: 200 with an empty body, or 500
with `{"error": ...}`). Everything but the health probes may require a bearer token.

With `serve --workers N`, every worker answers for itself on a private loopback admin port, and
worker 0's public admin port speaks for all of them: readiness is UP only when every worker is UP,
the listings carry a `workers` section, and a Layotto admin call is applied on every worker (500
with the combined reasons if any worker refused it).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Optional
from urllib.parse import quote

from aiohttp import web
from pydantic import ValidationError

from ..cluster import WorkerRole
from ..config import FunctionConfig
from ..runtime import DOWN, INIT, UP, Host
from ..specs import instance_count
from .errors import json_error
from .peers import PeerAnswer, Peers

log = logging.getLogger(__name__)

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

    ACTIONS = ("install", "update", "uninstall")

    def __init__(self, host: Host):
        self.host = host

    @staticmethod
    def parse(raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw)
        except ValueError:
            raise AdminError("request body must be a JSON object") from None
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
            raise AdminError("field 'name' (a non-empty string) is required")
        return body

    async def apply(self, action: str, body: dict[str, Any]) -> None:
        if action not in self.ACTIONS:
            raise AdminError(f"unknown admin action {action!r}")
        await getattr(self, action)(body)

    async def replay(self, entries: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Re-apply admin calls this process missed (a worker restarted by the supervisor)."""
        entries = list(entries)
        if entries:
            log.info("replaying %d admin call(s) made before this worker started", len(entries))
        for action, body in entries:
            try:
                await self.apply(action, body)
            except AdminError as error:
                log.warning("replaying /wasm/%s %s failed: %s", action, body.get("name"), error)

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

    async def install(self, body: dict[str, Any]) -> None:
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

    async def update(self, body: dict[str, Any]) -> None:
        count = body.get("instance_num")
        if not isinstance(count, int) or isinstance(count, bool):
            raise AdminError("field 'instance_num' (an integer) is required")
        record = self.host.find(body["name"])
        if record is None or record.version is None:
            raise AdminError(f"no function named {body['name']!r}")
        record.version.pool.resize(instance_count(count))  # as in Layotto: <= 0 is one per CPU
        # Remembered like install's settings, so a later reload of the file keeps the new size.
        earlier = record.override.model_dump(exclude_unset=True) if record.override else {}
        record.override = FunctionConfig.model_validate({**earlier, "instance_num": count})

    async def uninstall(self, body: dict[str, Any]) -> None:
        record = self.host.find(body["name"])
        if record is None:
            raise AdminError(f"no function named {body['name']!r}")
        await self.host.remove_path(record.path)


def _combined_status(statuses: Iterable[str]) -> str:
    statuses = list(statuses)
    if all(status == UP for status in statuses):
        return UP
    return DOWN if DOWN in statuses else INIT


def _unanswered(answer: PeerAnswer) -> dict[str, Any]:
    return {"index": answer.index, "pid": answer.pid, "status": DOWN if answer.registered else INIT,
            "error": answer.error_text()}


def create_admin_app(host: Host, *, worker: Optional[WorkerRole] = None,
                     peers: Optional[Peers] = None) -> web.Application:
    """The admin API of `host`; as worker 0's public admin (`peers` given), it speaks for all workers."""
    layotto = LayottoAdmin(host)

    # -- this process's own answers ----------------------------------------------------------------
    def local_readiness() -> tuple[str, dict]:
        return host.readiness()

    def local_functions() -> dict[str, Any]:
        listing: dict[str, Any] = {"functions": [d.describe() for d in host.deployments.values()],
                                   "failed": host.failures(), "module_cache": host.cache.stats(),
                                   "engine_backend": host.engine.backend}
        if worker is not None:
            status, _ = host.readiness()
            listing["worker"] = {"index": worker.index, "pid": os.getpid(), "status": status,
                                 "requests": sum(f.get("requests", 0) for f in listing["functions"])}
        return listing

    def local_versions(key: str) -> list[dict]:
        return [d.describe() for d in host.deployments.values()
                if (d.version is not None and key in (d.version.function_id, d.version.name))
                or d.path.stem == key]

    async def local_call(action: str, raw: bytes) -> Optional[str]:
        """Apply one Layotto admin call here; the refusal reason, or None."""
        try:
            body = layotto.parse(raw)
            await layotto.apply(action, body)
        except AdminError as error:
            return str(error)
        if peers is not None and worker is not None:
            worker.journal_append(action, body)  # a worker restarted later replays it
        return None

    # -- handlers ------------------------------------------------------------------------------------
    async def liveness(_: web.Request) -> web.Response:
        return web.json_response({"status": UP, "components": {}})

    async def readiness(_: web.Request) -> web.Response:
        status, details = local_readiness()
        if peers is not None and worker is not None:
            workers = [{"index": worker.index, "pid": os.getpid(), "status": status}]
            for answer in await peers.get("/actuator/health/readiness"):
                body = answer.body if isinstance(answer.body, dict) else {}
                if body.get("status") in (INIT, UP, DOWN):
                    entry = {"index": answer.index, "pid": answer.pid, "status": body["status"]}
                    if body["status"] != UP:
                        entry["details"] = body.get("details")
                    workers.append(entry)
                else:
                    workers.append(_unanswered(answer))
            status = _combined_status(w["status"] for w in workers)
            details = {**details, "workers": workers}
        return web.json_response({"status": status, "details": details}, status=200 if status == UP else 503)

    async def list_functions(_: web.Request) -> web.Response:
        listing = local_functions()
        if peers is not None:
            own = listing.pop("worker")
            workers = [{**own, "functions": listing["functions"], "failed": listing["failed"],
                        "module_cache": listing["module_cache"]}]
            for answer in await peers.get("/functions"):
                body = answer.body
                if answer.status == 200 and isinstance(body, dict) and isinstance(body.get("worker"), dict):
                    workers.append({**body["worker"], "functions": body.get("functions", []),
                                    "failed": body.get("failed", {}), "module_cache": body.get("module_cache")})
                else:
                    workers.append(_unanswered(answer))
            listing["workers"] = workers
        return web.json_response(listing)

    async def get_function(request: web.Request) -> web.Response:
        key = request.match_info["id"]
        versions = local_versions(key)
        if peers is None or worker is None:
            if not versions:
                return json_error(404, f"unknown function id {key!r}", function=key)
            return web.json_response({"id": key, "versions": versions})
        workers: list[dict[str, Any]] = [{"index": worker.index, "pid": os.getpid(), "versions": versions}]
        for answer in await peers.get(f"/functions/{quote(key, safe='')}"):
            body = answer.body if isinstance(answer.body, dict) else {}
            if answer.status == 200:
                workers.append({"index": answer.index, "pid": answer.pid, "versions": body.get("versions", [])})
            elif answer.status == 404:
                workers.append({"index": answer.index, "pid": answer.pid, "versions": []})
            else:
                workers.append(_unanswered(answer))
        if not any(w.get("versions") for w in workers):
            return json_error(404, f"unknown function id {key!r}", function=key)
        return web.json_response({"id": key, "versions": versions, "workers": workers})

    def layotto_call(action: str) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            raw = await request.read()
            if peers is None or worker is None:
                error = await local_call(action, raw)
                return web.Response(status=200) if error is None else web.json_response({"error": error}, status=500)
            error, answers = await asyncio.gather(local_call(action, raw), peers.post(request.path, raw))
            errors = [(worker.index, error)] if error is not None else []
            errors += [(a.index, a.error_text()) for a in answers if a.status != 200]
            if not errors:
                return web.Response(status=200)
            reasons = {reason for _, reason in errors}
            if len(errors) == worker.count and len(reasons) == 1:
                message = reasons.pop()  # every worker refused it for the same reason: say it once
            else:
                message = "; ".join(f"worker {index}: {reason}" for index, reason in sorted(errors))
            log.warning("/wasm/%s failed on %d of %d worker(s): %s", action, len(errors), worker.count, message)
            return web.json_response({"error": message}, status=500)

        return handle

    middlewares = [_token_guard(host.config.server.admin_token)] if host.config.server.admin_token else []
    app = web.Application(middlewares=middlewares)
    app.router.add_get("/actuator/health/liveness", liveness)
    app.router.add_get("/actuator/health/readiness", readiness)
    app.router.add_get("/functions", list_functions)
    app.router.add_get("/functions/{id}", get_function)
    for action in LayottoAdmin.ACTIONS:
        app.router.add_post(f"/wasm/{action}", layotto_call(action))
    if peers is not None:
        async def close_peers(_: web.Application) -> None:
            await peers.close()

        app.on_cleanup.append(close_peers)
    return app

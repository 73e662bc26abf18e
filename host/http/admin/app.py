"""The admin listener: actuator health (Layotto's INIT/UP/DOWN) and info, function listings, and
Layotto's admin API (host/http/admin/layotto.py: `POST /wasm/install`, `/wasm/update`,
`/wasm/uninstall`: 200 with an empty body, or 500 with `{"error": ...}`). Everything but the health
probes may require a bearer token.

With `serve --workers N`, every worker answers for itself on a private loopback admin port, and
worker 0's public admin port speaks for all of them: readiness is UP only when every worker is UP,
the listings carry a `workers` section, and a Layotto admin call is applied on every worker (500
with the combined reasons if any worker refused it).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import quote

from aiohttp import web

from host.app import App, Status
from host.http.admin.layotto import AdminError, LayottoAdmin
from host.http.admin.peers import PeerAnswer, Peers
from host.http.errors import json_error
from host.process.cluster import WorkerRole

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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


def _combined_status(statuses: Iterable[str]) -> str:
    statuses = list(statuses)
    if all(status == Status.UP for status in statuses):
        return Status.UP
    return Status.DOWN if Status.DOWN in statuses else Status.INIT


def _unanswered(answer: PeerAnswer) -> dict[str, Any]:
    return {"index": answer.index, "pid": answer.pid, "status": Status.DOWN if answer.registered else Status.INIT,
            "error": answer.error_text()}


def create_admin_app(app: App, *, worker: WorkerRole | None = None,
                     peers: Peers | None = None) -> web.Application:
    """The admin API of `app`; as worker 0's public admin (`peers` given), it speaks for all workers."""
    layotto = LayottoAdmin(app)

    # -- this process's own answers ----------------------------------------------------------------
    def local_readiness() -> tuple[str, dict]:
        return app.readiness()

    def local_functions() -> dict[str, Any]:
        listing: dict[str, Any] = {"functions": [d.describe() for d in app.deployments.records.values()],
                                   "failed": app.failures(), "module_cache": app.cache.stats(),
                                   "engine_backend": app.engine.backend}
        if worker is not None:
            status, _ = app.readiness()
            listing["worker"] = {"index": worker.index, "pid": os.getpid(), "status": status,
                                 "requests": sum(f.get("requests", 0) for f in listing["functions"])}
        return listing

    def local_versions(key: str) -> list[dict]:
        return [d.describe() for d in app.deployments.matching(key)]

    async def local_call(action: str, raw: bytes) -> str | None:
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
        return web.json_response({"status": Status.UP, "components": {}})

    async def readiness(_: web.Request) -> web.Response:
        status, details = local_readiness()
        if peers is not None and worker is not None:
            workers = [{"index": worker.index, "pid": os.getpid(), "status": status}]
            for answer in await peers.get("/actuator/health/readiness"):
                body = answer.body if isinstance(answer.body, dict) else {}
                if body.get("status") in (Status.INIT, Status.UP, Status.DOWN):
                    entry = {"index": answer.index, "pid": answer.pid, "status": body["status"]}
                    if body["status"] != Status.UP:
                        entry["details"] = body.get("details")
                    workers.append(entry)
                else:
                    workers.append(_unanswered(answer))
            status = _combined_status(str(w["status"]) for w in workers)
            details = {**details, "workers": workers}
        return web.json_response({"status": status, "details": details}, status=200 if status == Status.UP else 503)

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

    async def info(_: web.Request) -> web.Response:
        return web.json_response(app.info())

    token = app.config.server.admin_token
    web_app = web.Application(middlewares=[_token_guard(token)] if token else [])
    web_app.router.add_get("/actuator/health/liveness", liveness)
    web_app.router.add_get("/actuator/health/readiness", readiness)
    web_app.router.add_get("/actuator/info", info)
    web_app.router.add_get("/functions", list_functions)
    web_app.router.add_get("/functions/{id}", get_function)
    for action in LayottoAdmin.ACTIONS:
        web_app.router.add_post(f"/wasm/{action}", layotto_call(action))
    if peers is not None:
        async def close_peers(_: web.Application) -> None:
            await peers.close()

        web_app.on_cleanup.append(close_peers)
    return web_app

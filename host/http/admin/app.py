"""The admin listener: actuator health (Layotto's INIT/UP/DOWN) and info, function listings, and
Layotto's admin API (host/http/admin/layotto.py: `POST /wasm/install`, `/wasm/update`,
`/wasm/uninstall`: 200 with an empty body, or 500 with `{"error": ...}`). Everything but the health
probes may require a bearer token.

With `serve --workers N`, every worker answers for itself on a private loopback admin port, and
worker 0's public admin port speaks for all of them: readiness is UP only when every worker is UP,
the listings carry a `workers` section, and a Layotto admin call is applied on every worker (500
with the combined reasons if any worker refused it).

It runs on the lean server of host/http/protocol.py with a tiny router (host/http/router.py), not aiohttp.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from host.app import App, Status
from host.functions.deployments import Outcome
from host.functions.sources import watched_folders
from host.http.admin.layotto import AdminError, LayottoAdmin
from host.http.admin.peers import PeerAnswer, Peers
from host.http.protocol import Response, error_response
from host.http.router import Guard, RoutedListener, RoutedRequest, Router, json_response
from host.logs import format_cursor, lines_after, parse_cursor
from host.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from host.metrics.endpoint import scrape
from host.process.cluster import WorkerRole

log = logging.getLogger(__name__)

Handler = Callable[[RoutedRequest], Awaitable[Response]]
ADMIN_SHUTDOWN_S = 1.0  # an admin request still running when the host has stopped is cut after this
SETTINGS_HEADER = "X-Wasm-Faas-Settings"  # base64 of a settings file (name.toml) to write beside an upload
_UPLOAD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # becomes <functions_dir>/<name>.wasm


def _token_guard(token: str) -> Guard:
    def guard(request: RoutedRequest) -> Response | None:
        if request.path.startswith("/actuator/"):
            return None
        offered = request.header("Authorization") or ""
        if not hmac.compare_digest(offered.encode(), f"Bearer {token}".encode()):
            return error_response(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
        return None

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
                     peers: Peers | None = None) -> RoutedListener:
    """The admin API of `app`; as worker 0's public admin (`peers` given), it speaks for all workers."""
    layotto = LayottoAdmin(app)

    # -- this process's own answers ----------------------------------------------------------------
    def local_readiness() -> tuple[str, dict]:
        return app.readiness()

    def local_functions() -> dict[str, Any]:
        listing: dict[str, Any] = {"functions": [app.deployments.describe(d) for d in app.deployments.records.values()],
                                   "failed": app.failures(), "module_cache": app.cache.stats(),
                                   "engine_backend": app.engine.backend,
                                   "limits": app.engine.limits()}  # issue 16: the memory-map budget
        if worker is not None:
            status, _ = app.readiness()
            listing["worker"] = {"index": worker.index, "pid": os.getpid(), "status": status,
                                 "requests": sum(f.get("requests", 0) for f in listing["functions"])}
        return listing

    def local_versions(key: str) -> list[dict]:
        return [app.deployments.describe(d) for d in app.deployments.matching(key)]

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
    async def liveness(_: RoutedRequest) -> Response:
        return json_response({"status": Status.UP, "components": {}})

    async def readiness(_: RoutedRequest) -> Response:
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
        return json_response({"status": status, "details": details}, status=200 if status == Status.UP else 503)

    async def list_functions(_: RoutedRequest) -> Response:
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
        return json_response(listing)

    async def get_function(request: RoutedRequest) -> Response:
        key = request.match_info["id"]
        versions = local_versions(key)
        if peers is None or worker is None:
            if not versions:
                return error_response(404, f"unknown function id {key!r}", function=key)
            return json_response({"id": key, "versions": versions})
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
            return error_response(404, f"unknown function id {key!r}", function=key)
        return json_response({"id": key, "versions": versions, "workers": workers})

    async def apply_everywhere(action: str, raw: bytes) -> str | None:
        """A Layotto admin call applied here and, as worker 0, on every worker; why it failed, or None."""
        if peers is None or worker is None:
            return await local_call(action, raw)
        error, answers = await asyncio.gather(local_call(action, raw), peers.post(f"/wasm/{action}", raw))
        errors = [(worker.index, error)] if error is not None else []
        errors += [(a.index, a.error_text()) for a in answers if a.status != 200]
        if not errors:
            return None
        reasons = {reason for _, reason in errors}
        if len(errors) == worker.count and len(reasons) == 1:
            message = reasons.pop()  # every worker refused it for the same reason: say it once
        else:
            message = "; ".join(f"worker {index}: {reason}" for index, reason in sorted(errors))
        log.warning("/wasm/%s failed on %d of %d worker(s): %s", action, len(errors), worker.count, message)
        return message

    def layotto_call(action: str) -> Handler:
        async def handle(request: RoutedRequest) -> Response:
            raw = request.body
            try:  # an instance_num over server.max_instances_per_function: 400 before any worker is asked
                layotto.check_instance_num(layotto.parse(raw))
            except AdminError as refused:
                if refused.status != 500:
                    return json_response({"error": str(refused)}, status=refused.status)
            error = await apply_everywhere(action, raw)
            return Response(200) if error is None else json_response({"error": error}, status=500)

        return handle

    # -- issue 14: metrics, module upload and removal (wasm-faas deploy / rm), function logs ----------
    async def metrics(_: RoutedRequest) -> Response:
        body = await scrape(app.metrics, worker.index if worker is not None else None,
                            peers.get if peers is not None else None)
        return Response(200, body, content_type=METRICS_CONTENT_TYPE)

    async def upload(request: RoutedRequest) -> Response:
        """`PUT /functions/{id}` with the module's bytes: written into the first functions folder
        (atomically) and installed on every worker. Only with an admin token configured."""
        name = request.match_info["id"]
        if not token:
            return error_response(403, "uploads are disabled: set server.admin_token (and pass it as a bearer token)")
        if not _UPLOAD_NAME.fullmatch(name):
            return error_response(400, f"function name {name!r}: use letters, digits, '_', '-' and '.'")
        folders = watched_folders(app.config)
        if not folders:
            return error_response(409, "this host has no functions_dirs to upload into")
        wasm = request.body
        if wasm[:4] != b"\0asm":
            return error_response(400, "the body is not a WebAssembly module (bad magic number)")
        path = folders[0] / f"{name}.wasm"
        existed = path.exists()
        settings = request.header(SETTINGS_HEADER)
        if settings is not None:  # `name.toml` beside the module (wasm-faas deploy sends the one beside FILE)
            try:
                text = base64.b64decode(settings, validate=True)
            except ValueError:
                return error_response(400, f"{SETTINGS_HEADER}: expected base64")
            await asyncio.to_thread(_write_module, path.with_suffix(".toml"), text)
        started = time.time()
        await asyncio.to_thread(_write_module, path, wasm)
        if app.config.server.watch:
            # Every worker's watcher deploys the new file (installing it as well would load it twice);
            # the answer is this worker's outcome.
            error = await _watched_outcome(app, path, started)
        else:
            error = await apply_everywhere("install", json.dumps({"name": name,
                                                                  "vm_config": {"path": str(path)}}).encode())
        if error is not None:
            return error_response(422, error, function=name)
        return json_response({"id": name, "path": str(path), "versions": local_versions(name)},
                                 status=200 if existed else 201)

    async def remove(request: RoutedRequest) -> Response:
        """`DELETE /functions/{id}`: uninstalled on every worker, and its module file deleted when it
        lies in a functions folder (else a restart would deploy it again); `?keep_file=1` keeps it."""
        key = request.match_info["id"]
        records = app.deployments.matching(key)
        if not records:
            return error_response(404, f"unknown function id {key!r}", function=key)
        paths = [record.path for record in records]
        for _ in records:
            error = await apply_everywhere("uninstall", json.dumps({"name": key}).encode())
            if error is not None:
                return error_response(500, error, function=key)
        deleted = []
        if request.query.get("keep_file", "") not in ("1", "true"):
            folders = watched_folders(app.config)
            for path in paths:
                if any(folder in path.parents for folder in folders) and path.exists():
                    path.unlink()
                    deleted.append(str(path))
        return json_response({"id": key, "removed": [str(p) for p in paths], "deleted": deleted})

    async def function_logs(request: RoutedRequest) -> Response:
        """`GET /functions/{id}/logs?after=CURSOR&wait=S`: the function's recent log lines (guest
        logs and the host's lines about its requests), oldest first; a long poll with `wait`."""
        key = request.match_info["id"]
        try:
            wait_s = float(request.query.get("wait", "0"))
        except ValueError:
            return error_response(400, "wait: expected seconds")
        cursor = parse_cursor(request.query.get("after", ""))
        deployed = bool(app.deployments.matching(key))
        if peers is None or worker is None:
            own = worker.index if worker is not None else -1
            lines, last = await lines_after(key, cursor.get(own, cursor.get(-1, 0)), wait_s)
            return json_response({"id": key, "deployed": deployed, "cursor": str(last),
                                      "lines": [line.as_dict() for line in lines]})
        # Worker 0: every worker's lines. Peers are asked without waiting (their query timeout is
        # short), again and again until some line comes or the wait is over.
        deadline = asyncio.get_running_loop().time() + min(max(wait_s, 0.0), 25.0)
        while True:
            local, last = await lines_after(key, cursor.get(worker.index, 0))
            merged = [{**line.as_dict(), "worker": worker.index} for line in local]
            cursor[worker.index] = last
            answers = await peers.get(f"/functions/{quote(key, safe='')}/logs?after={format_cursor(cursor)}")
            for answer in answers:
                body = answer.body if answer.status == 200 and isinstance(answer.body, dict) else {}
                merged += [{**line, "worker": answer.index} for line in body.get("lines", [])]
                deployed = deployed or bool(body.get("deployed"))
                if str(body.get("cursor", "")).isdigit():
                    cursor[answer.index] = int(body["cursor"])
            if merged or asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.25)
        merged.sort(key=lambda line: line["time"])
        return json_response({"id": key, "deployed": deployed, "cursor": format_cursor(cursor), "lines": merged})

    async def info(_: RoutedRequest) -> Response:
        return json_response(app.info())

    token = app.config.server.admin_token
    router = Router(_token_guard(token) if token else None)
    router.add("GET", "/actuator/health/liveness", liveness)
    router.add("GET", "/actuator/health/readiness", readiness)
    router.add("GET", "/actuator/info", info)
    router.add("GET", "/functions", list_functions)
    router.add("GET", "/functions/{id}", get_function)
    router.add("GET", "/metrics", metrics)
    router.add("PUT", "/functions/{id}", upload)
    router.add("DELETE", "/functions/{id}", remove)
    router.add("GET", "/functions/{id}/logs", function_logs)
    for action in LayottoAdmin.ACTIONS:
        router.add("POST", f"/wasm/{action}", layotto_call(action))
    # Module uploads are bounded by server.max_body_bytes; a request still running at shutdown is cut
    # after ADMIN_SHUTDOWN_S.
    listener = RoutedListener(router, app.config.server.max_body_bytes, ADMIN_SHUTDOWN_S)
    if peers is not None:
        listener.on_close.append(peers.close)
    return listener


async def _watched_outcome(app: App, path: Path, since: float, timeout_s: float = 120.0) -> str | None:
    """Wait for the functions watcher to (re)deploy `path` after `since`: why it was rejected, or None."""
    deadline = time.monotonic() + timeout_s
    key = path.resolve()
    while time.monotonic() < deadline:
        record = app.deployments.records.get(key)
        if record is not None and record.last_change >= since and record.last_outcome in (Outcome.DEPLOYED,
                                                                                         Outcome.REJECTED):
            return None if record.last_outcome == Outcome.DEPLOYED else (record.last_error or "rejected")
        await asyncio.sleep(0.02)
    return f"the watcher did not deploy {path.name} within {timeout_s:.0f}s"


def _write_module(path: Path, wasm: bytes) -> None:
    """Replace `path` atomically: a watcher (or a reader) never sees half a file. The temporary
    name starts with a dot, which the functions watcher ignores."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.stem}.", suffix=".partial",
                                     delete=False) as tmp:
        tmp.write(wasm)
    os.replace(tmp.name, path)

"""The function listener: header `id` picks the function, the request runs on one of its instances."""

from __future__ import annotations

import asyncio

from aiohttp import web
from multidict import CIMultiDict

from abi import GuestTrap, HttpRequest

from ..execution import run_request
from ..pool import PoolClosed, PoolTimeout
from ..runtime import Host
from .errors import json_error


def create_function_app(host: Host) -> web.Application:
    router = host.router
    executor = host.executor
    acquire_timeout = host.config.server.acquire_timeout_ms / 1000

    async def handle(request: web.Request) -> web.StreamResponse:
        function_id = request.headers.get("id")
        if not function_id:
            return json_error(400, "missing 'id' header: it names the function to call")
        version = router.pick(function_id)
        if version is None:
            return json_error(404, f"unknown function id {function_id!r}", function=function_id)
        body = await request.read() if request.body_exists else b""
        peer = request.transport.get_extra_info("peername") if request.transport else None
        guest_request = HttpRequest.build(
            request.method, request.path_qs, list(request.headers.items()), body,
            authority=request.host, scheme=request.scheme,
            source_address=peer[0] if peer else "", source_port=peer[1] if peer else 0)
        pool = version.pool
        vm = pool.try_acquire()
        if vm is None:
            try:
                vm = await pool.acquire(acquire_timeout)
            except PoolTimeout as error:
                return json_error(503, str(error), function=function_id, headers={"Retry-After": "1"})
            except PoolClosed:
                return json_error(503, "function is being replaced, retry", function=function_id,
                                  headers={"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        try:
            response = await loop.run_in_executor(executor, run_request, version, vm, guest_request)
        except GuestTrap as trap:
            if trap.interrupted:
                return json_error(504, f"function {function_id!r} exceeded its {version.timeout_s:g}s deadline",
                                  function=function_id)
            return json_error(500, f"function {function_id!r} trapped: {trap}", function=function_id)
        except Exception as error:  # noqa: BLE001 - a host bug must not take the listener down
            return json_error(500, f"function {function_id!r} failed in the host: {error}", function=function_id)
        return web.Response(status=response.status, body=response.body, headers=CIMultiDict(response.headers))

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app

"""The function listener: header `id` picks the function, the request runs on one of its instances.

It is aiohttp's low-level `web.Server` with one handler, not an `Application`: every request
goes to the same place, so URL routing, match info and middleware would be pure per-request cost.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Tuple

from aiohttp import web
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDict

from abi import GuestTrap, HttpRequest, HttpResponse
from abi.vm import ProxyWasmVM

from ..execution import InlineOverrun, release_filters, run_queued, run_request
from ..function import FunctionVersion
from ..pool import PoolClosed, PoolDown, PoolTimeout
from ..runtime import Host
from .errors import json_error

_RETRIES_ACROSS_RELOADS = 3


class _Unavailable(Exception):
    def __init__(self, response: web.Response):
        self.response = response


def _busy(version: FunctionVersion, error: Exception) -> web.Response:
    """503 for a full queue, a wait that timed out, or a pool whose instances cannot start."""
    retry_after = "5" if isinstance(error, PoolDown) else "1"
    return json_error(503, str(error), function=version.function_id, headers={"Retry-After": retry_after})


def _replacing(version: FunctionVersion) -> web.Response:
    return json_error(503, "function is being replaced, retry", function=version.function_id,
                      headers={"Retry-After": "1"})


def create_function_server(host: Host) -> web.Server:
    """The listener's request handler; needs the running event loop (aiohttp's Server does)."""
    router = host.router
    threads = host.threads
    acquire_timeout = host.config.server.acquire_timeout_ms / 1000
    max_body = host.config.server.max_body_bytes
    request_timeout = host.config.server.request_timeout_ms / 1000

    async def acquire(version: FunctionVersion) -> Tuple[FunctionVersion, ProxyWasmVM]:
        """An instance of the function's current version; follows a reload that retired `version`."""
        for _ in range(_RETRIES_ACROSS_RELOADS):
            try:
                return version, await version.pool.acquire(acquire_timeout)
            except (PoolTimeout, PoolDown) as error:
                raise _Unavailable(_busy(version, error)) from None
            except PoolClosed:
                version = current_version(version)
        raise _Unavailable(_replacing(version))

    def current_version(version: FunctionVersion) -> FunctionVersion:
        """After PoolClosed: the version a reload put in place, or 404 when the function is gone."""
        current = router.pick(version.function_id)
        if current is None:
            raise _Unavailable(json_error(404, f"function {version.function_id!r} was removed",
                                          function=version.function_id))
        return current

    async def acquire_filters(version: FunctionVersion, vm: ProxyWasmVM) -> list[ProxyWasmVM]:
        """One instance of each filter in front of the function (none for most functions)."""
        filters: list[ProxyWasmVM] = []
        try:
            for pool in version.filter_pools:
                filters.append(await pool.acquire(acquire_timeout))
        except (PoolTimeout, PoolClosed, PoolDown) as error:
            release_filters(version, filters)
            version.pool.release(vm)
            raise _Unavailable(json_error(503, f"filter unavailable: {error}", function=version.function_id,
                                          headers={"Retry-After": "1"})) from None
        except BaseException:
            release_filters(version, filters)
            version.pool.release(vm)
            raise
        return filters

    async def execute(version: FunctionVersion, guest_request: HttpRequest) -> HttpResponse:
        if version.policy.inline:
            vm = version.pool.try_acquire()  # the common case, without a coroutine in between
            if vm is None:
                version, vm = await acquire(version)
            filters = await acquire_filters(version, vm) if version.filter_pools else []
            try:
                return run_request(version, vm, guest_request, True, filters)
            except InlineOverrun:
                pass  # replayed below, in a guest thread
        try:
            async with asyncio.timeout(request_timeout):
                if version.filter_pools:
                    version, vm = await acquire(version)
                    filters = await acquire_filters(version, vm)
                    return await threads.run(run_request, version, vm, guest_request, False, filters)
                return await queue_for_instance(version, guest_request)
        except TimeoutError:
            # The guest, if it is running, is still bounded by its own deadline; the client is not kept.
            raise _Unavailable(json_error(504, f"request to {version.function_id!r} took longer than "
                                               f"{request_timeout:g}s", function=version.function_id)) from None

    async def queue_for_instance(version: FunctionVersion, guest_request: HttpRequest) -> HttpResponse:
        """The guest-thread path: queue the request on the pool; a freed instance runs it in place."""
        for _ in range(_RETRIES_ACROSS_RELOADS):
            try:
                return await version.pool.submit(functools.partial(run_queued, version, guest_request),
                                                 acquire_timeout)
            except PoolClosed:
                version = current_version(version)
            except (PoolTimeout, PoolDown) as error:
                raise _Unavailable(_busy(version, error)) from None
        raise _Unavailable(_replacing(version))

    async def handle(request: BaseRequest) -> web.StreamResponse:
        function_id = request.headers.get("id")
        if not function_id:
            return json_error(400, "missing 'id' header: it names the function to call")
        version = router.pick(function_id)
        if version is None:
            return json_error(404, f"unknown function id {function_id!r}", function=function_id)
        try:
            body = await request.read() if request.body_exists else b""
        except web.HTTPRequestEntityTooLarge:
            return json_error(413, f"request body larger than {max_body} bytes", function=function_id)
        headers = request.headers
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        # raw_path and the Host header: aiohttp's path_qs/host build URL objects, a cost per request.
        guest_request = HttpRequest.build(
            request.method, request.raw_path, list(headers.items()), body,
            authority=headers.get("Host", ""), scheme="http",  # this listener serves plain HTTP
            source_address=peer[0] if peer else "", source_port=peer[1] if peer else 0)
        try:
            response = await execute(version, guest_request)
        except _Unavailable as unavailable:
            return unavailable.response
        except GuestTrap as trap:
            if trap.out_of_fuel:
                return json_error(504, f"function {function_id!r} used up its fuel budget", function=function_id)
            if trap.interrupted:
                return json_error(504, f"function {function_id!r} exceeded its {version.timeout_s:g}s deadline",
                                  function=function_id)
            return json_error(500, f"function {function_id!r} trapped: {trap}", function=function_id)
        except Exception as error:  # noqa: BLE001 - a host bug must not take the listener down
            return json_error(500, f"function {function_id!r} failed in the host: {error}", function=function_id)
        return web.Response(status=response.status, body=response.body,
                            headers=CIMultiDict(response.headers) if response.headers else None)

    loop = asyncio.get_running_loop()

    def make_request(message, payload, protocol, writer, task) -> BaseRequest:  # type: ignore[no-untyped-def]
        return BaseRequest(message, payload, protocol, writer, task, loop, client_max_size=max_body)

    server = host.config.server
    return web.Server(handle, request_factory=make_request, access_log=None,
                      max_line_size=server.max_header_bytes, max_field_size=server.max_header_bytes,
                      max_headers=server.max_headers)

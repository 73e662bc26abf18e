"""The function listener: header `id` picks the function, the request runs on one of its instances.

It runs on the lean HTTP/1.1 server of `protocol.py`. A request to a function that runs inline
(see host/execution.py) with an idle instance is answered synchronously, without a task or a
coroutine; everything else (waiting for an instance, guest threads, filters) is awaited.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Awaitable, Tuple, Union

from abi import GuestTrap, HttpRequest, HttpResponse
from abi.vm import ProxyWasmVM

from ..execution import InlineOverrun, release_filters, run_queued, run_request
from ..function import FunctionVersion
from ..pool import PoolClosed, PoolDown, PoolTimeout
from ..runtime import Host
from .protocol import HttpServer, Limits, Request, Response, error_response

_RETRIES_ACROSS_RELOADS = 3


class _Unavailable(Exception):
    def __init__(self, response: Response):
        self.response = response


def _busy(version: FunctionVersion, error: Exception) -> Response:
    """503 for a full queue, a wait that timed out, or a pool whose instances cannot start."""
    retry_after = "5" if isinstance(error, PoolDown) else "1"
    return error_response(503, str(error), function=version.function_id, headers={"Retry-After": retry_after})


def _replacing(version: FunctionVersion) -> Response:
    return error_response(503, "function is being replaced, retry", function=version.function_id,
                          headers={"Retry-After": "1"})


def _answer(response: HttpResponse) -> Response:
    return Response(response.status, response.body, response.headers)


def _failure(version: FunctionVersion, error: Exception) -> Response:
    """The answer to a request whose guest trapped, ran out of time or fuel, or hit a host bug."""
    function_id = version.function_id
    if isinstance(error, GuestTrap):
        if error.out_of_fuel:
            return error_response(504, f"function {function_id!r} used up its fuel budget", function=function_id)
        if error.interrupted:
            return error_response(504, f"function {function_id!r} exceeded its {version.timeout_s:g}s deadline",
                                  function=function_id)
        return error_response(500, f"function {function_id!r} trapped: {error}", function=function_id)
    return error_response(500, f"function {function_id!r} failed in the host: {error}", function=function_id)


def create_function_server(host: Host) -> HttpServer:
    router = host.router
    threads = host.threads
    server_config = host.config.server
    acquire_timeout = server_config.acquire_timeout_ms / 1000
    request_timeout = server_config.request_timeout_ms / 1000

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
            raise _Unavailable(error_response(404, f"function {version.function_id!r} was removed",
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
            raise _Unavailable(error_response(503, f"filter unavailable: {error}", function=version.function_id,
                                              headers={"Retry-After": "1"})) from None
        except BaseException:
            release_filters(version, filters)
            version.pool.release(vm)
            raise
        return filters

    async def execute(version: FunctionVersion, guest_request: HttpRequest, try_inline: bool) -> HttpResponse:
        if try_inline and version.policy.inline:
            vm = version.pool.try_acquire()
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
            raise _Unavailable(error_response(504, f"request to {version.function_id!r} took longer than "
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

    async def handle_later(version: FunctionVersion, guest_request: HttpRequest, try_inline: bool) -> Response:
        try:
            return _answer(await execute(version, guest_request, try_inline))
        except _Unavailable as unavailable:
            return unavailable.response
        except Exception as error:  # noqa: BLE001 - a host bug must not take the listener down
            return _failure(version, error)

    def handle(request: Request) -> Union[Response, Awaitable[Response]]:
        function_id = request.header("id")
        if not function_id:
            return error_response(400, "missing 'id' header: it names the function to call")
        version = router.pick(function_id)
        if version is None:
            return error_response(404, f"unknown function id {function_id!r}", function=function_id)
        peer = request.peer
        guest_request = HttpRequest.build(
            request.method, request.target, request.headers, request.body,
            authority=request.header("host") or "", scheme="http",  # this listener serves plain HTTP
            source_address=peer[0] if peer else "", source_port=peer[1] if peer else 0, lowered=True)
        # The common case, answered at once: an inline function, an idle instance, no filters.
        if version.policy.inline and not version.filter_pools:
            vm = version.pool.try_acquire()
            if vm is not None:
                try:
                    return _answer(run_request(version, vm, guest_request, True))
                except InlineOverrun:
                    return handle_later(version, guest_request, False)  # replayed in a guest thread
                except Exception as error:  # noqa: BLE001
                    return _failure(version, error)
        return handle_later(version, guest_request, True)

    return HttpServer(handle, Limits(max_target=server_config.max_header_bytes,
                                     max_field=server_config.max_header_bytes,
                                     max_headers=server_config.max_headers,
                                     max_body=server_config.max_body_bytes))

"""`proxy_invoke_service` in-process: the target function runs in the caller's thread.

Layotto sends an HTTP request to its own listener (header `id`, path = method, body = param,
3 s timeout, only 200 succeeds); here the same request is dispatched directly to the target's pool.
A call cycle fails at once instead of waiting, and the depth of nested calls is bounded.
"""

from __future__ import annotations

from abi import GuestTrap, HttpRequest
from abi.services import ServiceError

from .execution import CHAIN, release_filters, run_request
from .pool import PoolClosed, PoolDown, PoolTimeout, PoolWouldDeadlock
from .router import Router


class InProcessInvoker:
    def __init__(self, router: Router, timeout_s: float, max_depth: int):
        self.router = router
        self.timeout_s = timeout_s
        self.max_depth = max_depth

    def invoke(self, function_id: str, method: str, param: bytes) -> bytes:
        if len(CHAIN.held) >= self.max_depth:
            raise ServiceError(f"invoke depth limit {self.max_depth} reached calling {function_id!r}")
        version = self.router.pick(function_id)
        if version is None:
            raise ServiceError(f"unknown function id {function_id!r}")
        filters: list = []
        try:
            vm = version.pool.acquire_blocking(self.timeout_s, held=CHAIN.held)
            try:
                for pool in version.filter_pools:
                    filters.append(pool.acquire_blocking(self.timeout_s, held=CHAIN.held))
            except BaseException:
                release_filters(version, filters)
                version.pool.release(vm)
                raise
        except (PoolTimeout, PoolWouldDeadlock, PoolClosed, PoolDown) as error:
            raise ServiceError(str(error)) from None
        path = method if method.startswith("/") else "/" + method
        request = HttpRequest.build("GET", path, [("id", function_id)], param, authority="localhost")
        try:
            response = run_request(version, vm, request, filters=filters)
        except GuestTrap as trap:
            raise ServiceError(f"function {function_id!r} failed: {trap}") from None
        if not 200 <= response.status < 300:
            raise ServiceError(f"function {function_id!r} answered HTTP {response.status}")
        return response.body

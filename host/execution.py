"""Running one request on one instance, in a guest thread: shared by the listener and the invoker.

A thread-local call chain records the instances this thread holds, so a nested
`proxy_invoke_service` can tell a call cycle (which would wait forever) from a busy pool.
"""

from __future__ import annotations

import logging
import threading

from abi import GuestTrap, HttpRequest, HttpResponse
from abi.vm import ProxyWasmVM

from .function import FunctionVersion

log = logging.getLogger(__name__)


class _CallChain(threading.local):
    def __init__(self) -> None:
        self.held: list[int] = []


CHAIN = _CallChain()


def run_request(version: FunctionVersion, vm: ProxyWasmVM, request: HttpRequest) -> HttpResponse:
    """Run `request` on `vm` (already acquired); always gives the instance back to its pool.

    Raises GuestTrap when the guest trapped or ran past its deadline; the instance is then
    discarded and replaced by the pool.
    """
    held = CHAIN.held
    held.append(id(vm))
    try:
        response = vm.handle(request, version.timeout_s)
    except GuestTrap as trap:
        version.stats.record(False)
        kind = "exceeded its deadline" if trap.interrupted else "trapped"
        log.warning("function %s %s: %s", version.function_id, kind, trap)
        raise
    except Exception:
        version.stats.record(False)
        log.exception("function %s: host error while running a request", version.function_id)
        raise
    finally:
        held.pop()
        version.pool.release(vm)
    version.stats.record(response.status < 500)
    return response

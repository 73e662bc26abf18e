"""The lock API (Layotto's TryLock/Unlock, Dapr's TryLockAlpha1/UnlockAlpha1: wire-identical) over
the host's lock stores. Checks as Layotto and Dapr: an empty resource id or owner, or an expiry <= 0
seconds, is InvalidArgument; a held lock is `success = false`, not an error; a backend failure is
Internal. Calls block: run them off the loop.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from host.api._components import LOCK, mapped, named
from host.api.observed import component_call
from host.components.catalog import Components
from host.components.lock.base import check_lock_request
from host.lazy import lazy_module

if TYPE_CHECKING:
    from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2 as pb
else:  # protobuf and the generated messages (~10-20 ms to import) at the first runtime API call (issue 16)
    pb = lazy_module("host.grpc.proto.spec.proto.runtime.v1.runtime_pb2")


@functools.cache
def _statuses() -> frozenset[int]:
    """UnlockResponse.Status values (read once the messages are imported)."""
    return frozenset(pb.UnlockResponse.Status.values())


class LockApi:
    def __init__(self, components: Components):
        self.components = components

    def _store(self, name: str) -> Any:
        return named(self.components, LOCK, name)

    @component_call("lock")
    def try_lock(self, request: pb.TryLockRequest) -> pb.TryLockResponse:
        store = self._store(request.store_name)
        with mapped(f"trying lock {request.resource_id!r} in lock store {request.store_name!r}", "ERR_TRY_LOCK"):
            check_lock_request(request.resource_id, request.lock_owner, request.expire)
            return pb.TryLockResponse(success=bool(store.try_lock(request.resource_id, request.lock_owner,
                                                                  request.expire)))

    @component_call("lock")
    def unlock(self, request: pb.UnlockRequest) -> pb.UnlockResponse:
        store = self._store(request.store_name)
        with mapped(f"unlocking {request.resource_id!r} in lock store {request.store_name!r}", "ERR_UNLOCK"):
            check_lock_request(request.resource_id, request.lock_owner)
            status = int(store.unlock(request.resource_id, request.lock_owner))
        if status not in _statuses():
            status = pb.UnlockResponse.INTERNAL_ERROR
        return pb.UnlockResponse(status=status)  # type: ignore[arg-type]  # checked against the enum above

"""The runtime API for guests as foreign functions: `proxy_call_foreign_function("runtime.v1.<Method>",
serialized request)` answers the serialized response of the same call over gRPC (abi/IMPORTS.md,
"The runtime API as foreign functions"). This is the `ForeignRuntime` the ABI asks for
(abi/services/runtime.py); it runs in the guest's thread, so it calls the API directly (blocking).

Statuses, as the ABI's errors: an unknown method, an unknown store / pubsub / target, or one the
function's allow-list refuses (answered alike, so a function cannot probe what exists) is UnknownName
(NotFound); a request that does not parse or has bad arguments is BadRequest (BadArgument); an ETag
mismatch is Conflict (CasMismatch); any other failure is ServiceError (InternalFailure).

Runtime-call metrics: built over the API's api="function" view, each call is counted as the
functions' other runtime calls are (capability, component, outcome; a refused or unknown name as
component "" with outcome unknown_component).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any

from abi.services import BadRequest, Conflict, ServiceError, UnknownName
from host.api import RuntimeApi
from host.api.errors import ApiError, Code
from host.components.catalog import Components
from host.lazy import lazy_module

if TYPE_CHECKING:
    from google.protobuf import message as protobuf_message
    from google.protobuf.message import Message

    from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2 as pb
else:  # protobuf and the generated messages (~10-20 ms to import) at the first runtime API call (issue 16)
    pb = lazy_module("host.grpc.proto.spec.proto.runtime.v1.runtime_pb2")
    protobuf_message = lazy_module("google.protobuf.message")

Permitted = Callable[[str, str], bool]  # (allow-list setting, name) -> allowed


@dataclass(frozen=True)
class _Method:
    request: type[Message]
    capability: str  # whose component the request names ("" for InvokeService: a function id)
    allow_list: str  # the function setting that applies to that name
    target: Callable[[Any], str]  # the name in the request
    call: Callable[[RuntimeApi, Any], Message | None]


@functools.cache
def methods() -> dict[str, _Method]:
    """The runtime API a function may call, by method name (built at the first call)."""
    store: Callable[[Any], str] = lambda request: request.store_name  # noqa: E731 - a table of one-liners
    state, config = "allowed_state_stores", "allowed_configuration_stores"
    return {
        "GetState": _Method(pb.GetStateRequest, "state", state, store, lambda api, r: api.state.get(r)),
        "GetBulkState": _Method(pb.GetBulkStateRequest, "state", state, store, lambda api, r: api.state.get_bulk(r)),
        "SaveState": _Method(pb.SaveStateRequest, "state", state, store, lambda api, r: api.state.save(r)),
        "DeleteState": _Method(pb.DeleteStateRequest, "state", state, store, lambda api, r: api.state.delete(r)),
        "DeleteBulkState": _Method(pb.DeleteBulkStateRequest, "state", state, store,
                                   lambda api, r: api.state.delete_bulk(r)),
        "ExecuteStateTransaction": _Method(pb.ExecuteStateTransactionRequest, "state", state,
                                           lambda request: request.storeName, lambda api, r: api.state.transact(r)),
        "PublishEvent": _Method(pb.PublishEventRequest, "pubsub", "allowed_pubsubs",
                                lambda request: request.pubsub_name, lambda api, r: api.pubsub.publish(r)),
        "TryLock": _Method(pb.TryLockRequest, "lock", "allowed_lock_stores", store,
                           lambda api, r: api.lock.try_lock(r)),
        "Unlock": _Method(pb.UnlockRequest, "lock", "allowed_lock_stores", store, lambda api, r: api.lock.unlock(r)),
        "GetNextId": _Method(pb.GetNextIdRequest, "sequencer", "allowed_sequencers", store,
                             lambda api, r: api.sequencer.next_id(r)),
        "GetConfiguration": _Method(pb.GetConfigurationRequest, "configuration", config, store,
                                    lambda api, r: api.configuration.get(r)),
        "SaveConfiguration": _Method(pb.SaveConfigurationRequest, "configuration", config, store,
                                     lambda api, r: api.configuration.save(r)),
        "DeleteConfiguration": _Method(pb.DeleteConfigurationRequest, "configuration", config, store,
                                       lambda api, r: api.configuration.delete(r)),
        "InvokeService": _Method(pb.InvokeServiceRequest, "", "allowed_invoke_targets", lambda request: request.id,
                                 lambda api, r: api.invoke.invoke_blocking(r)),
    }



def service_error(error: ApiError) -> ServiceError:
    if error.code in (Code.NOT_FOUND, Code.FAILED_PRECONDITION):
        return UnknownName(error.message)
    if error.code == Code.INVALID_ARGUMENT:
        return BadRequest(error.message)
    if error.code == Code.ABORTED:
        return Conflict(error.message)
    return ServiceError(error.message)


class ForeignRuntimeApi:
    def __init__(self, api: RuntimeApi, components: Components):
        self.api = api
        self.components = components

    def call(self, method: str, request: bytes, permitted: Permitted | None = None) -> bytes:
        known = methods()
        spec = known.get(method)
        if spec is None:
            raise UnknownName(f"the runtime API has no method {method!r} for functions "
                              f"(known: {', '.join(sorted(known))})")
        try:
            message = spec.request.FromString(request)
        except protobuf_message.DecodeError as error:
            raise BadRequest(f"runtime.v1.{method}: the request is not a serialized "
                             f"{spec.request.DESCRIPTOR.full_name}: {error}") from None
        target = spec.target(message)
        capability, observer = spec.capability or "invoke", self.api.observer
        refusal = None
        if permitted is not None and not permitted(spec.allow_list, target):
            refusal = UnknownName(f"runtime.v1.{method}: {target!r} is not found")
        elif spec.capability and target not in self.components.of(spec.capability):
            refusal = UnknownName(f"runtime.v1.{method}: {spec.capability} {target!r} is not found")
        if refusal is not None:
            observer.observe(capability, "", refusal, 0.0)
            raise refusal
        started = perf_counter()
        try:
            response = spec.call(self.api, message)
        except ApiError as error:
            observer.observe(capability, target, error, perf_counter() - started)
            raise service_error(error) from None
        observer.observe(capability, target, None, perf_counter() - started)
        return response.SerializeToString() if response is not None else b""

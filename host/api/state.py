"""The state API (Layotto's GetState ... ExecuteStateTransaction; Dapr's are wire-identical) over the
host's state stores, with Dapr's semantics and codes.

Options: `concurrency` first-write checks the ETag and marks the key so later writes need one;
last-write ignores any ETag; unspecified checks an ETag when one is given (Dapr's Redis rules).
`consistency` eventual and strong are both met: every store here reads from its primary. Metadata
`ttlInSeconds` (on saves and transaction upserts) sets the key's expiry (<= 0: none); any other
metadata key is refused with InvalidArgument naming it. Calls block (component round trips): run
them off the event loop (`RuntimeApi.run`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from host.api._components import STATE, mapped, named, no_metadata
from host.api.errors import ApiError, Code, invalid
from host.api.observed import component_call
from host.components.catalog import Components
from host.components.state import Concurrency, Delete, DeleteItem, Operation, StateItem, Upsert
from host.lazy import lazy_module

if TYPE_CHECKING:
    from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2 as pb
else:  # protobuf and the generated messages (~10-20 ms to import) at the first runtime API call (issue 16)
    pb = lazy_module("host.grpc.proto.spec.proto.runtime.v1.runtime_pb2")

TTL = "ttlInSeconds"


@functools.cache
def _concurrencies() -> dict[int, Concurrency | None]:
    """StateOptions.StateConcurrency values as the stores' words (read once the messages are imported)."""
    return {pb.StateOptions.CONCURRENCY_UNSPECIFIED: None, pb.StateOptions.CONCURRENCY_FIRST_WRITE: "first-write",
            pb.StateOptions.CONCURRENCY_LAST_WRITE: "last-write"}


@functools.cache
def _consistencies() -> frozenset[int]:
    return frozenset(pb.StateOptions.StateConsistency.values())


def _ttl(metadata: Mapping[str, str], where: str) -> int | None:
    no_metadata(metadata, where, (TTL,))
    if TTL not in metadata:
        return None
    try:
        return int(metadata[TTL])
    except ValueError:
        raise invalid(f"{where} metadata {TTL!r} must be an integer, got {metadata[TTL]!r}") from None


def _check_consistency(value: int, where: str) -> None:
    if value not in _consistencies():
        raise invalid(f"{where}.consistency {value} is not a StateConsistency value")


def _concurrency(options: pb.StateOptions, where: str) -> Concurrency | None:
    concurrencies = _concurrencies()
    if options.concurrency not in concurrencies:
        raise invalid(f"{where}.options.concurrency {options.concurrency} is not a StateConcurrency value")
    _check_consistency(options.consistency, f"{where}.options")
    return concurrencies[options.concurrency]


def _etag(item: pb.StateItem) -> str | None:
    return item.etag.value or None if item.HasField("etag") else None


def _with_rules(etag: str | None, concurrency: Concurrency | None) -> tuple[str | None, Concurrency]:
    """Dapr's rules as the components take them: last-write drops the ETag; unspecified checks one
    that is given without marking the key first-write."""
    if concurrency == "last-write":
        return None, "last-write"
    return etag, concurrency or "last-write"


def state_item(item: pb.StateItem, where: str) -> StateItem:
    etag, concurrency = _with_rules(_etag(item), _concurrency(item.options, where))
    return StateItem(item.key, bytes(item.value), etag, concurrency, _ttl(item.metadata, where))


def delete_item(key: str, etag: str | None, options: pb.StateOptions, metadata: Mapping[str, str],
                where: str) -> DeleteItem:
    no_metadata(metadata, where)
    etag, concurrency = _with_rules(etag, _concurrency(options, where))
    return DeleteItem(key, etag, concurrency)


def _transaction_store(request: pb.ExecuteStateTransactionRequest) -> str:
    return request.storeName


class StateApi:
    def __init__(self, components: Components):
        self.components = components

    def _store(self, name: str) -> Any:
        return named(self.components, STATE, name)

    @component_call("state", reads=True)
    def get(self, request: pb.GetStateRequest) -> pb.GetStateResponse:
        store = self._store(request.store_name)
        _check_consistency(request.consistency, "GetStateRequest")
        no_metadata(request.metadata, "GetStateRequest")
        with mapped(f"getting {request.key!r} from state store {request.store_name!r}", "ERR_STATE_GET"):
            value = store.get(request.key)
        if value is None:
            return pb.GetStateResponse()
        return pb.GetStateResponse(data=value.value, etag=value.etag)

    @component_call("state", reads=True)
    def get_bulk(self, request: pb.GetBulkStateRequest) -> pb.GetBulkStateResponse:
        store = self._store(request.store_name)
        if request.parallelism < 0:
            raise invalid(f"GetBulkStateRequest.parallelism must not be negative, got {request.parallelism}")
        no_metadata(request.metadata, "GetBulkStateRequest")
        if not request.keys:
            return pb.GetBulkStateResponse()
        # `parallelism` bounds Dapr's fan-out; every store here answers a bulk read in one call.
        with mapped(f"bulk get from state store {request.store_name!r}", "ERR_STATE_BULK_GET"):
            values = store.bulk_get(list(request.keys))
        return pb.GetBulkStateResponse(items=[
            pb.BulkStateItem(key=value.key, data=value.value or b"", etag=value.etag or "", error=value.error)
            for value in values])

    @component_call("state")
    def save(self, request: pb.SaveStateRequest) -> None:
        store = self._store(request.store_name)
        items = [state_item(item, f"states[{index}]") for index, item in enumerate(request.states)]
        if not items:
            return
        with mapped(f"saving state in state store {request.store_name!r}", "ERR_STATE_SAVE"):
            if len(items) == 1:
                store.set(items[0])
            else:
                store.bulk_set(items)

    @component_call("state")
    def delete(self, request: pb.DeleteStateRequest) -> None:
        store = self._store(request.store_name)
        etag = request.etag.value or None if request.HasField("etag") else None
        item = delete_item(request.key, etag, request.options, request.metadata, "DeleteStateRequest")
        with mapped(f"deleting {request.key!r} from state store {request.store_name!r}", "ERR_STATE_DELETE"):
            store.delete(item)

    @component_call("state")
    def delete_bulk(self, request: pb.DeleteBulkStateRequest) -> None:
        store = self._store(request.store_name)
        items = [self._bulk_delete_item(item, f"states[{index}]") for index, item in enumerate(request.states)]
        if not items:
            return
        with mapped(f"deleting state in state store {request.store_name!r}", "ERR_STATE_DELETE"):
            store.bulk_delete(items)

    @staticmethod
    def _bulk_delete_item(item: pb.StateItem, where: str) -> DeleteItem:
        if item.value:
            raise invalid(f"{where}.value: a delete carries no value")
        return delete_item(item.key, _etag(item), item.options, item.metadata, where)

    @component_call("state", _transaction_store)
    def transact(self, request: pb.ExecuteStateTransactionRequest) -> None:
        store = self._store(request.storeName)
        no_metadata(request.metadata, "ExecuteStateTransactionRequest")
        operations = _operations(request.operations)
        if not operations:
            return
        with mapped(f"state transaction on state store {request.storeName!r}", "ERR_STATE_TRANSACTION",
                    in_transaction=True):
            store.transact(operations)


def _operations(operations: Sequence[pb.TransactionalStateOperation]) -> list[Operation]:
    result: list[Operation] = []
    for index, operation in enumerate(operations):
        where = f"operations[{index}]"
        if operation.operationType == "upsert":
            result.append(Upsert(state_item(operation.request, f"{where}.request")))
        elif operation.operationType == "delete":
            item = operation.request
            result.append(Delete(delete_item(item.key, _etag(item), item.options, item.metadata,
                                             f"{where}.request")))
        else:
            # Dapr answers Unimplemented for an operation type it does not know.
            raise ApiError(Code.UNIMPLEMENTED, f"{where}.operationType {operation.operationType!r} is not "
                           "supported (expected 'upsert' or 'delete')", error_code="ERR_NOT_SUPPORTED_STATE_OPERATION",
                           http_status=400)
    return result

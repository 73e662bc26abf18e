"""Dapr's HTTP state routes (`/v1.0/state/{store}...`), translated to the state API's messages.

Values are JSON: a saved `value` is stored as its compact JSON encoding (a string keeps its quotes,
as Dapr stores it) and read back as the stored bytes. GET answers 200 with the body and an `ETag`
header, or 204 for a missing key; writes answer 204; an ETag mismatch is 409, an invalid ETag 400.
"""

from __future__ import annotations

import json
from typing import Any

from host.api import RuntimeApi
from host.api.errors import invalid
from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2 as pb
from host.http.dapr._common import expect, json_body, json_bytes, metadata, string_map
from host.http.protocol import Response
from host.http.router import RoutedRequest, Router, json_response

_CONCURRENCY = {"first-write": pb.StateOptions.CONCURRENCY_FIRST_WRITE,
                "last-write": pb.StateOptions.CONCURRENCY_LAST_WRITE}
_CONSISTENCY = {"eventual": pb.StateOptions.CONSISTENCY_EVENTUAL, "strong": pb.StateOptions.CONSISTENCY_STRONG}


def _choice(table: dict[str, Any], value: Any, what: str) -> Any:
    if value in (None, ""):
        return 0
    if value not in table:
        raise invalid(f"{what} {value!r} is not one of {', '.join(table)}")
    return table[value]


def _options(raw: Any, what: str) -> pb.StateOptions:
    if raw is None:
        return pb.StateOptions()
    expect(raw, dict, what)
    unknown = set(raw) - {"concurrency", "consistency"}
    if unknown:
        raise invalid(f"{what}.{sorted(unknown)[0]} is not supported by this host")
    return pb.StateOptions(concurrency=_choice(_CONCURRENCY, raw.get("concurrency"), f"{what}.concurrency"),
                           consistency=_choice(_CONSISTENCY, raw.get("consistency"), f"{what}.consistency"))


def _state_item(raw: Any, what: str, query_metadata: dict[str, str], *, value: bool = True) -> pb.StateItem:
    expect(raw, dict, what)
    unknown = set(raw) - {"key", "value", "etag", "metadata", "options"}
    if unknown:
        raise invalid(f"{what}.{sorted(unknown)[0]} is not supported by this host")
    key = expect(raw.get("key", ""), str, f"{what}.key")
    if not key:
        raise invalid(f'{what}: "key" is a required field')
    item = pb.StateItem(key=key, metadata={**query_metadata, **string_map(raw.get("metadata"), f"{what}.metadata")},
                        options=_options(raw.get("options"), f"{what}.options"))
    if value and "value" in raw:
        item.value = json_bytes(raw["value"])
    if raw.get("etag") is not None:
        item.etag.value = expect(raw["etag"], str, f"{what}.etag")
    return item


def _bulk_data(data: bytes) -> Any:
    """A stored value inside Dapr's bulk JSON answer: JSON as it is, other bytes as a string."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return data.decode("utf-8", "replace")


class StateRoutes:
    def __init__(self, api: RuntimeApi):
        self.api = api

    def add_to(self, router: Router) -> None:
        router.add("GET", "/v1.0/state/{store}/{key}", self.get)
        router.add("DELETE", "/v1.0/state/{store}/{key}", self.delete)
        for method in ("POST", "PUT"):
            router.add(method, "/v1.0/state/{store}", self.save)
            router.add(method, "/v1.0/state/{store}/bulk", self.bulk)
            router.add(method, "/v1.0/state/{store}/transaction", self.transaction)

    async def get(self, request: RoutedRequest) -> Response:
        message = pb.GetStateRequest(
            store_name=request.match_info["store"], key=request.match_info["key"], metadata=metadata(request),
            consistency=_choice(_CONSISTENCY, request.query.get("consistency"), "consistency"))
        answer = await self.api.run(self.api.state.get, message)
        if not answer.data and not answer.etag:
            return Response(204)
        headers = {"ETag": answer.etag} if answer.etag else {}
        return Response(200, answer.data, list(headers.items()))

    async def delete(self, request: RoutedRequest) -> Response:
        message = pb.DeleteStateRequest(
            store_name=request.match_info["store"], key=request.match_info["key"], metadata=metadata(request),
            options=pb.StateOptions(
                concurrency=_choice(_CONCURRENCY, request.query.get("concurrency"), "concurrency"),
                consistency=_choice(_CONSISTENCY, request.query.get("consistency"), "consistency")))
        if "If-Match" in request.headers:
            message.etag.value = request.headers["If-Match"]
        await self.api.run(self.api.state.delete, message)
        return Response(204)

    async def save(self, request: RoutedRequest) -> Response:
        body = expect(json_body(request), list, "the request body")
        query_metadata = metadata(request)
        message = pb.SaveStateRequest(store_name=request.match_info["store"], states=[
            _state_item(raw, f"[{index}]", query_metadata) for index, raw in enumerate(body)])
        await self.api.run(self.api.state.save, message)
        return Response(204)

    async def bulk(self, request: RoutedRequest) -> Response:
        body = expect(json_body(request), dict, "the request body")
        keys = expect(body.get("keys", []), list, "keys")
        parallelism = expect(body.get("parallelism", 0), int, "parallelism")
        message = pb.GetBulkStateRequest(
            store_name=request.match_info["store"], keys=[expect(key, str, "keys[]") for key in keys],
            parallelism=parallelism, metadata={**metadata(request), **string_map(body.get("metadata"), "metadata")})
        answer = await self.api.run(self.api.state.get_bulk, message)
        items: list[dict[str, Any]] = []
        for item in answer.items:
            entry: dict[str, Any] = {"key": item.key}
            if item.error:
                entry["error"] = item.error
            elif item.data or item.etag:
                entry["data"] = _bulk_data(item.data)
                entry["etag"] = item.etag
            items.append(entry)
        return json_response(items)

    async def transaction(self, request: RoutedRequest) -> Response:
        body = expect(json_body(request), dict, "the request body")
        operations = []
        for index, raw in enumerate(expect(body.get("operations", []), list, "operations")):
            what = f"operations[{index}]"
            expect(raw, dict, what)
            kind = expect(raw.get("operation", ""), str, f"{what}.operation")
            operations.append(pb.TransactionalStateOperation(
                operationType=kind, request=_state_item(raw.get("request"), f"{what}.request", {},
                                                        value=kind != "delete")))
        message = pb.ExecuteStateTransactionRequest(storeName=request.match_info["store"], operations=operations,
                                                    metadata=string_map(body.get("metadata"), "metadata"))
        await self.api.run(self.api.state.transact, message)
        return Response(204)

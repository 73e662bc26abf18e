"""Dapr's HTTP routes for publish, locks, configuration and metadata, translated to the runtime API.

- `POST /v1.0/publish/{pubsub}/{topic}`: the body is the event data, its Content-Type the
  CloudEvent's `datacontenttype`; `?metadata.rawPayload=true` publishes it without an envelope. 204.
- `POST /v1.0-alpha1/lock/{store}` `{"resourceId", "lockOwner", "expiryInSeconds"}` -> `{"success"}`;
  `POST /v1.0-alpha1/unlock/{store}` `{"resourceId", "lockOwner"}` -> `{"status"}` (0-3, Dapr's enum).
- `GET /v1.0[-alpha1]/configuration/{store}?key=a&key=b` -> `{key: {"value", "version", "metadata"}}`,
  204 when nothing matched (Dapr's answer).
- `GET /v1.0/metadata`, `PUT /v1.0/metadata/{key}` (body: the value).
"""

from __future__ import annotations

from typing import Any

from host.api import RuntimeApi
from host.api.errors import invalid
from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2 as pb
from host.http.dapr._common import expect, json_body, metadata
from host.http.protocol import Response
from host.http.router import RoutedRequest, Router, json_response


def _fields(body: Any, allowed: dict[str, type], what: str) -> dict[str, Any]:
    expect(body, dict, what)
    unknown = set(body) - set(allowed)
    if unknown:
        raise invalid(f"{what}: field {sorted(unknown)[0]!r} is not supported by this host")
    return {name: expect(body[name], kind, name) for name, kind in allowed.items() if name in body}


class BlockRoutes:
    def __init__(self, api: RuntimeApi):
        self.api = api

    def add_to(self, router: Router) -> None:
        router.add("POST", "/v1.0/publish/{pubsub}/{topic:.+}", self.publish)
        router.add("POST", "/v1.0-alpha1/lock/{store}", self.lock)
        router.add("POST", "/v1.0-alpha1/unlock/{store}", self.unlock)
        router.add("GET", "/v1.0/configuration/{store}", self.configuration)
        router.add("GET", "/v1.0-alpha1/configuration/{store}", self.configuration)
        router.add("GET", "/v1.0/metadata", self.get_metadata)
        router.add("PUT", "/v1.0/metadata/{key}", self.set_metadata)

    async def publish(self, request: RoutedRequest) -> Response:
        message = pb.PublishEventRequest(
            pubsub_name=request.match_info["pubsub"], topic=request.match_info["topic"], data=request.body,
            data_content_type=request.headers.get("Content-Type", ""), metadata=metadata(request))
        await self.api.run(self.api.pubsub.publish, message, request.headers.get("traceparent", ""),
                           request.headers.get("tracestate", ""))
        return Response(204)

    async def lock(self, request: RoutedRequest) -> Response:
        body = _fields(json_body(request), {"resourceId": str, "lockOwner": str, "expiryInSeconds": int},
                       "the request body")
        message = pb.TryLockRequest(store_name=request.match_info["store"], resource_id=body.get("resourceId", ""),
                                    lock_owner=body.get("lockOwner", ""), expire=body.get("expiryInSeconds", 0))
        answer = await self.api.run(self.api.lock.try_lock, message)
        return json_response({"success": answer.success})

    async def unlock(self, request: RoutedRequest) -> Response:
        body = _fields(json_body(request), {"resourceId": str, "lockOwner": str}, "the request body")
        message = pb.UnlockRequest(store_name=request.match_info["store"], resource_id=body.get("resourceId", ""),
                                   lock_owner=body.get("lockOwner", ""))
        answer = await self.api.run(self.api.lock.unlock, message)
        return json_response({"status": int(answer.status)})

    async def configuration(self, request: RoutedRequest) -> Response:
        keys = request.query.getall("key")
        items = await self.api.run(self.api.configuration.get_items, request.match_info["store"], keys,
                                   metadata(request))
        if not items:
            return Response(204)
        return json_response({item.key: {"value": item.value, "version": item.version,
                                             "metadata": dict(item.metadata)} for item in items})

    async def get_metadata(self, request: RoutedRequest) -> Response:
        described = self.api.metadata.describe()
        return json_response({
            "id": described.app_id, "runtimeVersion": described.runtime_version, "enabledFeatures": [],
            "extended": described.extended, "subscriptions": [],
            "components": [{"name": c.name, "type": c.type, "version": c.version, "capabilities": c.capabilities}
                           for c in described.components]})

    async def set_metadata(self, request: RoutedRequest) -> Response:
        self.api.metadata.set(request.match_info["key"], request.body.decode("utf-8", "replace"))
        return Response(204)

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

from aiohttp import web

from host.api import RuntimeApi
from host.api.errors import invalid
from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2 as pb
from host.http.dapr._common import expect, json_body, metadata


def _fields(body: Any, allowed: dict[str, type], what: str) -> dict[str, Any]:
    expect(body, dict, what)
    unknown = set(body) - set(allowed)
    if unknown:
        raise invalid(f"{what}: field {sorted(unknown)[0]!r} is not supported by this host")
    return {name: expect(body[name], kind, name) for name, kind in allowed.items() if name in body}


class BlockRoutes:
    def __init__(self, api: RuntimeApi):
        self.api = api

    def add_to(self, routes: web.RouteTableDef) -> None:
        routes.post("/v1.0/publish/{pubsub}/{topic:.+}")(self.publish)
        routes.post("/v1.0-alpha1/lock/{store}")(self.lock)
        routes.post("/v1.0-alpha1/unlock/{store}")(self.unlock)
        routes.get("/v1.0/configuration/{store}")(self.configuration)
        routes.get("/v1.0-alpha1/configuration/{store}")(self.configuration)
        routes.get("/v1.0/metadata")(self.get_metadata)
        routes.put("/v1.0/metadata/{key}")(self.set_metadata)

    async def publish(self, request: web.Request) -> web.StreamResponse:
        message = pb.PublishEventRequest(
            pubsub_name=request.match_info["pubsub"], topic=request.match_info["topic"], data=await request.read(),
            data_content_type=request.headers.get("Content-Type", ""), metadata=metadata(request))
        await self.api.run(self.api.pubsub.publish, message, request.headers.get("traceparent", ""),
                           request.headers.get("tracestate", ""))
        return web.Response(status=204)

    async def lock(self, request: web.Request) -> web.StreamResponse:
        body = _fields(await json_body(request), {"resourceId": str, "lockOwner": str, "expiryInSeconds": int},
                       "the request body")
        message = pb.TryLockRequest(store_name=request.match_info["store"], resource_id=body.get("resourceId", ""),
                                    lock_owner=body.get("lockOwner", ""), expire=body.get("expiryInSeconds", 0))
        answer = await self.api.run(self.api.lock.try_lock, message)
        return web.json_response({"success": answer.success})

    async def unlock(self, request: web.Request) -> web.StreamResponse:
        body = _fields(await json_body(request), {"resourceId": str, "lockOwner": str}, "the request body")
        message = pb.UnlockRequest(store_name=request.match_info["store"], resource_id=body.get("resourceId", ""),
                                   lock_owner=body.get("lockOwner", ""))
        answer = await self.api.run(self.api.lock.unlock, message)
        return web.json_response({"status": int(answer.status)})

    async def configuration(self, request: web.Request) -> web.StreamResponse:
        keys = request.query.getall("key", [])
        items = await self.api.run(self.api.configuration.get_items, request.match_info["store"], keys,
                                   metadata(request))
        if not items:
            return web.Response(status=204)
        return web.json_response({item.key: {"value": item.value, "version": item.version,
                                             "metadata": dict(item.metadata)} for item in items})

    async def get_metadata(self, request: web.Request) -> web.StreamResponse:
        described = self.api.metadata.describe()
        return web.json_response({
            "id": described.app_id, "runtimeVersion": described.runtime_version, "enabledFeatures": [],
            "extended": described.extended, "subscriptions": [],
            "components": [{"name": c.name, "type": c.type, "version": c.version, "capabilities": c.capabilities}
                           for c in described.components]})

    async def set_metadata(self, request: web.Request) -> web.StreamResponse:
        self.api.metadata.set(request.match_info["key"], (await request.read()).decode("utf-8", "replace"))
        return web.Response(status=204)

"""Dapr's HTTP API subset on its own listener, with real HTTP: Dapr's routes, bodies and statuses
(204 for a missing key, 409 for an ETag mismatch, 400 for an unknown store, JSON error bodies with
Dapr's `errorCode`), invocation of wasm functions with any verb, and the API token's exemptions."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from host.components.pubsub.cloudevents import parse
from tests.grpc.api_support import api_config


class DaprHttp:
    def __init__(self, client: Any):
        self.session: aiohttp.ClientSession = client.session
        self.base = f"http://127.0.0.1:{client.server.dapr_http_port}"

    async def request(self, method: str, path: str, *, json_body: Any = None, data: bytes | None = None,
                      headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
        async with self.session.request(method, self.base + path, json=json_body, data=data,
                                        headers=headers) as response:
            return response.status, response.headers, await response.read()


def error_code(body: bytes) -> str:
    return json.loads(body)["errorCode"]


async def test_health_and_state_routes(serve, tmp_path: Path) -> None:
    dapr = DaprHttp(await serve(api_config(tmp_path)))
    assert (await dapr.request("GET", "/v1.0/healthz"))[0] == 204
    assert (await dapr.request("GET", "/v1.0/healthz/outbound"))[0] == 204
    status, _, body = await dapr.request("GET", "/v1.0/healthz?appid=other")
    assert status == 500 and error_code(body) == "ERR_HEALTH_APPID_NOT_MATCH"

    assert (await dapr.request("POST", "/v1.0/state/state_demo", json_body=[
        {"key": "h1", "value": {"a": 1}}, {"key": "h2", "value": "text"}]))[0] == 204
    status, headers, body = await dapr.request("GET", "/v1.0/state/state_demo/h1")
    assert status == 200 and json.loads(body) == {"a": 1} and headers["ETag"]
    etag = headers["ETag"]
    assert (await dapr.request("GET", "/v1.0/state/state_demo/h2"))[2] == b'"text"'  # stored as JSON, as Dapr does
    assert (await dapr.request("GET", "/v1.0/state/state_demo/book1"))[2] == b"100"  # raw bytes come back raw
    assert (await dapr.request("GET", "/v1.0/state/state_demo/missing"))[0] == 204

    status, _, body = await dapr.request("POST", "/v1.0/state/state_demo", json_body=[
        {"key": "h1", "value": 2, "etag": "999"}])
    assert status == 409, body
    status, _, body = await dapr.request("POST", "/v1.0/state/state_demo", json_body=[
        {"key": "h1", "value": 2, "etag": "not-a-version"}])
    assert status == 400, body
    status, _, body = await dapr.request("POST", "/v1.0/state/state_demo", json_body=[
        {"key": "h1", "value": 2, "etag": etag, "options": {"concurrency": "first-write"}}])
    assert status == 204, body
    status, _, body = await dapr.request("POST", "/v1.0/state/state_demo", json_body=[
        {"key": "h1", "value": 2, "options": {"concurrency": "sometimes"}}])
    assert status == 400 and "sometimes" in json.loads(body)["message"]

    status, _, body = await dapr.request("POST", "/v1.0/state/state_demo/bulk",
                                         json_body={"keys": ["h1", "h2", "missing"], "parallelism": 2})
    bulk = json.loads(body)
    assert status == 200 and [(i["key"], i.get("data")) for i in bulk] == [("h1", 2), ("h2", "text"),
                                                                          ("missing", None)]
    assert bulk[0]["etag"] and "etag" not in bulk[2]

    assert (await dapr.request("DELETE", "/v1.0/state/state_demo/h1", headers={"If-Match": "1"}))[0] == 409
    assert (await dapr.request("DELETE", "/v1.0/state/state_demo/h1",
                               headers={"If-Match": bulk[0]["etag"]}))[0] == 204
    assert (await dapr.request("GET", "/v1.0/state/state_demo/h1"))[0] == 204

    status, _, body = await dapr.request("POST", "/v1.0/state/state_demo/transaction", json_body={"operations": [
        {"operation": "upsert", "request": {"key": "t1", "value": "x"}},
        {"operation": "delete", "request": {"key": "h2"}}]})
    assert status == 204, body
    assert (await dapr.request("GET", "/v1.0/state/state_demo/t1"))[2] == b'"x"'
    assert (await dapr.request("GET", "/v1.0/state/state_demo/h2"))[0] == 204

    status, _, body = await dapr.request("GET", "/v1.0/state/nowhere/k")
    assert status == 400 and error_code(body) == "ERR_STATE_STORE_NOT_FOUND"
    status, _, body = await dapr.request("POST", "/v1.0/state/state_demo", data=b"[{not json",
                                         headers={"Content-Type": "application/json"})
    assert status == 400 and error_code(body) == "ERR_MALFORMED_REQUEST"
    status, _, body = await dapr.request("GET", "/v1.0/nothing/here")
    assert status == 404 and error_code(body) == "ERR_NOT_FOUND"
    status, headers, body = await dapr.request("GET", "/v1.0/state/state_demo")  # a route of POST and PUT only
    assert status == 405 and error_code(body) == "ERR_METHOD_NOT_ALLOWED"
    assert headers.get("Content-Type") == "application/json; charset=utf-8"


async def test_invoke_any_verb_publish_lock_configuration_metadata(serve, tmp_path: Path) -> None:
    client = await serve(api_config(tmp_path))
    dapr = DaprHttp(client)
    status, _, body = await dapr.request("POST", "/v1.0/invoke/id_2/method/stock", data=b"book1")
    assert (status, body) == (200, b"100")
    status, _, body = await dapr.request("PATCH", "/v1.0/invoke/echo/method/a/b%20c?q=1", data=b"xyz",
                                         headers={"Content-Type": "text/plain", "x-trace": "t-9"})
    assert status == 200 and b"PATCH" in body and b"/a/b%20c?q=1" in body and b"t-9" in body and b"xyz" in body
    status, _, body = await dapr.request("GET", "/v1.0/invoke/refuse/method/x")
    assert (status, body) == (404, b"no such thing")  # the function's own answer, passed through
    status, _, body = await dapr.request("GET", "/v1.0/invoke/ghost/method/x")
    assert status == 404 and error_code(body) == "ERR_DIRECT_INVOKE"

    pubsub = client.server.app.components.of("pubsub")["pubsub"]
    subscription = await asyncio.to_thread(pubsub.subscribe, "http-topic", "http-test", "c1")
    try:
        status, _, _ = await dapr.request("POST", "/v1.0/publish/pubsub/http-topic", data=b"<a/>",
                                          headers={"Content-Type": "application/xml"})
        assert status == 204
        [message] = await asyncio.to_thread(subscription.fetch, 1, 2.0)
    finally:
        await asyncio.to_thread(subscription.close)
    event = parse(message.data)
    assert (event.data, event.datacontenttype, event.source) == (b"<a/>", "application/xml", "api-test")
    status, _, body = await dapr.request("POST", "/v1.0/publish/nope/t", data=b"x")
    assert status == 404 and error_code(body) == "ERR_PUBSUB_NOT_FOUND"

    lock = {"resourceId": "printer", "lockOwner": "http", "expiryInSeconds": 10}
    assert json.loads((await dapr.request("POST", "/v1.0-alpha1/lock/lockstore", json_body=lock))[2]) == {
        "success": True}
    again = {**lock, "lockOwner": "other"}
    assert json.loads((await dapr.request("POST", "/v1.0-alpha1/lock/lockstore", json_body=again))[2]) == {
        "success": False}
    status, _, body = await dapr.request("POST", "/v1.0-alpha1/unlock/lockstore",
                                         json_body={"resourceId": "printer", "lockOwner": "other"})
    assert (status, json.loads(body)) == (200, {"status": 2})
    status, _, body = await dapr.request("POST", "/v1.0-alpha1/unlock/lockstore",
                                         json_body={"resourceId": "printer", "lockOwner": "http"})
    assert (status, json.loads(body)) == (200, {"status": 0})
    status, _, body = await dapr.request("POST", "/v1.0-alpha1/lock/lockstore",
                                         json_body={**lock, "expiryInSeconds": 0})
    assert status == 400, body

    status, _, body = await dapr.request("GET", "/v1.0/configuration/settings?key=greeting&key=missing")
    items = json.loads(body)
    assert status == 200 and list(items) == ["greeting"] and items["greeting"]["value"] == "hello"
    assert items["greeting"]["version"]
    assert (await dapr.request("GET", "/v1.0-alpha1/configuration/settings?key=missing"))[0] == 204

    assert (await dapr.request("PUT", "/v1.0/metadata/owner", data=b"team-a"))[0] == 204
    status, _, body = await dapr.request("GET", "/v1.0/metadata")
    described = json.loads(body)
    assert status == 200 and described["id"] == "api-test" and described["extended"]["owner"] == "team-a"
    assert {"name": "lockstore", "type": "lock.memory", "version": "v1", "capabilities": []} in described["components"]


async def test_token_limits_and_none_configured(serve, tmp_path: Path) -> None:
    config = api_config(tmp_path, with_functions=False, state={},
                        server={"api_token": "t0ken", "api_max_message_bytes": 1024})
    dapr = DaprHttp(await serve(config))
    assert (await dapr.request("GET", "/v1.0/healthz"))[0] == 204  # health is exempt
    assert (await dapr.request("GET", "/v1.0/healthz/outbound"))[0] == 204
    status, _, body = await dapr.request("GET", "/v1.0/metadata")
    assert status == 401 and error_code(body) == "ERR_UNAUTHORIZED"
    status, _, _ = await dapr.request("GET", "/v1.0/metadata", headers={"dapr-api-token": "nope"})
    assert status == 401
    token = {"dapr-api-token": "t0ken"}
    assert (await dapr.request("GET", "/v1.0/metadata", headers=token))[0] == 200
    status, _, body = await dapr.request("GET", "/v1.0/state/any/k", headers=token)
    assert status == 500 and error_code(body) == "ERR_STATE_STORE_NOT_CONFIGURED"  # Dapr's HTTP status for it
    status, _, _ = await dapr.request("POST", "/v1.0/publish/pubsub/t", data=b"x" * 4096, headers=token)
    assert status == 413

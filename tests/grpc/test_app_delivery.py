"""Pub/sub delivery to applications: a `dapr.ext.grpc.App` (the official SDK's app side, Dapr's
AppCallback), an app serving Layotto's AppCallback (the project's stubs) and an HTTP app
(`GET /dapr/subscribe`) each register their subscriptions and receive events published through
the runtime API, with Dapr's outcome rules: SUCCESS acks, RETRY and errors redeliver, DROP goes to
the dead-letter topic, UNIMPLEMENTED / 404 drops without one."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import empty_pb2

from host.components.pubsub.cloudevents import parse
from host.grpc.proto.spec.proto.runtime.v1 import appcallback_pb2, appcallback_pb2_grpc, runtime_pb2_grpc
from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2 as pb
from tests.grpc.api_support import api_config
from tests.grpc.test_dapr_sdk import point_sdk_at, with_client
from tests.grpc.test_generated_protos import require_package

try:  # at module level: the SDK reads handlers' (string) annotations against this module's globals
    from dapr.ext.grpc import App, SubscriptionMessage, TopicEventResponse
except ImportError:  # the test below skips (or fails in CI) when the SDK's app side is missing
    pass

TIMEOUT = 5.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = TIMEOUT) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def dead_letters(client: Any, topic: str, count: int, wait_s: float = 3.0) -> list[bytes]:
    pubsub = client.server.app.components.of("pubsub")["pubsub"]
    subscription = await asyncio.to_thread(pubsub.subscribe, topic, "dlq-reader", "c")
    try:
        messages = await asyncio.to_thread(subscription.fetch, count, wait_s)
    finally:
        await asyncio.to_thread(subscription.close)
    return [parse(message.data).data for message in messages]


async def test_dapr_grpc_app_receives_events(serve, tmp_path: Path, monkeypatch) -> None:
    require_package("dapr", "the official Dapr SDK's app side")
    require_package("cloudevents", "dapr.ext.grpc needs cloudevents<2")
    app = App()
    received: list[tuple[str, Any]] = []
    attempts = {"flaky": 0}

    @app.subscribe(pubsub_name="pubsub", topic="app-orders")
    def orders(event: SubscriptionMessage) -> TopicEventResponse | None:
        received.append(("orders", event.data()))
        return None

    @app.subscribe(pubsub_name="pubsub", topic="app-flaky")
    def flaky(event: SubscriptionMessage) -> TopicEventResponse:
        attempts["flaky"] += 1
        if attempts["flaky"] == 1:
            return TopicEventResponse("retry")
        received.append(("flaky", event.data()))
        return TopicEventResponse("success")

    @app.subscribe(pubsub_name="pubsub", topic="app-poison", dead_letter_topic="app-dlq")
    def poison(event: SubscriptionMessage) -> TopicEventResponse:
        return TopicEventResponse("drop")

    port = free_port()
    server = threading.Thread(target=app.run, args=(port, "127.0.0.1"), daemon=True)
    server.start()
    try:
        client = await serve(api_config(tmp_path, server={"app_callback": f"127.0.0.1:{port}"}))
        point_sdk_at(monkeypatch, client.server)

        def publish(d: Any) -> None:
            d.publish_event("pubsub", "app-orders", json.dumps({"order": 1}), data_content_type="application/json")
            d.publish_event("pubsub", "app-flaky", "try again", data_content_type="text/plain")
            d.publish_event("pubsub", "app-poison", "bad", data_content_type="text/plain")

        await with_client(publish)
        await eventually(lambda: len(received) == 2, "both events")
        assert sorted(received, key=lambda r: r[0]) == [("flaky", "try again"), ("orders", {"order": 1})]
        assert attempts["flaky"] == 2
        assert await dead_letters(client, "app-dlq", 1) == [b"bad"]
    finally:
        app.stop()


class LayottoApp(appcallback_pb2_grpc.AppCallbackServicer):
    """An application speaking Layotto's AppCallback, written with the project's own stubs."""

    def __init__(self) -> None:
        self.events: list[appcallback_pb2.TopicEventRequest] = []

    async def ListTopicSubscriptions(self, request: empty_pb2.Empty, context: Any) -> Any:
        return appcallback_pb2.ListTopicSubscriptionsResponse(subscriptions=[
            appcallback_pb2.TopicSubscription(pubsub_name="pubsub", topic="layotto-topic")])

    async def OnTopicEvent(self, request: appcallback_pb2.TopicEventRequest, context: Any) -> Any:
        self.events.append(request)
        return appcallback_pb2.TopicEventResponse(status=appcallback_pb2.TopicEventResponse.SUCCESS)


async def test_layotto_grpc_app_receives_events(serve, tmp_path: Path) -> None:
    servicer = LayottoApp()
    app_server = grpc.aio.server()
    appcallback_pb2_grpc.add_AppCallbackServicer_to_server(servicer, app_server)
    port = app_server.add_insecure_port("127.0.0.1:0")
    await app_server.start()
    try:
        client = await serve(api_config(tmp_path, server={"app_callback": f"127.0.0.1:{port}",
                                                          "app_callback_protocol": "layotto"}))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{client.server.grpc_port}") as channel:
            stub = runtime_pb2_grpc.RuntimeStub(channel)
            await stub.PublishEvent(pb.PublishEventRequest(pubsub_name="pubsub", topic="layotto-topic",
                                                           data=b"hello layotto", data_content_type="text/plain"),
                                    timeout=TIMEOUT)
        await eventually(lambda: len(servicer.events) == 1, "the event")
        event = servicer.events[0]
        assert (event.data, event.topic, event.pubsub_name, event.source) == (b"hello layotto", "layotto-topic",
                                                                              "pubsub", "api-test")
        assert event.metadata["pubsubName"] == "pubsub"
    finally:
        await app_server.stop(0)


async def test_http_app_receives_cloudevents(serve, tmp_path: Path) -> None:
    posts: list[tuple[str, dict[str, Any]]] = []

    async def subscribe(request: web.Request) -> web.Response:
        return web.json_response([
            {"pubsubname": "pubsub", "topic": "http-orders", "route": "/orders"},
            {"pubsubname": "pubsub", "topic": "http-gone", "routes": {"default": "/gone"},
             "deadLetterTopic": "http-dlq"}])

    async def orders(request: web.Request) -> web.Response:
        assert request.headers["Content-Type"] == "application/cloudevents+json"
        posts.append(("orders", json.loads(await request.read())))
        if len(posts) == 1:
            return web.Response(status=503)  # retried
        return web.json_response({"status": "SUCCESS"})

    async def gone(request: web.Request) -> web.Response:
        posts.append(("gone", json.loads(await request.read())))
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/dapr/subscribe", subscribe)
    app.router.add_post("/orders", orders)
    app.router.add_post("/gone", gone)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        client = await serve(api_config(tmp_path, server={"app_http": f"http://127.0.0.1:{port}"}))
        base = f"http://127.0.0.1:{client.server.dapr_http_port}"
        for topic, body in (("http-orders", b'{"id": 5}'), ("http-gone", b"nobody")):
            async with client.session.post(f"{base}/v1.0/publish/pubsub/{topic}", data=body,
                                           headers={"Content-Type": "application/json"}) as response:
                assert response.status == 204
        await eventually(lambda: len(posts) == 3, "the redelivery")
        first, second = [body for route, body in posts if route == "orders"]
        assert first["id"] == second["id"] and second["data"] == {"id": 5} and second["source"] == "api-test"
        # /gone answered 404: dropped (delivered once) and not sent to the dead-letter topic.
        assert [route for route, _ in posts].count("gone") == 1
        assert await dead_letters(client, "http-dlq", 1, wait_s=0.5) == []
        assert [route for route, _ in posts].count("gone") == 1
    finally:
        await runner.cleanup()

"""Streaming subscriptions on a real host: Layotto's SubscribeTopicEvents through the project's stubs
(initial handshake, events as published, SUCCESS / RETRY / DROP with a dead-letter topic, the
first-message rule) and Dapr's SubscribeTopicEventsAlpha1 through the official SDK's `subscribe`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest

from host.components.pubsub.cloudevents import parse
from host.grpc.proto.spec.proto.runtime.v1 import appcallback_pb2, runtime_pb2_grpc
from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2 as pb
from tests.grpc.api_support import api_config
from tests.grpc.test_dapr_sdk import point_sdk_at, with_client
from tests.grpc.test_generated_protos import require_package

TIMEOUT = 5.0
Status = appcallback_pb2.TopicEventResponse


def initial(topic: str, dead_letter_topic: str | None = None) -> pb.SubscribeTopicEventsRequest:
    first = pb.SubscribeTopicEventsRequestInitial(pubsub_name="pubsub", topic=topic)
    if dead_letter_topic is not None:
        first.dead_letter_topic = dead_letter_topic
    return pb.SubscribeTopicEventsRequest(initial_request=first)


def answer(event_id: str, status: int) -> pb.SubscribeTopicEventsRequest:
    return pb.SubscribeTopicEventsRequest(event_processed=pb.SubscribeTopicEventsRequestProcessed(
        id=event_id, status=Status(status=status)))  # type: ignore[arg-type]


async def read(stream: Any) -> Any:
    return await asyncio.wait_for(stream.read(), TIMEOUT)


async def test_layotto_streaming_subscription(serve, tmp_path: Path) -> None:
    client = await serve(api_config(tmp_path))
    pubsub = client.server.app.components.of("pubsub")["pubsub"]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{client.server.grpc_port}") as channel:
        stub = runtime_pb2_grpc.RuntimeStub(channel)
        stream = stub.SubscribeTopicEvents(timeout=20)
        await stream.write(initial("stream-topic", dead_letter_topic="stream-dlq"))
        assert (await read(stream)).WhichOneof("subscribe_topic_events_response_type") == "initial_response"

        for data in (b"first", b"second"):
            await stub.PublishEvent(pb.PublishEventRequest(pubsub_name="pubsub", topic="stream-topic", data=data,
                                                           data_content_type="text/plain"), timeout=TIMEOUT)
        one, two = (await read(stream)).event_message, (await read(stream)).event_message
        assert (one.data, one.topic, one.pubsub_name, one.source, one.data_content_type) == (
            b"first", "stream-topic", "pubsub", "api-test", "text/plain")
        assert one.metadata["pubsubName"] == "pubsub" and two.data == b"second"

        await stream.write(answer(one.id, Status.SUCCESS))
        await stream.write(answer(two.id, Status.RETRY))
        again = (await read(stream)).event_message  # redelivered after the retry back-off
        assert (again.id, again.data) == (two.id, b"second")
        dead_letters = await asyncio.to_thread(pubsub.subscribe, "stream-dlq", "test", "c")
        try:
            await stream.write(answer(again.id, Status.DROP))
            [parked] = await asyncio.to_thread(dead_letters.fetch, 1, 3.0)
        finally:
            await asyncio.to_thread(dead_letters.close)
        assert parse(parked.data).data == b"second"
        stream.cancel()

        # The first event was acknowledged and the second dropped: a new stream of the group gets neither.
        later = stub.SubscribeTopicEvents(timeout=TIMEOUT)
        await later.write(initial("stream-topic"))
        await read(later)
        await stub.PublishEvent(pb.PublishEventRequest(pubsub_name="pubsub", topic="stream-topic", data=b"third"),
                                timeout=TIMEOUT)
        assert (await read(later)).event_message.data == b"third"
        later.cancel()

        wrong = stub.SubscribeTopicEvents(timeout=TIMEOUT)
        await wrong.write(answer("x", Status.SUCCESS))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await read(wrong)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "initial" in raised.value.details()
        unknown = stub.SubscribeTopicEvents(timeout=TIMEOUT)
        await unknown.write(pb.SubscribeTopicEventsRequest(initial_request=pb.SubscribeTopicEventsRequestInitial(
            pubsub_name="nope", topic="t")))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await read(unknown)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "nope" in raised.value.details()


async def test_an_unanswered_event_goes_to_the_next_stream(serve, tmp_path: Path) -> None:
    client = await serve(api_config(tmp_path))

    async with grpc.aio.insecure_channel(f"127.0.0.1:{client.server.grpc_port}") as channel:
        stub = runtime_pb2_grpc.RuntimeStub(channel)
        stream = stub.SubscribeTopicEvents(timeout=TIMEOUT)
        await stream.write(initial("handover"))
        await read(stream)
        await stub.PublishEvent(pb.PublishEventRequest(pubsub_name="pubsub", topic="handover", data=b"once"),
                                timeout=TIMEOUT)
        event = (await read(stream)).event_message
        stream.cancel()  # gone without answering
        successor = stub.SubscribeTopicEvents(timeout=TIMEOUT)
        await successor.write(initial("handover"))
        await read(successor)
        redelivered = (await read(successor)).event_message
        assert (redelivered.id, redelivered.data) == (event.id, b"once")
        successor.cancel()


async def test_dapr_sdk_streaming_subscription(serve, tmp_path: Path, monkeypatch) -> None:
    require_package("dapr", "the official Dapr SDK, pointed at the host")
    client = await serve(api_config(tmp_path))
    point_sdk_at(monkeypatch, client.server)

    def work(d: Any) -> tuple[Any, ...]:
        subscription = d.subscribe(pubsub_name="pubsub", topic="sdk-stream")
        try:
            d.publish_event("pubsub", "sdk-stream", '{"order": 1}', data_content_type="application/json")
            message = subscription.next_message()
            subscription.respond_success(message)
            return message.data(), message.topic(), message.source(), message.extensions().get("pubsubname")
        finally:
            subscription.close()

    assert await with_client(work) == ({"order": 1}, "sdk-stream", "api-test", "pubsub")

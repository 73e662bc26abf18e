"""The bidi stream of a streaming subscription, shared by Layotto's SubscribeTopicEvents and Dapr's
SubscribeTopicEventsAlpha1 (same field numbers, different names): the client's first message must
be `initial_request` (else InvalidArgument, as Dapr answers), the server answers
`initial_response`, then sends `event_message`s and reads `event_processed` answers until either
side ends. An answer for an unknown event id is logged and ignored; the client closing its side
ends the subscription (as in Dapr)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from host.api import ApiError, RuntimeApi
from host.api.errors import invalid
from host.api.feed import END, ThreadFeed
from host.api.topics import TopicEvent
from host.grpc import status

log = logging.getLogger(__name__)


async def topic_stream(api: RuntimeApi, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext,
                       initial_response: Callable[[], Any], event_message: Callable[[TopicEvent], Any]
                       ) -> AsyncIterator[Any]:
    try:
        first = await anext(requests)
    except StopAsyncIteration:
        first = None
    if first is None or first.WhichOneof("subscribe_topic_events_request_type") != "initial_request":
        await status.abort(context, invalid("initial request is required: the first message must be "
                                            "initial_request"))
    initial = first.initial_request
    feed: ThreadFeed[TopicEvent] = ThreadFeed()
    try:
        stream = await api.run(api.pubsub.streams.open, initial.pubsub_name, initial.topic, dict(initial.metadata),
                               initial.dead_letter_topic if initial.HasField("dead_letter_topic") else "",
                               feed.put, feed.end)
    except ApiError as error:
        await status.abort(context, error)

    async def answers() -> None:
        try:
            async for request in requests:
                if request.WhichOneof("subscribe_topic_events_request_type") != "event_processed":
                    log.info("topic stream %s/%s: a second initial_request is ignored", stream.pubsub_name,
                             stream.topic)
                    continue
                processed = request.event_processed
                try:
                    await api.run(stream.processed, processed.id, int(processed.status.status))
                except ApiError as error:
                    log.warning("topic stream %s/%s: %s", stream.pubsub_name, stream.topic, error.message)
        finally:
            stream.close()  # the client closed its side (or the call ended)

    reader = asyncio.ensure_future(answers())
    try:
        yield initial_response()
        while (event := await feed.get()) is not END:
            yield event_message(event)  # type: ignore[arg-type]  # END is handled by the loop condition
    finally:
        reader.cancel()
        stream.close()

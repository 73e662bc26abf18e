"""Streaming subscriptions (Layotto's SubscribeTopicEvents, Dapr's SubscribeTopicEventsAlpha1): an
application pulls a topic's events over one stream and answers each with SUCCESS, RETRY or DROP.
The same consumer serves the delivery to an application's declared subscriptions (delivery.py),
with a bound on attempts.

Each stream is one consumer of the consumer group named after the app id (Dapr's `consumerID`
default), so the streams of one application share a topic's events and the functions subscribed
to it (their own groups) still get every event. A stream holds at most `MAX_IN_FLIGHT` unanswered
events. Outcomes: SUCCESS acknowledges; RETRY redelivers after a back-off that doubles with each
attempt; DROP acknowledges, after re-publishing the event to the stream's dead-letter topic when it
has one; an unknown status is a RETRY. Events still unanswered when a stream ends are redelivered
at once to the group's other consumers (or to the next stream).

An event is what the stored CloudEvent says (Dapr's data rules, host/components/pubsub/cloudevents);
a message that is not a CloudEvent (a raw publish) is delivered as its bytes under the backend's
message id. The fetch loop runs on a thread of its own per stream (it long-polls the backend); it
hands events to the stream through `on_event`, which must return quickly.
"""

from __future__ import annotations

import collections
import enum
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from host.api._components import mapped
from host.api.errors import invalid
from host.components.errors import ComponentError, InvalidRequest
from host.components.pubsub import Message, PubSub, Subscription
from host.components.pubsub.cloudevents import EVENT_TYPE, SPEC_VERSION, parse

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 32  # unanswered events per stream
FETCH_WAIT_S = 0.5  # one long poll: also how soon a closed stream's thread notices
RETRY_DELAY_S = 0.1  # the first RETRY's redelivery delay; doubles with each attempt
MAX_RETRY_DELAY_S = 10.0


class Outcome(enum.IntEnum):
    """TopicEventResponse.TopicEventResponseStatus (Layotto's and Dapr's)."""

    SUCCESS = 0
    RETRY = 1
    DROP = 2


@dataclass(frozen=True)
class TopicEvent:
    id: str
    source: str
    type: str
    spec_version: str
    data_content_type: str
    topic: str
    pubsub_name: str
    data: bytes
    extensions: dict[str, Any] = field(default_factory=dict)  # every other CloudEvent attribute
    metadata: dict[str, str] = field(default_factory=dict)  # the backend's message metadata
    raw: bytes = b""  # the stored message (the CloudEvent JSON), for HTTP delivery


def topic_event(message: Message, pubsub_name: str) -> TopicEvent:
    try:
        event = parse(message.data)
    except InvalidRequest:  # a raw publish: its bytes as they are
        return TopicEvent(id=message.id, source="", type=EVENT_TYPE, spec_version=SPEC_VERSION,
                          data_content_type="application/octet-stream", topic=message.topic,
                          pubsub_name=pubsub_name, data=message.data, metadata=dict(message.metadata),
                          raw=message.data)
    extensions = {"topic": event.topic or message.topic, "pubsubname": event.pubsubname or pubsub_name,
                  **event.extensions}
    return TopicEvent(id=event.id, source=event.source, type=event.type, spec_version=event.specversion,
                      data_content_type=event.datacontenttype, topic=message.topic, pubsub_name=pubsub_name,
                      data=event.data, extensions=extensions, metadata=dict(message.metadata), raw=message.data)


class TopicStream:
    def __init__(self, pubsub: PubSub, pubsub_name: str, topic: str, subscription: Subscription,
                 dead_letter_topic: str, on_event: Callable[[TopicEvent], None], on_end: Callable[[], None],
                 max_attempts: int | None = None):
        self.pubsub = pubsub
        self.max_attempts = max_attempts  # None: retried for as long as the application asks
        self.pubsub_name = pubsub_name
        self.topic = topic
        self.dead_letter_topic = dead_letter_topic
        self._subscription = subscription
        self._on_event = on_event
        self._on_end = on_end
        self._in_flight: dict[str, collections.deque[Message]] = {}
        self._count = 0
        self._changed = threading.Condition()
        self._closed = False
        self._draining = False  # no more fetches; finish once every event in flight is answered
        self._thread = threading.Thread(target=self._pump, name=f"topic-stream-{topic}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _pump(self) -> None:
        try:
            while True:
                with self._changed:
                    while not self._closed and (self._count >= MAX_IN_FLIGHT or self._draining and self._count):
                        self._changed.wait()
                    if self._closed or self._draining:
                        return
                    room = MAX_IN_FLIGHT - self._count
                try:
                    messages = self._subscription.fetch(room, FETCH_WAIT_S)
                except ComponentError as error:
                    log.warning("topic stream %s/%s: fetch failed: %s", self.pubsub_name, self.topic, error)
                    with self._changed:
                        self._changed.wait(FETCH_WAIT_S)
                    continue
                for message in messages:
                    event = topic_event(message, self.pubsub_name)
                    with self._changed:
                        self._in_flight.setdefault(event.id, collections.deque()).append(message)
                        self._count += 1
                    self._on_event(event)
        except Exception:  # noqa: BLE001 - the stream ends; the backend redelivers what it holds
            log.exception("topic stream %s/%s failed", self.pubsub_name, self.topic)
        finally:
            self._finish()

    def _finish(self) -> None:
        with self._changed:
            self._closed = True
            left = [message for messages in self._in_flight.values() for message in messages]
            self._in_flight.clear()
            self._count = 0
        for message in left:  # unanswered: to another consumer of the group now, not after a timeout
            try:
                self._subscription.nack(message, 0.0)
            except ComponentError as error:
                log.warning("topic stream %s/%s: returning message %s failed: %s", self.pubsub_name, self.topic,
                            message.id, error)
        try:
            self._subscription.close()
        except ComponentError as error:
            log.warning("topic stream %s/%s: closing failed: %s", self.pubsub_name, self.topic, error)
        self._on_end()

    def processed(self, event_id: str, status: int, *, dead_letter: bool = True) -> None:
        """The application's answer for event `event_id` (blocking: a backend round trip). A DROP
        with `dead_letter` False is acknowledged without a dead letter (an app that does not
        implement the topic); a RETRY past `max_attempts` is a DROP."""
        with self._changed:
            messages = self._in_flight.get(event_id)
            if not messages:
                raise invalid(f"event_processed.id {event_id!r} is not an event this stream is waiting for")
            message = messages.popleft()
            if not messages:
                del self._in_flight[event_id]
            self._count -= 1
            self._changed.notify_all()
        with mapped(f"answering event {event_id!r} of topic {self.topic!r}", "ERR_PUBSUB_EVENTS_SER"):
            if status == Outcome.RETRY and self.max_attempts is not None and message.attempt >= self.max_attempts:
                log.warning("topic %s/%s: event %s failed %d times: dropped%s", self.pubsub_name, self.topic, event_id,
                            message.attempt, f" to {self.dead_letter_topic!r}" if self.dead_letter_topic else "")
                status = Outcome.DROP
            if status == Outcome.SUCCESS:
                self._subscription.ack(message)
            elif status == Outcome.DROP:
                if self.dead_letter_topic and dead_letter:
                    self.pubsub.publish(self.dead_letter_topic, message.data, message.metadata)
                self._subscription.ack(message)
            else:  # RETRY, or a status this host does not know: deliver it again later
                delay = min(RETRY_DELAY_S * 2 ** max(message.attempt - 1, 0), MAX_RETRY_DELAY_S)
                self._subscription.nack(message, delay)

    def drain(self) -> None:
        """Fetches no more; the stream ends once the events in flight are answered."""
        with self._changed:
            self._draining = True
            self._changed.notify_all()

    def close(self) -> None:
        """Ends the stream without waiting: its thread returns unanswered events and calls `on_end`."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()


class TopicStreams:
    """Opens streams (validated as the publish API does) and ends them all at shutdown."""

    def __init__(self, app_id: str, pubsub_for: Callable[[str, str], Any]):
        self.app_id = app_id
        self._pubsub_for = pubsub_for  # (pubsub name, topic) -> component, or ApiError
        self._open: set[TopicStream] = set()
        self._lock = threading.Lock()

    def open(self, pubsub_name: str, topic: str, metadata: Mapping[str, str], dead_letter_topic: str,
             on_event: Callable[[TopicEvent], None], on_end: Callable[[], None],
             max_attempts: int | None = None) -> TopicStream:
        pubsub = self._pubsub_for(pubsub_name, topic)
        for key in metadata:
            raise invalid(f"SubscribeTopicEventsRequestInitial metadata {key!r} is not supported by this host")
        if dead_letter_topic == topic:
            raise invalid("dead_letter_topic must differ from the topic")
        consumer = f"{self.app_id}-stream-{uuid.uuid4().hex[:12]}"
        with mapped(f"subscribing to topic {topic!r} of pubsub {pubsub_name!r}", "ERR_PUBSUB_SUBSCRIBE"):
            subscription = pubsub.subscribe(topic, self.app_id, consumer)

        def ended() -> None:
            with self._lock:
                self._open.discard(stream)
            on_end()

        stream = TopicStream(pubsub, pubsub_name, topic, subscription, dead_letter_topic, on_event, ended, max_attempts)
        with self._lock:
            self._open.add(stream)
        stream.start()
        return stream

    def close(self) -> None:
        with self._lock:
            streams = list(self._open)
        for stream in streams:
            stream.close()

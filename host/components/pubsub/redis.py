"""Pub/sub on Redis Streams, laid out as Dapr's `pubsub.redis` component, so this host and a Dapr
or Layotto sidecar on the same Redis can publish to and consume from each other's topics.

- publish: `XADD <prefix><topic> [MAXLEN ~ n] * data <payload> [metadata <json object>]`;
- a group is a Redis consumer group (`XGROUP CREATE <stream> <group> 0 MKSTREAM`: a new group reads
  the stream from its start); a consumer reads with `XREADGROUP ... BLOCK` on a connection of its own,
  so a long poll never holds a pooled connection;
- ack is `XACK`. What a consumer read and did not ack stays in the group's pending entries list
  (in Redis, so it survives this host dying or restarting) and is redelivered once it has been idle
  for processing_timeout.

Redelivery is XPENDING + XCLAIM, as Dapr does, rather than XAUTOCLAIM: `XPENDING ... IDLE <timeout>`
lists the due entries *with their delivery counts* (XAUTOCLAIM does not report them), and XCLAIM
with the same min-idle time claims each for exactly one consumer even when several reclaim at once
(the first claim resets the entry's idle time). It runs inside `fetch`, at most every
redeliver_interval per subscription, so there is no background thread; a message's `attempt` is its
delivery count before the claim plus one.

nack(delay) keeps the entry pending and back-dates its idle time, `XCLAIM ... 0 <id> IDLE
<timeout - delay> JUSTID` (JUSTID: not counted as a delivery), so the normal reclaim finds it due
exactly `delay` later; nothing but Redis remembers it. A delay longer than processing_timeout is
served as processing_timeout (an entry idle that long is due, whatever else), and a subscription
that nacks reclaims on time for it rather than at its next redeliver_interval tick.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from host.components._redis import RedisClient, RedisSettings, parse_duration_ms, settings_from_layotto
from host.components.base import ComponentContext
from host.components.errors import ComponentError, InvalidRequest
from host.components.pubsub.base import (
    Message,
    PubSubConfig,
    check_fetch,
    check_metadata,
    check_subscriber,
    check_topic,
)
from host.lazy import lazy_module

if TYPE_CHECKING:
    import redis
else:
    redis = lazy_module("redis")  # redis-py is imported when a Redis component is first used (start-up time)


class Config(RedisSettings, PubSubConfig):
    type: Literal["redis"]
    redeliver_interval_ms: int = Field(15_000, gt=0)  # Dapr's redeliverInterval (its 0 = never is refused)
    max_len_approx: int | None = Field(None, gt=0)  # XADD MAXLEN ~ n: Redis trims the oldest entries
    stream_prefix: str = ""  # prepended to every topic's stream key
    consumer_id: str = ""  # Dapr's consumerID; unused here (subscribe names the group), kept for config parity


def from_layotto(metadata: dict[str, str]) -> dict[str, Any]:
    fields = settings_from_layotto(metadata)
    if metadata.get("consumerID"):
        fields["consumer_id"] = metadata["consumerID"]
    if metadata.get("processingTimeout"):
        fields["processing_timeout_ms"] = parse_duration_ms(metadata["processingTimeout"])
    if metadata.get("redeliverInterval"):
        fields["redeliver_interval_ms"] = parse_duration_ms(metadata["redeliverInterval"])
    if metadata.get("maxLenApprox"):
        fields["max_len_approx"] = int(metadata["maxLenApprox"])
    return fields


class Backend:
    def __init__(self, config: Config, context: ComponentContext):
        self.config = config
        self.context = context
        self._client = RedisClient(config)
        self._subscriptions: set[_Subscription] = set()
        self._lock = threading.Lock()
        self._closed = False

    def stream_key(self, topic: str) -> str:
        return self.config.stream_prefix + topic

    def publish(self, topic: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None:
        check_topic(topic)
        copied = check_metadata(metadata)
        self._check_open()
        command: list[str | bytes | int] = ["XADD", self.stream_key(topic)]
        if self.config.max_len_approx is not None:
            command += ["MAXLEN", "~", self.config.max_len_approx]
        command += ["*", "data", bytes(data)]
        if copied:  # Dapr writes the field only when there is metadata
            command += ["metadata", json.dumps(copied, separators=(",", ":"))]
        self._client.command(*command)

    def subscribe(self, topic: str, group: str, consumer: str) -> _Subscription:
        check_subscriber(topic, group, consumer)
        self._check_open()
        self.create_group(self.stream_key(topic), group)
        subscription = _Subscription(self, topic, group, consumer)
        with self._lock:
            self._subscriptions.add(subscription)
        return subscription

    def create_group(self, key: str, group: str) -> None:
        """The group reading `key` from its first entry; an existing group is kept as it is."""
        try:
            self._client.command_raw("XGROUP", "CREATE", key, group, "0", "MKSTREAM")
        except redis.ResponseError as error:
            if not str(error).startswith("BUSYGROUP"):
                raise ComponentError(f"redis {self._client.address}: {error}") from None

    def _check_open(self) -> None:
        if self._closed:
            raise ComponentError("redis pub/sub is closed")

    def _forget(self, subscription: _Subscription) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)

    def health(self) -> tuple[bool, str]:
        if self._closed:
            return False, "redis pub/sub is closed"
        return self._client.health()

    def close(self) -> None:
        self._closed = True
        with self._lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.close()
        self._client.close()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _fields(raw: Any) -> dict[bytes, Any]:
    """An entry's field/value list (RESP2) or map (RESP3) as a dict."""
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=False))


def _metadata(raw: Any) -> dict[str, str]:
    """The `metadata` field Dapr writes (a JSON object of strings); unreadable metadata is dropped
    rather than failing the message."""
    if raw is None:
        return {}
    try:
        decoded = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(decoded, dict):
        return {}
    return {str(key): value if isinstance(value, str) else json.dumps(value) for key, value in decoded.items()}


class _Subscription:
    def __init__(self, backend: Backend, topic: str, group: str, consumer: str):
        self._backend = backend
        self._client = backend._client
        self.topic = topic
        self.group = group
        self.consumer = consumer
        self._key = backend.stream_key(topic)
        self._timeout_ms = backend.config.processing_timeout_ms
        self._interval_s = backend.config.redeliver_interval_ms / 1000
        self._socket_timeout_s = backend.config.timeout_ms / 1000
        self._connection = self._client.dedicated_connection()
        self._fetching = threading.Lock()  # one XREADGROUP at a time on the dedicated connection
        self._closed = False
        self._next_reclaim = 0.0  # monotonic time of the next XPENDING check; the first fetch checks

    def fetch(self, max_messages: int, timeout_s: float) -> list[Message]:
        check_fetch(max_messages, timeout_s)
        with self._fetching:
            if self._closed:
                raise ComponentError(f"the subscription to {self.topic!r} is closed")
            try:
                return self._fetch(max_messages, time.monotonic() + timeout_s)
            finally:
                if self._closed:  # closed meanwhile: a read may have reconnected
                    self._connection.disconnect()

    def _fetch(self, max_messages: int, deadline: float) -> list[Message]:
        while True:
            now = time.monotonic()
            taken: list[Message] = []
            if now >= self._next_reclaim:
                taken = self._reclaim(max_messages)
                # A full batch may mean more are due: check again on the next fetch.
                self._next_reclaim = now if len(taken) == max_messages else now + self._interval_s
            if len(taken) < max_messages and not self._closed:
                # Block only while nothing is in hand, and wake for the next reclaim check.
                wait_s = 0.0 if taken else min(deadline, self._next_reclaim) - time.monotonic()
                taken += self._read(max_messages - len(taken), wait_s)
            if taken or self._closed or time.monotonic() >= deadline:
                return taken

    def _reclaim(self, limit: int) -> list[Message]:
        """Claim this group's entries idle >= processing_timeout (unacked by a consumer that died,
        gave up, or nacked them) for this consumer."""
        try:
            due = self._client.command_raw("XPENDING", self._key, self.group, "IDLE", self._timeout_ms,
                                           "-", "+", limit)
        except redis.ResponseError as error:
            return self._group_lost(error)
        if not due:
            return []
        deliveries = {entry[0]: int(entry[3]) for entry in due}
        claimed = self._client.command("XCLAIM", self._key, self.group, self.consumer, self._timeout_ms,
                                       *deliveries)
        messages: list[Message] = []
        for entry in claimed or []:
            if entry is None:
                continue
            entry_id, raw_fields = entry[0], entry[1]
            if raw_fields is None:  # Redis < 7 claims a trimmed entry with no fields: drop it
                self._client.command("XACK", self._key, self.group, entry_id)
                continue
            messages.append(self._message(entry_id, raw_fields, deliveries.get(entry_id, 0) + 1))
        return messages

    def _read(self, count: int, wait_s: float) -> list[Message]:
        """New entries for this group (XREADGROUP `>`), blocking up to `wait_s` when it is positive."""
        command: list[str | int] = ["XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count]
        block_ms = math.ceil(wait_s * 1000) if wait_s > 0 else 0
        if block_ms > 0:  # BLOCK 0 would mean forever
            command += ["BLOCK", block_ms]
        command += ["STREAMS", self._key, ">"]
        connection = self._connection
        try:
            connection.send_command(*command)
            reply = connection.read_response(timeout=block_ms / 1000 + self._socket_timeout_s)
        except redis.ResponseError as error:
            return self._group_lost(error)
        except (redis.RedisError, OSError, ValueError, AttributeError) as error:
            # ValueError/AttributeError: close() disconnected the socket under the read.
            connection.disconnect()
            if self._closed:
                return []
            raise ComponentError(f"redis {self._client.address}: {error}") from None
        if not reply:
            return []
        streams = reply.items() if isinstance(reply, dict) else reply  # RESP3 map or RESP2 pairs
        return [self._message(entry[0], entry[1], 1)
                for _, entries in streams for entry in entries if entry[1] is not None]

    def _group_lost(self, error: redis.ResponseError) -> list[Message]:
        """Someone deleted the stream or the group (UNBLOCKED: the stream went away under a blocked
        read): recreate it (Dapr does too) and go on."""
        if not str(error).startswith(("NOGROUP", "UNBLOCKED")):
            raise ComponentError(f"redis {self._client.address}: {error}") from None
        self._backend.create_group(self._key, self.group)
        return []

    def _message(self, entry_id: Any, raw_fields: Any, attempt: int) -> Message:
        fields = _fields(raw_fields)
        data = fields.get(b"data", b"")
        return Message(id=_text(entry_id), topic=self.topic,
                       data=data if isinstance(data, bytes) else str(data).encode(),
                       metadata=_metadata(fields.get(b"metadata")), attempt=attempt)

    def _entry_id(self, message: Message) -> str:
        if message.topic != self.topic:
            raise InvalidRequest(f"message {message.id} is from topic {message.topic!r}, not {self.topic!r}")
        return message.id

    def ack(self, message: Message) -> None:
        self._client.command("XACK", self._key, self.group, self._entry_id(message))

    def ack_many(self, messages: Sequence[Message]) -> None:
        if messages:  # one XACK for the batch: one round trip instead of one per message
            self._client.command("XACK", self._key, self.group, *[self._entry_id(message) for message in messages])

    def nack(self, message: Message, delay_s: float) -> None:
        delay_ms = min(max(math.ceil(delay_s * 1000), 0), self._timeout_ms)
        # Back-date the entry's idle time so the reclaim finds it due `delay_ms` from now; an
        # entry that is no longer pending (acked meanwhile) is left alone.
        self._client.command("XCLAIM", self._key, self.group, self.consumer, 0, self._entry_id(message),
                             "IDLE", self._timeout_ms - delay_ms, "JUSTID")
        self._next_reclaim = min(self._next_reclaim, time.monotonic() + delay_ms / 1000)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._backend._forget(self)
        # Disconnecting wakes a fetch blocked in XREADGROUP (its read fails and it returns []).
        self._connection.disconnect()

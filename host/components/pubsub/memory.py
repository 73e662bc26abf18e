"""Pub/sub inside this process (Layotto's `in-memory` pub/sub): for one host, tests and development.

It keeps the same semantics as the durable backends, so code written against it behaves the same
on Redis or NATS: a topic is a log of messages, every group reads the whole log from the start,
and a message a consumer took stays pending for its group (with a deadline and a delivery count)
until it is acked; once due (processing_timeout passed, or a nack's delay) any consumer of the
group may take it again. Nothing survives the process. Deadlines follow the monotonic clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

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


class Config(PubSubConfig):
    type: Literal["memory", "in-memory"]
    # Per topic; the oldest messages are dropped beyond it (as Redis's MAXLEN), even if unread.
    max_len: int | None = Field(10_000, gt=0)


def from_layotto(metadata: dict[str, str]) -> dict[str, Any]:
    return {}


@dataclass(slots=True)
class _Pending:
    consumer: str
    due: float  # monotonic time from which any consumer of the group may take it again
    deliveries: int


@dataclass(slots=True)
class _Group:
    next_seq: int = 1  # the first message this group has not read yet
    pending: dict[int, _Pending] = field(default_factory=dict)


@dataclass(slots=True)
class _Topic:
    entries: dict[int, tuple[bytes, dict[str, str]]] = field(default_factory=dict)  # seq -> (data, metadata)
    next_seq: int = 1
    groups: dict[str, _Group] = field(default_factory=dict)


class Backend:
    def __init__(self, config: Config, context: ComponentContext):
        self.config = config
        self.context = context
        self._topics: dict[str, _Topic] = {}
        # One condition for everything: publishers and nacks wake every waiting fetch, which
        # then re-checks its own group. Simple, and cheap at in-process scale.
        self._changed = threading.Condition(threading.Lock())
        self._closed = False
        self._timeout_s = config.processing_timeout_ms / 1000

    def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = _Topic()
        return topic

    def publish(self, topic: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None:
        check_topic(topic)
        copied = check_metadata(metadata)
        with self._changed:
            if self._closed:
                raise ComponentError("memory pub/sub is closed")
            log = self._topic(topic)
            log.entries[log.next_seq] = (bytes(data), copied)
            log.next_seq += 1
            limit = self.config.max_len
            if limit is not None and len(log.entries) > limit:
                del log.entries[next(iter(log.entries))]  # dicts keep insertion order: the oldest
            self._changed.notify_all()

    def subscribe(self, topic: str, group: str, consumer: str) -> _Subscription:
        check_subscriber(topic, group, consumer)
        with self._changed:
            if self._closed:
                raise ComponentError("memory pub/sub is closed")
            self._topic(topic).groups.setdefault(group, _Group())
        return _Subscription(self, topic, group, consumer)

    # -- called by subscriptions, holding `_changed` ------------------------------------------

    def _take(self, topic: str, group: str, consumer: str, limit: int, now: float) -> list[Message]:
        """Due redeliveries first (oldest first), then unread messages; each becomes pending."""
        log = self._topics[topic]
        state = log.groups[group]
        taken: list[Message] = []
        for seq in sorted(seq for seq, entry in state.pending.items() if entry.due <= now):
            if len(taken) == limit:
                break
            stored = log.entries.get(seq)
            if stored is None:  # trimmed while pending: nothing left to deliver
                del state.pending[seq]
                continue
            entry = state.pending[seq]
            entry.consumer, entry.due, entry.deliveries = consumer, now + self._timeout_s, entry.deliveries + 1
            taken.append(Message(str(seq), topic, stored[0], dict(stored[1]), entry.deliveries))
        while len(taken) < limit and state.next_seq < log.next_seq:
            seq = state.next_seq
            state.next_seq += 1
            stored = log.entries.get(seq)
            if stored is None:  # trimmed before this group read it
                continue
            state.pending[seq] = _Pending(consumer, now + self._timeout_s, 1)
            taken.append(Message(str(seq), topic, stored[0], dict(stored[1]), 1))
        return taken

    def _next_due(self, topic: str, group: str) -> float | None:
        pending = self._topics[topic].groups[group].pending
        return min((entry.due for entry in pending.values()), default=None)

    def _pending(self, topic: str, group: str) -> dict[int, _Pending]:
        return self._topics[topic].groups[group].pending

    def health(self) -> tuple[bool, str]:
        return (False, "memory pub/sub is closed") if self._closed else (True, "memory")

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._topics.clear()
            self._changed.notify_all()


class _Subscription:
    def __init__(self, backend: Backend, topic: str, group: str, consumer: str):
        self._backend = backend
        self.topic = topic
        self.group = group
        self.consumer = consumer
        self._closed = False

    def fetch(self, max_messages: int, timeout_s: float) -> list[Message]:
        check_fetch(max_messages, timeout_s)
        backend = self._backend
        deadline = time.monotonic() + timeout_s
        with backend._changed:
            if self._closed or backend._closed:
                raise ComponentError(f"the subscription to {self.topic!r} is closed")
            while True:
                if self._closed or backend._closed:  # closed under the fetch (as the others do)
                    return []
                now = time.monotonic()
                taken = backend._take(self.topic, self.group, self.consumer, max_messages, now)
                if taken or now >= deadline:
                    return taken
                # Sleep until woken by a publish or nack, the next pending deadline, or our own.
                next_due = backend._next_due(self.topic, self.group)
                wake = deadline if next_due is None else min(deadline, next_due)
                backend._changed.wait(max(wake - now, 0.001))

    def _seq(self, message: Message) -> int:
        if message.topic != self.topic:
            raise InvalidRequest(f"message {message.id} is from topic {message.topic!r}, not {self.topic!r}")
        try:
            return int(message.id)
        except ValueError:
            raise InvalidRequest(f"not a message id of this backend: {message.id!r}") from None

    def ack(self, message: Message) -> None:
        seq = self._seq(message)
        backend = self._backend
        with backend._changed:
            if not backend._closed:
                backend._pending(self.topic, self.group).pop(seq, None)  # acking twice is harmless

    def ack_many(self, messages: Sequence[Message]) -> None:
        for message in messages:
            self.ack(message)

    def nack(self, message: Message, delay_s: float) -> None:
        seq = self._seq(message)
        backend = self._backend
        with backend._changed:
            if backend._closed:
                return
            entry = backend._pending(self.topic, self.group).get(seq)
            if entry is not None:
                entry.due = time.monotonic() + max(delay_s, 0.0)
                backend._changed.notify_all()  # waiting fetches re-compute when to wake

    def close(self) -> None:
        # What this consumer holds stays pending with its deadline, so another consumer takes it.
        with self._backend._changed:
            self._closed = True
            self._backend._changed.notify_all()

"""The pub/sub capability's interface: topics with consumer groups and at-least-once delivery.

Every group gets every message published to a topic; the consumers of one group share them. A
message is redelivered until a consumer of its group acks it: after a `nack` (once its delay has
passed) and after `processing_timeout` when the consumer that took it died or never answered. The
backends count deliveries themselves (Redis's pending entries, JetStream's `num_delivered`), so
`attempt` survives a host restart where the backend can. Delivery is pulled (`fetch`), so the
caller decides how many messages are in flight and on which threads they run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pydantic import Field

from host.components.base import BackendConfig
from host.components.errors import InvalidRequest

DEFAULT_PROCESSING_TIMEOUT_MS = 60_000  # Dapr's processingTimeout


@dataclass(frozen=True, slots=True)
class Message:
    id: str  # the backend's message id (stream entry id, JetStream stream sequence, ...)
    topic: str
    data: bytes  # exactly the published bytes (the CloudEvent JSON envelope in practice)
    metadata: dict[str, str]
    attempt: int  # 1 on first delivery


class Subscription(Protocol):
    """One consumer of one group on one topic. Thread-safe; fetches are served one at a time."""

    def fetch(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to `max_messages` new messages and redeliveries that are due, waiting up to
        `timeout_s` for the first one; [] when none came."""

    def ack(self, message: Message) -> None:
        """Done with `message`: it is never delivered to this group again."""

    def ack_many(self, messages: Sequence[Message]) -> None:
        """`ack` for each of `messages`, in as few round trips as the backend allows."""

    def nack(self, message: Message, delay_s: float) -> None:
        """Deliver `message` again (to a consumer of this group) no sooner than `delay_s`."""

    def close(self) -> None:
        """Stop consuming; messages fetched but not acked are redelivered after processing_timeout."""


class PubSub(Protocol):
    def publish(self, topic: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None:
        """Store the message durably (as far as the backend goes) before returning."""

    def subscribe(self, topic: str, group: str, consumer: str) -> Subscription:
        """Join `group` on `topic` as `consumer`; a new group starts at the topic's oldest message."""

    def health(self) -> tuple[bool, str]: ...

    def close(self) -> None: ...


class PubSubConfig(BackendConfig):
    """The fields every pub/sub backend's Config has."""

    # How long a consumer may hold a message before it is given to another consumer of its group.
    processing_timeout_ms: int = Field(DEFAULT_PROCESSING_TIMEOUT_MS, gt=0)


def check_topic(topic: str) -> None:
    if not topic:
        raise InvalidRequest("the topic must not be empty")


def check_subscriber(topic: str, group: str, consumer: str) -> None:
    check_topic(topic)
    if not group:
        raise InvalidRequest("the consumer group must not be empty")
    if not consumer:
        raise InvalidRequest("the consumer name must not be empty")


def check_fetch(max_messages: int, timeout_s: float) -> None:
    if max_messages < 1:
        raise InvalidRequest(f"max_messages must be at least 1, got {max_messages}")
    if timeout_s < 0:
        raise InvalidRequest(f"the fetch timeout must not be negative, got {timeout_s}")


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """A plain str -> str copy (the caller may mutate its mapping afterwards)."""
    if not metadata:
        return {}
    copy: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidRequest(f"metadata keys and values must be strings, got {key!r}: {value!r}")
        copy[key] = value
    return copy

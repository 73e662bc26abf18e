"""Publish/subscribe (Dapr's and Layotto's PublishEvent, delivered to functions): the interface,
the CloudEvents envelope and the backends by type name."""

from __future__ import annotations

from host.components.pubsub.base import Message, PubSub, PubSubConfig, Subscription

BACKENDS: dict[str, str] = {
    "memory": "host.components.pubsub.memory",
    "redis": "host.components.pubsub.redis",
    "nats": "host.components.pubsub.nats",
}

__all__ = ["BACKENDS", "Message", "PubSub", "PubSubConfig", "Subscription"]

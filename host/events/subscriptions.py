"""The configured subscriptions (`[[subscriptions]]`): one Subscriber each, started after the
functions are deployed and stopped before their pools close."""

from __future__ import annotations

import asyncio
from typing import Any

from host.components.catalog import Components
from host.config import SubscriptionConfig
from host.events.delivery import Subscriber
from host.functions.dispatch import Dispatcher


class Events:
    def __init__(self, subscriptions: list[SubscriptionConfig], components: Components, dispatcher: Dispatcher):
        # Every subscription names a configured pubsub: the config model checked it.
        pubsubs = components.of("pubsub")
        self.subscribers = [Subscriber(spec, pubsubs[spec.pubsub], dispatcher, components.app_id, index)
                            for index, spec in enumerate(subscriptions)]

    def start(self) -> None:
        for subscriber in self.subscribers:
            subscriber.start()

    async def stop(self, grace_s: float) -> None:
        await asyncio.gather(*(subscriber.stop(grace_s) for subscriber in self.subscribers))

    def describe(self) -> list[dict[str, Any]]:
        return [subscriber.describe() for subscriber in self.subscribers]

"""Delivery of pub/sub events to the application (issue 12 item 4): the application tells which
topics it subscribes to (Dapr's and Layotto's `AppCallback.ListTopicSubscriptions`, or Dapr's HTTP
`GET /dapr/subscribe`) and receives each event (`OnTopicEvent`, or an HTTP POST of the CloudEvent).

The transport is an `AppChannel` (host/grpc/appcallback.py, host/http/dapr/app_channel.py); this
module is the rest, the same for all of them. The subscriptions are asked for when the host starts
and again every `DISCOVERY_RETRY_S` until the application answers (it may start after the host);
then each is one consumer of the app-id consumer group (host/api/topics.py). Outcomes, Dapr's
rules: SUCCESS acknowledges; RETRY, or any error of the call, redelivers with a doubling back-off,
and after `MAX_ATTEMPTS` the event is dropped; DROP acknowledges, after re-publishing the event to
the subscription's dead-letter topic when it has one; an application that does not implement the
topic (gRPC UNIMPLEMENTED, HTTP 404) drops it without a dead letter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from host.api import ApiError, RuntimeApi
from host.api.feed import END, ThreadFeed
from host.api.topics import Outcome, TopicEvent, TopicStream

log = logging.getLogger(__name__)

DISCOVERY_RETRY_S = 1.0
MAX_ATTEMPTS = 5
_DELIVERY = "app-delivery-event"  # the name of the tasks that deliver one event each


@dataclass(frozen=True)
class AppSubscription:
    pubsub_name: str
    topic: str
    path: str = ""  # Dapr's route: the gRPC `path`, the HTTP route
    dead_letter_topic: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


class NotImplementedByApp(Exception):
    """The application does not handle this topic (gRPC UNIMPLEMENTED, HTTP 404): drop the event."""


class AppChannel(Protocol):
    name: str  # how logs name the application's endpoint

    async def subscriptions(self) -> list[AppSubscription]:
        """What the application subscribes to; raises any exception while it cannot be reached."""

    async def deliver(self, subscription: AppSubscription, event: TopicEvent) -> Outcome:
        """The application's answer; raises NotImplementedByApp, or anything else to retry."""

    async def close(self) -> None: ...


class AppDelivery:
    def __init__(self, api: RuntimeApi, channel: AppChannel):
        self.api = api
        self.channel = channel
        self.subscriptions: list[AppSubscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._streams: list[TopicStream] = []
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self._spawn(self._discover())

    def _spawn(self, work: Coroutine[Any, Any, None], name: str = "app-delivery") -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _discover(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                subscriptions = await self.channel.subscriptions()
                break
            except Exception as error:  # noqa: BLE001 - the app may not be up yet: try again
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    log.warning("app %s: listing its topic subscriptions failed (%s); retrying every %.0fs",
                                self.channel.name, error, DISCOVERY_RETRY_S)
                try:
                    await asyncio.wait_for(self._stopping.wait(), DISCOVERY_RETRY_S)
                except TimeoutError:
                    pass
        else:
            return
        self.subscriptions = subscriptions
        log.info("app %s subscribes to %d topic(s): %s", self.channel.name, len(subscriptions),
                 ", ".join(f"{s.pubsub_name}/{s.topic}" for s in subscriptions) or "none")
        for subscription in subscriptions:
            if subscription.metadata:
                log.warning("app subscription %s/%s: metadata %s is not acted on by this host",
                            subscription.pubsub_name, subscription.topic, sorted(subscription.metadata))
            try:
                await self._subscribe(subscription)
            except ApiError as error:
                log.error("app subscription %s/%s refused: %s", subscription.pubsub_name, subscription.topic,
                          error.message)

    async def _subscribe(self, subscription: AppSubscription) -> None:
        feed: ThreadFeed[TopicEvent] = ThreadFeed()
        stream: TopicStream = await self.api.run(
            self.api.pubsub.streams.open, subscription.pubsub_name, subscription.topic, {},
            subscription.dead_letter_topic, feed.put, feed.end, MAX_ATTEMPTS)
        self._streams.append(stream)
        self._spawn(self._consume(subscription, stream, feed))

    async def _consume(self, subscription: AppSubscription, stream: TopicStream, feed: ThreadFeed[TopicEvent]) -> None:
        while (event := await feed.get()) is not END:
            self._spawn(self._deliver(subscription, stream, event), _DELIVERY)  # type: ignore[arg-type]

    async def _deliver(self, subscription: AppSubscription, stream: TopicStream, event: TopicEvent) -> None:
        dead_letter = True
        try:
            outcome = await self.channel.deliver(subscription, event)
        except NotImplementedByApp:
            outcome, dead_letter = Outcome.DROP, False
        except Exception as error:  # noqa: BLE001 - any failure of the call is a retry
            log.info("app %s: event %s of %s/%s failed (%s): retried", self.channel.name, event.id,
                     subscription.pubsub_name, subscription.topic, error)
            outcome = Outcome.RETRY
        try:
            await self.api.run(stream.processed, event.id, int(outcome), dead_letter=dead_letter)
        except ApiError as error:
            log.warning("app %s: answering event %s failed: %s", self.channel.name, event.id, error.message)

    async def stop(self, grace_s: float) -> None:
        """No new deliveries; those in flight get `grace_s`; unanswered events are redelivered."""
        self._stopping.set()
        for stream in self._streams:
            stream.drain()
        deliveries = {task for task in self._tasks if task.get_name().startswith(_DELIVERY)}
        if deliveries:
            await asyncio.wait(deliveries, timeout=grace_s)
        for stream in self._streams:
            stream.close()
        for task in set(self._tasks):
            task.cancel()
        await self.channel.close()

"""Events into functions: one consumer per subscription pulls messages from its pub/sub component
and delivers each to the function as a request in the CloudEvents HTTP binary binding, through the
one call path (pools, limits and deadlines apply; a reload is followed to the new version).

A 2xx acknowledges. Anything else (the function's answer, a trap, a deadline, no such function
right now) is redelivered after a back-off that doubles with each attempt; after the last attempt
the message is parked in the dead-letter topic (when there is one) with the reason and the number
of attempts, then acknowledged. A message that is not a CloudEvent cannot succeed later: it goes
to the dead-letter topic at once. Nothing is acknowledged before its outcome is known, so a host
that stops or dies mid-delivery loses nothing: the backend redelivers it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from abi import HttpRequest, HttpResponse
from host.components.errors import ComponentError, InvalidRequest
from host.components.pubsub import Message, PubSub, Subscription
from host.components.pubsub.cloudevents import parse
from host.config import SubscriptionConfig
from host.functions.dispatch import Dispatcher, DispatchError
from host.metrics.counts import OutcomeCounts
from host.metrics.events import DELIVERY_BUCKETS
from host.tracing.context import event_headers

log = logging.getLogger(__name__)

FETCH_WAIT_S = 0.5  # how long one fetch blocks: also how quickly a consumer notices it must stop
RETRY_BROKEN_BACKEND_S = 1.0
_NOT_A_CLOUDEVENT = 0  # "status" of a message that can never be delivered
# A batch goes one message after another in the consumer thread only while deliveries take about
# this long at most (a moving average of their wall time): a function that waits (on an upstream, a
# slow store) gets its messages concurrently, whatever its CPU time.
SERIAL_DELIVERY_MAX_S = 0.001
_AVERAGE_WEIGHT = 0.1


@dataclass
class SubscriptionStats:
    delivered: int = 0
    redelivered: int = 0
    dead_lettered: int = 0
    dropped: int = 0  # given up with no dead-letter topic to park it in
    last_error: str = ""
    latency: OutcomeCounts = field(default_factory=lambda: OutcomeCounts(DELIVERY_BUCKETS), repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, name: str, error: str = "") -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)
            if error:
                self.last_error = error


class Subscriber:
    """The consumer of one subscription: a thread that fetches, and deliveries on the event loop."""

    def __init__(self, spec: SubscriptionConfig, pubsub: PubSub, dispatcher: Dispatcher, app_id: str, index: int):
        self.spec = spec
        self.pubsub = pubsub
        self.dispatcher = dispatcher
        self.group = spec.group or f"{app_id}.{spec.function}"
        # The host name too: in containers every pod's host is often pid 1 (delivery would still be
        # right — re-claims go by idle time — but the group's consumers could not be told apart).
        self.consumer = f"{app_id}-{socket.gethostname()}-{os.getpid()}-{index}"
        self.stats = SubscriptionStats()
        self._stop = threading.Event()
        self._recent_s = float("inf")  # moving average of a delivery's wall time (unknown at first)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._consume, name=f"events-{self.spec.function}", daemon=True)
        self._thread.start()

    async def stop(self, grace_s: float) -> None:
        """Stop fetching; deliveries in flight finish (or are redelivered later), bounded by `grace_s`."""
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, grace_s)

    def describe(self) -> dict[str, Any]:
        spec = self.spec
        return {"function": spec.function, "pubsub": spec.pubsub, "topic": spec.topic, "group": self.group,
                "dead_letter_topic": spec.dead_letter_topic or None, "max_attempts": spec.max_attempts,
                "delivered": self.stats.delivered, "redelivered": self.stats.redelivered,
                "dead_lettered": self.stats.dead_lettered, "dropped": self.stats.dropped,
                "last_error": self.stats.last_error or None}

    # -- in the consumer thread ----------------------------------------------------------------------
    def _consume(self) -> None:
        subscription: Subscription | None = None
        while not self._stop.is_set():
            try:
                if subscription is None:
                    subscription = self.pubsub.subscribe(self.spec.topic, self.group, self.consumer)
                messages = subscription.fetch(self.spec.concurrency, FETCH_WAIT_S)
            except ComponentError as error:
                self.stats.last_error = str(error)
                log.warning("subscription %s/%s -> %s: %s", self.spec.pubsub, self.spec.topic, self.spec.function,
                            error)
                self._stop.wait(RETRY_BROKEN_BACKEND_S)
                continue
            if messages:
                self._deliver_batch(subscription, messages)
        if subscription is not None:
            try:
                subscription.close()
            except ComponentError as error:
                log.warning("closing subscription %s/%s: %s", self.spec.pubsub, self.spec.topic, error)

    def _deliver_batch(self, subscription: Subscription, messages: list[Message]) -> None:
        """Deliver the batch; acknowledge what succeeded in one call once all are done (one round
        trip for the batch), and settle each failure on its own.

        A function whose requests cost microseconds of CPU (its policy's `cheap`) and whose
        deliveries are quick (SERIAL_DELIVERY_MAX_S) gets the batch one message after another in
        this thread, as a nested call does: handing each to the event loop and on to a guest thread
        would cost more than running it. Any other function gets the batch concurrently, on its
        instances, through the event loop."""
        if self._runs_here():
            outcomes = [self._deliver_here(message) for message in messages]
        else:
            assert self._loop is not None
            futures = [asyncio.run_coroutine_threadsafe(self._timed(message), self._loop) for message in messages]
            outcomes = [_result(future) for future in futures]
        delivered: list[Message] = []
        for message, (status, reason) in zip(messages, outcomes, strict=True):
            if 200 <= status < 300:
                delivered.append(message)
                continue
            try:
                self._settle(subscription, message, status, reason)
            except ComponentError as error:  # unacked: the backend redelivers it
                log.warning("subscription %s/%s: settling message %s failed: %s", self.spec.pubsub, self.spec.topic,
                            message.id, error)
        if not delivered:
            return
        try:
            subscription.ack_many(delivered)
        except ComponentError as error:  # unacked: the backend redelivers them
            log.warning("subscription %s/%s: acknowledging %d message(s) failed: %s", self.spec.pubsub,
                        self.spec.topic, len(delivered), error)
            return
        for _ in delivered:
            self.stats.count("delivered")

    def _settle(self, subscription: Subscription, message: Message, status: int, reason: str) -> None:
        """A message that was not delivered: redelivered later, or given up (dead-lettered)."""
        spec = self.spec
        if status != _NOT_A_CLOUDEVENT and message.attempt < spec.max_attempts:
            delay_s = min(spec.backoff_ms * 2 ** (message.attempt - 1), spec.max_backoff_ms) / 1000
            subscription.nack(message, delay_s)
            self.stats.count("redelivered", reason)
            log.info("event %s to %s failed (attempt %d of %d): %s; redelivered in %.2fs", message.id,
                     spec.function, message.attempt, spec.max_attempts, reason, delay_s)
            return
        if spec.dead_letter_topic:
            self.pubsub.publish(spec.dead_letter_topic, _dead_letter(message, reason),
                                {"deadletter.reason": reason, "deadletter.attempts": str(message.attempt),
                                 "deadletter.topic": spec.topic})
        subscription.ack(message)
        self.stats.count("dead_lettered" if spec.dead_letter_topic else "dropped", reason)
        log.warning("event %s to %s given up after %d attempt(s): %s%s", message.id, spec.function, message.attempt,
                    reason, f"; parked in {spec.dead_letter_topic!r}" if spec.dead_letter_topic else "; dropped")

    def _runs_here(self) -> bool:
        if self._recent_s > SERIAL_DELIVERY_MAX_S:
            return False
        version = self.dispatcher.router.pick(self.spec.function)
        return version is not None and version.policy.cheap and not version.filter_pools

    def _took(self, seconds: float) -> None:
        """One delivery's wall time: into the metrics and the moving average."""
        self.stats.latency.time(seconds)
        recent = self._recent_s
        self._recent_s = seconds if recent == float("inf") else recent + _AVERAGE_WEIGHT * (seconds - recent)

    def _deliver_here(self, message: Message) -> tuple[int, str]:
        """`_deliver` in this thread (the function runs here, as a nested call would), timed."""
        started = perf_counter()
        try:
            request = self._request(message)
            if not isinstance(request, HttpRequest):
                return request
            try:
                return _outcome(self.dispatcher.call_blocking(self.spec.function, request))
            except Exception as error:  # noqa: BLE001 - a host bug must not stop the consumer
                return self._failure(message, error)
        finally:
            self._took(perf_counter() - started)

    def _request(self, message: Message) -> HttpRequest | tuple[int, str]:
        """The function's request for `message` (CloudEvents binary binding), or the outcome of a
        message that is not a CloudEvent."""
        try:
            event = parse(message.data)
        except InvalidRequest as error:
            return _NOT_A_CLOUDEVENT, f"not a CloudEvent: {error}"
        # The event's trace extension becomes the delivery's traceparent: the publisher's span is its parent.
        return HttpRequest.build("POST", f"/{self.spec.topic}", [*event.binary_headers(),
                                 *event_headers(event.extensions)], event.data, authority="events")

    # -- on the event loop -----------------------------------------------------------------------------
    async def _timed(self, message: Message) -> tuple[int, str]:
        """`_deliver`, its time in the delivery metrics (host/metrics/events.py)."""
        started = perf_counter()
        try:
            return await self._deliver(message)
        finally:
            self._took(perf_counter() - started)

    async def _deliver(self, message: Message) -> tuple[int, str]:
        request = self._request(message)
        if not isinstance(request, HttpRequest):
            return request
        try:
            version = self.dispatcher.find(self.spec.function)
            response = await self.dispatcher.call(version, request)
        except Exception as error:  # noqa: BLE001 - a host bug must not stop the consumer
            return self._failure(message, error)
        return _outcome(response)

    def _failure(self, message: Message, error: Exception) -> tuple[int, str]:
        """The outcome of a delivery the call path refused (its status), or of a host bug (logged, 500).
        Called from the `except` that caught `error`, so the log line carries its traceback."""
        if isinstance(error, DispatchError):
            return error.status, str(error)
        log.exception("delivering event %s to %s", message.id, self.spec.function)
        return 500, f"host error: {error!r}"


def _result(future: concurrent.futures.Future[tuple[int, str]]) -> tuple[int, str]:
    try:
        return future.result()
    except (concurrent.futures.CancelledError, RuntimeError) as error:  # the loop is shutting down
        return 503, f"not delivered: {error!r}"


def _outcome(response: HttpResponse) -> tuple[int, str]:
    body = response.body[:200].decode("utf-8", "replace").strip()
    return response.status, f"function answered HTTP {response.status}" + (f": {body}" if body else "")


def _dead_letter(message: Message, reason: str) -> bytes:
    """The original event with the reason and attempt count as CloudEvents extension attributes."""
    try:
        event = json.loads(message.data)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        return message.data
    event.update({"deadletterreason": reason, "deadletterattempts": message.attempt})
    return json.dumps(event, separators=(",", ":")).encode()

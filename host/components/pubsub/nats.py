"""Pub/sub on NATS JetStream: durable, acked delivery without Redis.

Layout: one stream per topic, named after its subject (`<stream_prefix><topic>`, sanitised into a
legal stream name), holding that one subject; one durable pull consumer per group (explicit ack,
`ack_wait` = processing_timeout, deliver-all so a new group starts at the oldest message, unlimited
redeliveries). JetStream itself does the at-least-once work: it redelivers what is not acked within
ack_wait (a consumer that died, even by SIGKILL), `nak(delay)` schedules a redelivery, and a message's
`num_delivered` is its `attempt`. Publish returns after JetStream acknowledged the store. The
metadata travels as one JSON header (`Wasm-Faas-Metadata`), so it comes back byte for byte.

nats-py is asyncio-only while the interface is called from threads: the backend runs a private
event loop in a daemon thread, and each call submits a coroutine to it and waits with a timeout.
The connection is made lazily (a host starts while NATS is down; health says so and the first use
or health probe connects) and, once up, nats-py reconnects by itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import re
import threading
import time
from collections.abc import Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import Field

from host.components._redis import parse_duration_ms
from host.components.base import ComponentContext
from host.components.errors import ComponentError, InvalidRequest
from host.components.pubsub._loop import EventLoopThread
from host.components.pubsub.base import (
    Message,
    PubSubConfig,
    check_fetch,
    check_metadata,
    check_subscriber,
    check_topic,
)

if TYPE_CHECKING:  # nats-py costs ~0.3 s to import: only configurations that use it pay for it
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

T = TypeVar("T")

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")  # stream and consumer names: no '.', '*', '>', spaces...
_SUBJECT_UNSAFE = re.compile(r"[\s*>]")  # wildcards and whitespace cannot be published to
_RESERVED_HEADER = "nats-"  # JetStream's own headers (dedup ids, expected streams...)
# The metadata travels as one JSON header: NATS header parsing trims values and allows neither
# line breaks nor ':' in names, and metadata must come back exactly as it was published.
METADATA_HEADER = "Wasm-Faas-Metadata"
_MIN_FETCH_S = 0.05  # JetStream needs a positive pull expiry
_RETRY_AFTER_S = 1.0  # after a failed connect, calls fail at once for this long (health probes retry)


class Config(PubSubConfig):
    type: Literal["nats", "jetstream"]
    url: str = "nats://127.0.0.1:4222"
    stream_prefix: str = ""  # prepended to every topic's subject (and so its stream's name)
    timeout_ms: int = Field(5000, gt=0)  # connecting, JetStream API calls, publish acks
    max_msgs: int | None = Field(None, gt=0)  # per stream; JetStream drops the oldest beyond it


def from_layotto(metadata: dict[str, str]) -> dict[str, Any]:
    """Dapr's `pubsub.jetstream` keys this backend has a use for."""
    fields: dict[str, Any] = {}
    if metadata.get("natsURL"):
        fields["url"] = metadata["natsURL"]
    timeout = metadata.get("processingTimeout") or metadata.get("ackWait")
    if timeout:
        fields["processing_timeout_ms"] = parse_duration_ms(timeout)
    return fields


def safe_name(text: str) -> str:
    """`text` as a JetStream stream/consumer name. Unsafe characters become `_` plus a hash of the
    original, so `a.b` and `a_b` still get different names."""
    safe = _NAME_UNSAFE.sub("_", text)
    if safe != text:
        safe += "-" + hashlib.sha1(text.encode()).hexdigest()[:10]
    return safe


def _headers(metadata: dict[str, str]) -> dict[str, str] | None:
    if not metadata:
        return None
    return {METADATA_HEADER: json.dumps(metadata, separators=(",", ":"))}  # ensure_ascii: one ASCII line


def _metadata(headers: dict[str, str] | None) -> dict[str, str]:
    """Our metadata header decoded, plus the plain headers of other NATS publishers (not
    JetStream's own)."""
    metadata: dict[str, str] = {}
    ours = None
    for key, value in (headers or {}).items():
        if key == METADATA_HEADER:
            ours = value
        elif not key.lower().startswith(_RESERVED_HEADER):
            metadata[key] = value
    if ours is not None:
        try:
            decoded = json.loads(ours)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            metadata.update({str(k): v if isinstance(v, str) else json.dumps(v) for k, v in decoded.items()})
    return metadata


class Backend:
    def __init__(self, config: Config, context: ComponentContext):
        self.config = config
        self.context = context
        self._timeout_s = config.timeout_ms / 1000
        self._ack_wait_s = config.processing_timeout_ms / 1000
        self._loop = EventLoopThread(f"pubsub-nats-{context.name}")
        self._nc: Client | None = None  # set once connected; nats-py then reconnects by itself
        self._js: JetStreamContext | None = None
        self._connect_lock: asyncio.Lock | None = None  # made on the loop
        self._connecting = threading.Lock()  # at most one background connect at a time
        self._streams: set[str] = set()  # streams known to exist (touched on the loop only)
        self._last_error = ""
        self._connect_failed_at = -_RETRY_AFTER_S  # monotonic time of the last failed connect
        self._closed = False
        self._subscriptions: set[_Subscription] = set()
        # Messages handed out and not yet acked or nacked: acking needs the delivery's reply
        # subject, which only the received nats Msg carries. Keyed by (stream, consumer, sequence).
        self._held: dict[tuple[str, str, str], tuple[Msg, float]] = {}
        self._held_lock = threading.Lock()
        self._pruned_at = time.monotonic()
        self._start_connect()

    # -- plumbing --------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], what: str, timeout_s: float | None = None) -> T:
        """Run `coro` on the loop; every failure comes out as ComponentError (or InvalidRequest)."""
        return self._wait(self._submit(coro), what, timeout_s)

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if self._closed:
            coro.close()
            raise ComponentError("nats pub/sub is closed")
        return self._loop.submit(coro)

    def _wait(self, future: concurrent.futures.Future[T], what: str, timeout_s: float | None = None) -> T:
        import nats.errors

        try:
            return self._loop.wait(future, self._timeout_s if timeout_s is None else timeout_s)
        except InvalidRequest:
            raise
        except ComponentError as error:
            raise ComponentError(f"nats {self.config.url}: {what}: {error}") from None
        except (nats.errors.Error, TimeoutError, OSError, asyncio.CancelledError,
                concurrent.futures.CancelledError) as error:  # cancelled: closed under the call
            detail = str(error) or type(error).__name__
            raise ComponentError(f"nats {self.config.url}: {what}: {detail}") from None

    async def _jetstream(self, retry_now: bool = False) -> JetStreamContext:
        import nats

        if self._js is not None and self._nc is not None and not self._nc.is_closed:
            return self._js
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._js is not None and self._nc is not None and not self._nc.is_closed:
                return self._js
            # Callers queued behind an attempt that just failed fail with it, rather than each
            # waiting out a connect timeout of its own in turn.
            if not retry_now and time.monotonic() - self._connect_failed_at < _RETRY_AFTER_S:
                raise ComponentError(f"cannot connect: {self._last_error or 'no answer'}")
            client = nats.NATS()
            try:
                # nats-py retries the first connect forever (with reconnects allowed): bound it here.
                await asyncio.wait_for(client.connect(
                    servers=[self.config.url], name=f"wasm-faas {self.context.app_id} {self.context.name}",
                    connect_timeout=max(1, round(self._timeout_s)), max_reconnect_attempts=-1,
                    error_cb=self._on_error, disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected), self._timeout_s)
            except (Exception, asyncio.CancelledError) as error:
                if isinstance(error, TimeoutError):
                    error = ComponentError(f"cannot connect: {self._last_error or 'no answer'}")
                try:
                    await client.close()
                except Exception:  # noqa: BLE001 - it never connected
                    pass
                self._connect_failed_at = time.monotonic()
                raise error from None
            self._nc, self._js, self._last_error = client, client.jetstream(timeout=self._timeout_s), ""
            self.context.logger.info("pubsub %s: connected to nats %s", self.context.name, self.config.url)
            return self._js

    async def _on_error(self, error: Exception) -> None:
        self._last_error = str(error) or type(error).__name__

    async def _on_disconnected(self) -> None:
        if not self._closed and self._nc is not None:  # not the failed attempts of a first connect
            self.context.logger.warning("pubsub %s: lost nats %s; reconnecting", self.context.name, self.config.url)

    async def _on_reconnected(self) -> None:
        self._last_error = ""
        self.context.logger.info("pubsub %s: reconnected to nats %s", self.context.name, self.config.url)

    def _start_connect(self) -> None:
        """Connect in the background (construction, health probes); errors only feed health."""
        if self._closed or not self._connecting.acquire(blocking=False):
            return

        async def attempt() -> None:
            try:
                await self._jetstream(retry_now=True)
            except ComponentError:
                pass  # the error callback has recorded why
            except (Exception, asyncio.CancelledError) as error:
                self._last_error = str(error) or type(error).__name__
            finally:
                self._connecting.release()

        self._loop.submit(attempt())

    def _subject(self, topic: str) -> str:
        check_topic(topic)
        subject = self.config.stream_prefix + topic
        if _SUBJECT_UNSAFE.search(subject) or "" in subject.split("."):
            raise InvalidRequest(f"{subject!r} is not a NATS subject one can publish to")
        return subject

    async def _ensure_stream(self, js: JetStreamContext, subject: str) -> str:
        from nats.js.api import StreamConfig
        from nats.js.errors import BadRequestError, NotFoundError

        stream = safe_name(subject)
        if stream in self._streams:
            return stream
        try:
            await js.stream_info(stream)
        except NotFoundError:
            try:
                await js.add_stream(StreamConfig(name=stream, subjects=[subject],
                                                 max_msgs=self.config.max_msgs or -1))
            except BadRequestError:  # created meanwhile by another host (or taken by another subject)
                info = await js.stream_info(stream)
                if subject not in (info.config.subjects or []):
                    raise ComponentError(f"stream {stream!r} exists but does not hold subject {subject!r}") from None
        self._streams.add(stream)
        return stream

    # -- the interface ----------------------------------------------------------------------

    def publish(self, topic: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None:
        subject = self._subject(topic)
        headers = _headers(check_metadata(metadata))
        payload = bytes(data)

        async def publish() -> None:
            from nats.js.errors import NoStreamResponseError

            js = await self._jetstream()
            stream = await self._ensure_stream(js, subject)
            try:
                await js.publish(subject, payload, timeout=self._timeout_s, headers=headers)
            except NoStreamResponseError:  # the stream was deleted behind our back: make it again
                self._streams.discard(stream)
                await self._ensure_stream(js, subject)
                await js.publish(subject, payload, timeout=self._timeout_s, headers=headers)

        # Connecting, making the stream and the publish ack each get the timeout.
        self._call(publish(), f"publish to {subject!r}", 3 * self._timeout_s)

    def subscribe(self, topic: str, group: str, consumer: str) -> _Subscription:
        check_subscriber(topic, group, consumer)
        subject = self._subject(topic)
        durable = safe_name(group)

        async def subscribe() -> tuple[str, JetStreamContext.PullSubscription]:
            from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
            from nats.js.errors import APIError

            js = await self._jetstream()
            stream = await self._ensure_stream(js, subject)
            config = ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT,
                                    deliver_policy=DeliverPolicy.ALL, ack_wait=self._ack_wait_s,
                                    max_deliver=-1, filter_subject=subject)
            try:
                await js.add_consumer(stream, config)  # creates it, or updates ack_wait of an existing one
            except APIError as error:  # a field JetStream cannot update, e.g. another deliver policy
                self.context.logger.warning("pubsub %s: keeping consumer %r of stream %r as it is: %s",
                                            self.context.name, durable, stream, error)
            return stream, await js.pull_subscribe_bind(consumer=durable, stream=stream)

        stream, pull = self._call(subscribe(), f"subscribe to {subject!r}", 4 * self._timeout_s)
        subscription = _Subscription(self, topic, stream, durable, consumer, pull)
        with self._held_lock:
            self._subscriptions.add(subscription)
        return subscription

    def _hold(self, key: tuple[str, str, str], message: Msg) -> None:
        now = time.monotonic()
        with self._held_lock:
            self._held[key] = (message, now)
            # What nobody answered for twice ack_wait went back to JetStream long ago: forget it.
            if now - self._pruned_at > self._ack_wait_s:
                horizon = now - 2 * self._ack_wait_s
                self._held = {k: v for k, v in self._held.items() if v[1] >= horizon}
                self._pruned_at = now

    def _release(self, key: tuple[str, str, str]) -> Msg | None:
        with self._held_lock:
            held = self._held.pop(key, None)
        return held[0] if held is not None else None

    def _forget(self, subscription: _Subscription) -> None:
        with self._held_lock:
            self._subscriptions.discard(subscription)

    async def _flush(self) -> None:
        if self._nc is not None:
            await self._nc.flush(timeout=max(1, round(self._timeout_s)))

    def health(self) -> tuple[bool, str]:
        if self._closed:
            return False, "nats pub/sub is closed"
        client = self._nc
        if client is not None and client.is_connected:
            return True, f"nats {self.config.url}"
        if client is None or client.is_closed:
            self._start_connect()
        state = "reconnecting" if client is not None and client.is_reconnecting else "not connected"
        return False, f"nats {self.config.url}: {state}: {self._last_error or 'connecting'}"

    def close(self) -> None:
        if self._closed:
            return
        with self._held_lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.close()
        self._closed = True
        client = self._nc

        async def shut() -> None:
            if client is not None and not client.is_closed:
                try:
                    await client.flush(timeout=max(1, round(self._timeout_s)))
                finally:
                    await client.close()

        try:
            self._loop.run(shut(), self._timeout_s)
        except Exception as error:  # noqa: BLE001 - closing anyway
            self.context.logger.warning("pubsub %s: closing nats: %s", self.context.name, error)
        self._loop.stop(self._timeout_s)
        with self._held_lock:
            self._held.clear()


class _Subscription:
    def __init__(self, backend: Backend, topic: str, stream: str, durable: str, consumer: str,
                 pull: JetStreamContext.PullSubscription):
        self._backend = backend
        self.topic = topic
        self.stream = stream
        self.durable = durable
        self.consumer = consumer  # informational: JetStream shares a durable among its subscribers
        self._pull = pull
        self._fetching = threading.Lock()  # nats-py's pull fetch is not safe to overlap
        self._in_flight: concurrent.futures.Future[list[Msg]] | None = None  # the fetch close() cancels
        self._closed = False

    def fetch(self, max_messages: int, timeout_s: float) -> list[Message]:
        check_fetch(max_messages, timeout_s)
        wait_s = max(timeout_s, _MIN_FETCH_S)
        pull = self._pull

        async def fetch() -> list[Msg]:
            try:
                return await pull.fetch(max_messages, timeout=wait_s)
            except TimeoutError:  # nats-py's "nothing came"
                return []

        with self._fetching:
            if self._closed:
                raise ComponentError(f"the subscription to {self.topic!r} is closed")
            try:
                self._in_flight = self._backend._submit(fetch())
                if self._closed:  # close() ran just before the future was visible to it
                    self._in_flight.cancel()
                received = self._backend._wait(self._in_flight, f"fetch from {self.stream!r}",
                                               wait_s + self._backend._timeout_s)
            except ComponentError:
                if self._closed:  # closed under the fetch: whatever it got goes back after ack_wait
                    return []
                raise
            finally:
                self._in_flight = None
        messages: list[Message] = []
        for msg in received:
            meta = msg.metadata
            message_id = str(meta.sequence.stream)
            self._backend._hold((self.stream, self.durable, message_id), msg)
            messages.append(Message(id=message_id, topic=self.topic, data=msg.data, metadata=_metadata(msg.headers),
                                    attempt=meta.num_delivered))
        return messages

    def _held(self, message: Message) -> Msg | None:
        if message.topic != self.topic:
            raise InvalidRequest(f"message {message.id} is from topic {message.topic!r}, not {self.topic!r}")
        return self._backend._release((self.stream, self.durable, message.id))

    def ack(self, message: Message) -> None:
        """A message not held (acked already, or handed out more than twice ack_wait ago) is left to
        JetStream, which redelivers it if it is still unacked."""
        msg = self._held(message)
        if msg is None:
            return

        async def ack() -> None:
            await msg.ack()
            await self._backend._flush()  # the ack has reached the server when we return

        self._backend._call(ack(), f"ack {message.id} on {self.stream!r}")

    def ack_many(self, messages: Sequence[Message]) -> None:
        held = [msg for msg in (self._held(message) for message in messages) if msg is not None]
        if not held:
            return

        async def ack_all() -> None:
            for msg in held:
                await msg.ack()
            await self._backend._flush()  # one flush for the batch

        self._backend._call(ack_all(), f"ack {len(held)} message(s) on {self.stream!r}")

    def nack(self, message: Message, delay_s: float) -> None:
        msg = self._held(message)
        if msg is None:
            return

        async def nak() -> None:
            await msg.nak(delay=delay_s if delay_s > 0 else None)
            await self._backend._flush()

        self._backend._call(nak(), f"nack {message.id} on {self.stream!r}")

    def close(self) -> None:
        """Unsubscribes this puller; the durable consumer (the group) stays, and what this
        subscription held and did not ack is redelivered after ack_wait."""
        if self._closed:
            return
        self._closed = True
        in_flight = self._in_flight
        if in_flight is not None:  # wake a fetch blocked on another thread (it returns [])
            in_flight.cancel()
        self._backend._forget(self)
        if self._backend._closed:
            return
        try:
            self._backend._call(self._pull.unsubscribe(), f"unsubscribe from {self.stream!r}")
        except ComponentError as error:
            self._backend.context.logger.warning("pubsub %s: %s", self._backend.context.name, error)

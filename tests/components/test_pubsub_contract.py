"""The pub/sub contract every backend keeps, run against the in-process broker, the real Redis
(Streams) and the real NATS JetStream: exact bytes and metadata, every group gets every message,
the consumers of one group share them without duplicates, order within a topic, redelivery after a
nack's delay and after processing_timeout (also when the consumer process is SIGKILLed: the
backend alone brings the message back), concurrent publishers, and quick, clean failures when the
server is down. Redis's stream layout is checked against Dapr's, and NATS's stream-per-topic,
consumer-per-group layout."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from host.components.base import ComponentContext
from host.components.errors import ComponentError, InvalidRequest
from host.components.pubsub import BACKENDS, Message, PubSub, Subscription
from host.components.pubsub import nats as nats_pubsub
from host.components.pubsub import redis as redis_pubsub
from tests.services import NATS_URL, REDIS_ADDRESS, require_nats, require_redis, unique_prefix

PROCESSING_TIMEOUT_S = 0.6
SLACK_S = 0.05  # clock granularity between a backend's timer and ours
REPO = Path(__file__).resolve().parents[2]
CONSUMER_PROC = Path(__file__).resolve().parent / "pubsub_consumer_proc.py"


@dataclass
class Harness:
    """Builds backends of one kind on an isolated prefix and removes what they made."""

    name: str
    fields: dict[str, Any]  # the Config fields every backend of this test gets
    made: list[Any] = field(default_factory=list)

    def make(self, **overrides: Any) -> Any:
        module = importlib.import_module(BACKENDS[self.name])
        backend = module.Backend(module.Config(**{**self.fields, **overrides}), ComponentContext(name="pubsub"))
        self.made.append(backend)
        return backend

    def close_all(self) -> None:
        for backend in self.made:
            backend.close()


def _delete_redis_streams(prefix: str) -> None:
    host, _, port = REDIS_ADDRESS.rpartition(":")
    client = redis.Redis(host=host, port=int(port))
    try:
        stale = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if stale:
            client.delete(*stale)
    finally:
        client.close()


async def _delete_nats_streams(prefix: str) -> None:
    import nats

    client = await nats.connect(NATS_URL)
    try:
        js = client.jetstream()
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(prefix):
                await js.delete_stream(info.config.name)
    finally:
        await client.close()


@pytest.fixture(params=sorted(BACKENDS))
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    timeout_ms = int(PROCESSING_TIMEOUT_S * 1000)
    if request.param == "memory":
        made = Harness("memory", {"type": "memory", "processing_timeout_ms": timeout_ms})
        yield made
        made.close_all()
    elif request.param == "redis":
        require_redis()
        prefix = unique_prefix("pubsub") + ":"
        made = Harness("redis", {"type": "redis", "address": REDIS_ADDRESS, "processing_timeout_ms": timeout_ms,
                                 "redeliver_interval_ms": 100, "stream_prefix": prefix})
        try:
            yield made
        finally:
            made.close_all()
            _delete_redis_streams(prefix)
    else:
        require_nats()
        prefix = unique_prefix("pubsub") + "-"
        made = Harness("nats", {"type": "nats", "url": NATS_URL, "processing_timeout_ms": timeout_ms,
                                "timeout_ms": 2000, "stream_prefix": prefix})
        try:
            yield made
        finally:
            made.close_all()
            asyncio.run(_delete_nats_streams(prefix))


def fetch_until(subscription: Subscription, count: int, timeout_s: float = 5.0, batch: int = 10) -> list[Message]:
    """Fetch until `count` messages came or `timeout_s` passed."""
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and (remaining := deadline - time.monotonic()) > 0:
        got += subscription.fetch(min(batch, count - len(got)), min(remaining, 1.0))
    return got


def assert_nothing_more(*subscriptions: Subscription) -> None:
    """Nothing is delivered again, even after processing_timeout (everything was acked)."""
    deadline = time.monotonic() + PROCESSING_TIMEOUT_S * 1.3
    while (remaining := deadline - time.monotonic()) > 0:
        for subscription in subscriptions:
            extra = subscription.fetch(10, min(remaining, 0.3))
            assert extra == [], f"redelivered after ack: {extra}"


def test_round_trip_keeps_bytes_and_metadata(harness: Harness) -> None:
    backend: PubSub = harness.make()
    odd_metadata = {"content-type": "application/octet-stream", " k:": " v w ", "é": "ü\r\n"}
    sent = [(b"\x00\xff\xfe not utf-8 \r\n", odd_metadata), (b'{"a": 1}', {}), (b"", {"only": "metadata"})]
    subscription = backend.subscribe("orders", "g", "c1")
    for data, metadata in sent:
        backend.publish("orders", data, metadata)
    got = fetch_until(subscription, len(sent))
    assert [(m.data, m.metadata) for m in got] == sent
    assert {(m.topic, m.attempt) for m in got} == {("orders", 1)}
    assert len({m.id for m in got}) == len(sent)
    for message in got:
        subscription.ack(message)
    assert_nothing_more(subscription)


def test_every_group_gets_every_message(harness: Harness) -> None:
    backend = harness.make()
    early_a = backend.subscribe("news", "group-a", "c1")
    early_b = backend.subscribe("news", "group-b", "c1")
    payloads = [f"m{i}".encode() for i in range(5)]
    for payload in payloads:
        backend.publish("news", payload)
    late = backend.subscribe("news", "group-late", "c1")  # a new group starts at the oldest message
    for subscription in (early_a, early_b, late):
        got = fetch_until(subscription, len(payloads))
        assert [m.data for m in got] == payloads
        for message in got:
            subscription.ack(message)


def test_consumers_of_a_group_share_without_duplicates(harness: Harness) -> None:
    backend = harness.make()
    first = backend.subscribe("jobs", "workers", "c1")
    second = backend.subscribe("jobs", "workers", "c2")
    payloads = {f"job-{i}".encode() for i in range(20)}
    for payload in sorted(payloads):
        backend.publish("jobs", payload)
    taken: dict[str, list[bytes]] = {"c1": [], "c2": []}
    deadline = time.monotonic() + 10
    while sum(map(len, taken.values())) < len(payloads) and time.monotonic() < deadline:
        for name, subscription in (("c1", first), ("c2", second)):
            for message in subscription.fetch(3, 0.3):
                taken[name].append(message.data)
                subscription.ack(message)
    everything = taken["c1"] + taken["c2"]
    assert sorted(everything) == sorted(payloads)  # all delivered, none twice
    assert taken["c1"] and taken["c2"], taken
    assert_nothing_more(first, second)


def test_nack_redelivers_after_the_delay_with_attempt_2(harness: Harness) -> None:
    backend = harness.make()
    first = backend.subscribe("retry", "g", "c1")
    other = backend.subscribe("retry", "g", "c2")
    backend.publish("retry", b"try me")
    [message] = fetch_until(first, 1)
    delay_s = 0.25
    first.nack(message, delay_s)
    nacked_at = time.monotonic()
    assert other.fetch(1, 0.1) == []  # not sooner than the delay
    [again] = fetch_until(other, 1)
    waited = time.monotonic() - nacked_at
    assert (again.id, again.data, again.attempt) == (message.id, b"try me", 2)
    assert delay_s - SLACK_S <= waited < PROCESSING_TIMEOUT_S, waited  # the delay, not the processing timeout
    other.ack(again)


def test_unacked_message_goes_to_another_consumer_after_processing_timeout(harness: Harness) -> None:
    backend = harness.make()
    quitter = backend.subscribe("work", "g", "quitter")
    backend.publish("work", b"unfinished")
    [taken] = fetch_until(quitter, 1)
    taken_at = time.monotonic()
    quitter.close()
    with pytest.raises(ComponentError):
        quitter.fetch(1, 0)
    heir = backend.subscribe("work", "g", "heir")
    assert heir.fetch(1, PROCESSING_TIMEOUT_S / 2) == []  # still the quitter's
    [again] = fetch_until(heir, 1)
    assert time.monotonic() - taken_at >= PROCESSING_TIMEOUT_S - SLACK_S
    assert (again.id, again.data, again.attempt) == (taken.id, b"unfinished", 2)
    heir.ack(again)
    assert_nothing_more(heir)


def test_ack_many_acknowledges_exactly_those_messages(harness: Harness) -> None:
    backend = harness.make()
    quitter = backend.subscribe("batch", "g", "quitter")
    for index in range(4):
        backend.publish("batch", f"m{index}".encode())
    taken = fetch_until(quitter, 4)
    quitter.ack_many([taken[0], taken[2], taken[3]])  # one call for the batch (one XACK on Redis)
    quitter.ack_many([])
    taken_at = time.monotonic()
    quitter.close()
    # Only the message left out is redelivered (to the next consumer, after the processing timeout).
    heir = backend.subscribe("batch", "g", "heir")
    [again] = fetch_until(heir, 1)
    assert time.monotonic() - taken_at >= PROCESSING_TIMEOUT_S - SLACK_S
    assert (again.id, again.data, again.attempt) == (taken[1].id, b"m1", 2)
    heir.ack(again)
    assert_nothing_more(heir)


def test_order_within_a_topic(harness: Harness) -> None:
    backend = harness.make()
    subscription = backend.subscribe("ordered", "g", "c1")
    payloads = [str(i).encode() for i in range(12)]
    for payload in payloads:
        backend.publish("ordered", payload)
    got = fetch_until(subscription, len(payloads), batch=5)
    assert [m.data for m in got] == payloads
    for message in got:
        subscription.ack(message)


def test_publish_from_four_threads(harness: Harness) -> None:
    backend = harness.make()
    subscription = backend.subscribe("busy", "g", "c1")
    errors: list[BaseException] = []

    def publish(thread: int) -> None:
        try:
            for i in range(25):
                backend.publish("busy", f"{thread}:{i}".encode())
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=publish, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    got = fetch_until(subscription, 100, batch=50)
    texts = [m.data.decode() for m in got]
    assert sorted(texts) == sorted(f"{t}:{i}" for t in range(4) for i in range(25))
    for t in range(4):  # each publisher's messages arrive in the order it sent them
        assert [int(x.split(":")[1]) for x in texts if x.startswith(f"{t}:")] == list(range(25))
    for message in got:
        subscription.ack(message)


@pytest.mark.parametrize("closing", ["subscription", "backend"])
def test_close_wakes_a_blocked_fetch(harness: Harness, closing: str) -> None:
    backend = harness.make()
    subscription = backend.subscribe("quiet", "g", "c1")
    outcome: list[Any] = []

    def wait_for_messages() -> None:
        started = time.monotonic()
        outcome.append(subscription.fetch(5, 10.0))
        outcome.append(time.monotonic() - started)

    waiter = threading.Thread(target=wait_for_messages)
    waiter.start()
    time.sleep(0.3)  # let it block
    (subscription if closing == "subscription" else backend).close()
    waiter.join(5)
    assert not waiter.is_alive()
    assert outcome[0] == [] and outcome[1] < 2, outcome
    with pytest.raises(ComponentError):
        subscription.fetch(1, 0)


def test_bad_arguments_are_invalid_requests(harness: Harness) -> None:
    backend = harness.make()
    with pytest.raises(InvalidRequest):
        backend.publish("", b"x")
    with pytest.raises(InvalidRequest):
        backend.subscribe("t", "", "c")
    subscription = backend.subscribe("t", "g", "c")
    with pytest.raises(InvalidRequest):
        subscription.fetch(0, 0.1)
    with pytest.raises(InvalidRequest):
        subscription.ack(Message(id="1", topic="another-topic", data=b"", metadata={}, attempt=1))


def _read_line(stream: Any, timeout_s: float) -> str:
    """One line from a child's stdout, failing the test instead of hanging."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    assert box, f"the consumer process said nothing within {timeout_s}s"
    return box[0]


@pytest.mark.parametrize("harness", ["redis", "nats"], indirect=True)
def test_message_of_a_sigkilled_consumer_is_redelivered(harness: Harness) -> None:
    backend = harness.make()
    count = 8
    payloads = [f"event-{i}".encode() for i in range(count)]
    survivor = backend.subscribe("kill", "g", "survivor")  # the group exists before the publishes
    for payload in payloads:
        backend.publish("kill", payload)
    child = subprocess.Popen(
        [sys.executable, str(CONSUMER_PROC), "--backend", harness.name, "--config", json.dumps(harness.fields),
         "--topic", "kill", "--group", "g", "--consumer", "victim"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        line = _read_line(child.stdout, 20)
        assert line, f"the consumer process failed: {child.stderr.read() if child.stderr else ''}"
        held = json.loads(line)
        assert held.get("attempt") == 1, held
        os.kill(child.pid, signal.SIGKILL)  # mid-message: no ack, no goodbye
        assert child.wait(5) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for pipe in (child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()

    acks: Counter[str] = Counter()
    delivered: dict[str, Message] = {}
    deadline = time.monotonic() + PROCESSING_TIMEOUT_S + 10
    while len(delivered) < count and time.monotonic() < deadline:
        for message in survivor.fetch(count, 0.5):
            assert message.id not in delivered, f"{message.id} delivered twice to the survivor"
            delivered[message.id] = message
            survivor.ack(message)
            acks[message.id] += 1
    assert sorted(m.data for m in delivered.values()) == sorted(payloads)  # nothing lost
    assert set(acks.values()) == {1}  # each acked exactly once
    redelivered = delivered[held["id"]]
    assert redelivered.attempt == 2
    assert all(m.attempt == 1 for m in delivered.values() if m.id != held["id"])
    assert_nothing_more(survivor)


def _closed_port() -> int:
    """A port nothing listens on (bound once, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("kind", ["redis", "nats"])
def test_down_backend_fails_quickly(kind: str) -> None:
    port = _closed_port()
    module = importlib.import_module(BACKENDS[kind])
    fields: dict[str, Any] = ({"address": f"127.0.0.1:{port}"} if kind == "redis"
                              else {"url": f"nats://127.0.0.1:{port}"})
    backend = module.Backend(module.Config(type=kind, timeout_ms=500, **fields), ComponentContext(name="pubsub"))
    try:
        started = time.monotonic()
        with pytest.raises(ComponentError):
            backend.publish("t", b"x")
        with pytest.raises(ComponentError):
            backend.subscribe("t", "g", "c")
        assert time.monotonic() - started < 4
        started = time.monotonic()
        healthy, detail = backend.health()
        assert time.monotonic() - started < 0.6
        assert not healthy and detail
    finally:
        backend.close()


# -- Redis: Dapr's layout ------------------------------------------------------------------------

@pytest.fixture
def redis_admin() -> Iterator[tuple[redis.Redis, str]]:
    require_redis()
    prefix = unique_prefix("pubsub") + ":"
    host, _, port = REDIS_ADDRESS.rpartition(":")
    client = redis.Redis(host=host, port=int(port))
    yield client, prefix
    client.close()
    _delete_redis_streams(prefix)


def test_redis_streams_use_daprs_layout(redis_admin: tuple[redis.Redis, str]) -> None:
    admin, prefix = redis_admin
    backend = redis_pubsub.Backend(
        redis_pubsub.Config(type="redis", address=REDIS_ADDRESS, stream_prefix=prefix, processing_timeout_ms=800,
                            redeliver_interval_ms=100, max_len_approx=10),
        ComponentContext(name="pubsub"))
    try:
        subscription = backend.subscribe("orders", "app", "host-1")
        key = prefix + "orders"
        assert [g["name"] for g in admin.xinfo_groups(key)] == [b"app"]
        backend.publish("orders", b"with", {"k": "v"})
        backend.publish("orders", b"without")
        entries = admin.xrange(key)
        assert entries is not None
        assert [fields for _, fields in entries] == [{b"data": b"with", b"metadata": b'{"k":"v"}'},
                                                     {b"data": b"without"}]
        # A foreign (Dapr) publisher's entry is read the same way.
        foreign_id = admin.xadd(key, {"data": b"from dapr", "metadata": json.dumps({"traceparent": "00-x"})})
        got = fetch_until(subscription, 3)
        assert [(m.id.encode(), m.data, m.metadata) for m in got] == [
            (entries[0][0], b"with", {"k": "v"}), (entries[1][0], b"without", {}),
            (foreign_id, b"from dapr", {"traceparent": "00-x"})]
        pending = admin.xpending_range(key, "app", "-", "+", 10)
        assert [(p["consumer"], p["times_delivered"]) for p in pending] == [(b"host-1", 1)] * 3
        for message in got:
            subscription.ack(message)
        assert admin.xpending(key, "app")["pending"] == 0
        for i in range(300):  # MAXLEN ~ 10: Redis trims whole nodes, so the stream stays short
            backend.publish("orders", str(i).encode())
        assert admin.xlen(key) < 300
    finally:
        backend.close()


def test_redis_pending_entries_survive_a_new_backend(redis_admin: tuple[redis.Redis, str]) -> None:
    """A host restart: what the old backend took and did not ack comes back from Redis."""
    admin, prefix = redis_admin
    config = redis_pubsub.Config(type="redis", address=REDIS_ADDRESS, stream_prefix=prefix,
                                 processing_timeout_ms=500, redeliver_interval_ms=100)
    old = redis_pubsub.Backend(config, ComponentContext(name="pubsub"))
    old.publish("t", b"in flight")
    [taken] = fetch_until(old.subscribe("t", "app", "host"), 1)
    old.close()
    new = redis_pubsub.Backend(config, ComponentContext(name="pubsub"))
    try:
        [again] = fetch_until(new.subscribe("t", "app", "host"), 1)
        assert (again.id, again.data, again.attempt) == (taken.id, b"in flight", 2)
    finally:
        new.close()


def test_redis_from_layotto_metadata() -> None:
    fields = redis_pubsub.from_layotto({"redisHost": "10.0.0.5:6380", "redisPassword": "pw", "consumerID": "app",
                                        "processingTimeout": "2s", "redeliverInterval": "500",
                                        "maxLenApprox": "1000"})
    config = redis_pubsub.Config(type="redis", **fields)
    assert (config.address, config.password, config.consumer_id, config.processing_timeout_ms,
            config.redeliver_interval_ms, config.max_len_approx) == ("10.0.0.5:6380", "pw", "app", 2000, 500, 1000)



# -- NATS: one stream per topic, one durable consumer per group ------------------------------------

async def _stream_and_consumers(stream: str) -> tuple[list[str], list[tuple[str, float | None, str]]]:
    import nats

    client = await nats.connect(NATS_URL)
    try:
        js = client.jetstream()
        info = await js.stream_info(stream)
        consumers = await js.consumers_info(stream)
        return (list(info.config.subjects or []),
                [(c.name, c.config.ack_wait, str(c.config.ack_policy)) for c in consumers])
    finally:
        await client.close()


def test_nats_layout_and_subject_checks() -> None:
    require_nats()
    prefix = unique_prefix("pubsub") + "-"
    backend = nats_pubsub.Backend(
        nats_pubsub.Config(type="nats", url=NATS_URL, stream_prefix=prefix, processing_timeout_ms=1500),
        ComponentContext(name="pubsub"))
    try:
        subscription = backend.subscribe("orders.eu", "billing.v2", "host-1")
        backend.publish("orders.eu", b"x")
        [message] = fetch_until(subscription, 1)
        subscription.ack(message)
        stream = nats_pubsub.safe_name(prefix + "orders.eu")
        assert stream.startswith(prefix + "orders_eu-") and stream != nats_pubsub.safe_name(prefix + "orders_eu")
        subjects, consumers = asyncio.run(_stream_and_consumers(stream))
        assert subjects == [prefix + "orders.eu"]
        assert consumers == [(nats_pubsub.safe_name("billing.v2"), 1.5, "explicit")]
        for bad in ("a b", "a.*", "a.>", "a..b", "a."):
            with pytest.raises(InvalidRequest):
                backend.publish(bad, b"x")
    finally:
        backend.close()
        asyncio.run(_delete_nats_streams(prefix))

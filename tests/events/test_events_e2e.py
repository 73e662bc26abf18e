"""Events into functions end to end: a real server, real wasm subscribers, messages published
through the runtime (memory and Redis Streams), deliveries through the one call path."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from host.components.pubsub.cloudevents import envelope
from host.events import delivery
from host.events.delivery import Subscriber
from tests.conftest import EXAMPLES, Client, functions_dir, make_config
from tests.services import REDIS_ADDRESS, require_redis, unique_prefix

ORDER_COMPONENTS: dict[str, Any] = {
    "state": {"statestore": {"type": "memory"}, "events": {"type": "memory"}},
    "lock": {"lockstore": {"type": "memory"}},
    "sequencer": {"sequencer": {"type": "memory"}},
}


async def _until(predicate: Any, timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _probe(tmp_path: Path, c_guests: Path, refusals: int) -> Path:
    folder = functions_dir(tmp_path, c_guests / "event_probe.wasm")
    (folder / "event_probe.toml").write_text(f'plugin_config = "{refusals}"\n')
    return folder


def _subscription(**fields: Any) -> dict[str, Any]:
    return {"function": "event_probe", "pubsub": "bus", "topic": "jobs", "backoff_ms": 20, "max_backoff_ms": 100,
            **fields}


def _publish(client: Client, pubsub: str, topic: str, data: bytes, content_type: str = "text/plain") -> None:
    app = client.server.app
    app.components.of("pubsub")[pubsub].publish(topic, envelope(data, content_type, topic=topic, pubsub_name=pubsub,
                                                                source=app.config.app_id))


def _got(client: Client, store: str, key: str) -> bytes | None:
    value = client.server.app.components.of("state")[store].get(key)
    return value.value if value is not None else None


def _attempts(client: Client, event_id: str) -> int:
    entry = client.server.app.services.shared_data.get(f"attempts:{event_id}".encode())
    return int(entry[0]) if entry else 0


def _event_ids(client: Client) -> list[str]:
    """The ids of the events that reached the probe (it counts each delivery in shared data)."""
    return [key.decode().split(":", 1)[1] for key in client.server.app.services.shared_data.snapshot()
            if key.startswith(b"attempts:")]


def _dead_letters(client: Client, topic: str) -> list[tuple[dict[str, Any], dict[str, str]]]:
    subscription = client.server.app.components.of("pubsub")["bus"].subscribe(topic, "test-reader", "reader")
    try:
        messages = subscription.fetch(10, 0.2)
        return [(json.loads(m.data), m.metadata) for m in messages]
    finally:
        subscription.close()


async def test_a_subscriber_that_fails_twice_gets_three_deliveries_and_one_ack(serve, tmp_path: Path,
                                                                               c_guests: Path) -> None:
    config = make_config(tmp_path, _probe(tmp_path, c_guests, refusals=2), pubsub={"bus": {"type": "memory"}},
                         state={"events": {"type": "memory"}}, subscriptions=[_subscription()])
    client = await serve(config)
    await asyncio.to_thread(_publish, client, "bus", "jobs", b"job-1")
    info: dict[str, Any] = {}

    async def delivered() -> bool:
        nonlocal info
        _, info = await client.admin_get("/actuator/info")
        return info["subscriptions"][0]["delivered"] == 1

    deadline = time.monotonic() + 10
    while not await delivered():
        assert time.monotonic() < deadline, info
        await asyncio.sleep(0.05)
    stats = info["subscriptions"][0]
    assert (stats["delivered"], stats["redelivered"], stats["dead_lettered"]) == (1, 2, 0)
    [event_id] = _event_ids(client)
    assert _attempts(client, event_id) == 3  # three deliveries reached the function
    assert _got(client, "events", f"got:{event_id}") == b"job-1"
    await asyncio.sleep(0.3)  # acknowledged: nothing more arrives
    assert _attempts(client, event_id) == 3


async def test_a_subscriber_that_always_fails_parks_the_event_in_the_dead_letter_topic(serve, tmp_path: Path,
                                                                                       c_guests: Path) -> None:
    config = make_config(tmp_path, _probe(tmp_path, c_guests, refusals=-1), pubsub={"bus": {"type": "memory"}},
                         state={"events": {"type": "memory"}},
                         subscriptions=[_subscription(max_attempts=3, dead_letter_topic="jobs-dead")])
    client = await serve(config)
    await asyncio.to_thread(_publish, client, "bus", "jobs", b'{"n": 1}', "application/json")
    await _until(lambda: client.server.app.events.subscribers[0].stats.dead_lettered == 1, what="dead letter")
    [(event, metadata)] = await asyncio.to_thread(_dead_letters, client, "jobs-dead")
    assert event["data"] == {"n": 1} and event["topic"] == "jobs"
    assert event["deadletterattempts"] == 3 and "HTTP 500" in event["deadletterreason"]
    assert metadata["deadletter.attempts"] == "3" and metadata["deadletter.topic"] == "jobs"
    assert _attempts(client, event["id"]) == 3


async def test_the_order_flow_publishes_an_event_the_subscriber_records(serve, tmp_path: Path) -> None:
    folder = functions_dir(tmp_path, EXAMPLES / "orders.wasm", EXAMPLES / "order_events.wasm")
    config = make_config(tmp_path, folder, pubsub={"pubsub": {"type": "memory"}}, **ORDER_COMPONENTS,
                         subscriptions=[{"function": "order_events", "pubsub": "pubsub", "topic": "orders"}])
    client = await serve(config)
    answers = []
    for item in ("book1", "book2", "pen"):
        status, _, body = await client.call("orders", "/", method="POST", data=item.encode())
        assert status == 200, body
        answers.append(json.loads(body))
    assert [a["item"] for a in answers] == ["book1", "book2", "pen"]
    assert [a["count"] for a in answers] == [1, 2, 3] and len({a["id"] for a in answers}) == 3
    for answer in answers:
        assert json.loads(_got(client, "statestore", f"order-{answer['id']}") or b"") == answer
    await _until(lambda: len((_got(client, "statestore", "received-orders") or b"").split(b",")) == 3,
                 what="three recorded events")
    received = (_got(client, "statestore", "received-orders") or b"").decode().split(",")
    recorded = [json.loads(_got(client, "statestore", f"event-{event_id}") or b"") for event_id in received]
    assert sorted(r["id"] for r in recorded) == sorted(a["id"] for a in answers)


@pytest.mark.redis
async def test_reloading_the_subscriber_during_a_burst_of_1000_events_loses_none(serve, tmp_path: Path,
                                                                                 c_guests: Path) -> None:
    require_redis()
    prefix = unique_prefix("events")
    folder = _probe(tmp_path, c_guests, refusals=0)
    config = make_config(tmp_path, folder, state={"events": {"type": "memory"}},
                         pubsub={"bus": {"type": "redis", "address": REDIS_ADDRESS, "stream_prefix": prefix + ":",
                                         "processing_timeout_ms": 2000, "redeliver_interval_ms": 200}},
                         subscriptions=[_subscription(concurrency=32)], function_defaults={"instance_num": 2})
    client = await serve(config)
    admin = redis.Redis(host="127.0.0.1", port=6379)
    try:
        publishing = asyncio.create_task(asyncio.to_thread(
            lambda: [_publish(client, "bus", "jobs", f"event-{n}".encode()) for n in range(1000)]))
        await _until(lambda: client.server.app.events.subscribers[0].stats.delivered >= 200, what="200 deliveries")
        module = folder / "event_probe.wasm"
        for _ in range(2):  # replaced by rename, as a deploy tool does: a reload each time
            staged = folder / ".event_probe.wasm.tmp"
            shutil.copy(c_guests / "event_probe.wasm", staged)
            os.replace(staged, module)
            await asyncio.sleep(0.3)
        await publishing
        store = client.server.app.components.of("state")["events"]
        await _until(lambda: client.server.app.events.subscribers[0].stats.delivered >= 1000, 30, "1000 deliveries")
        bodies = {store.get(f"got:{event_id}").value for event_id in _event_ids(client)}
        assert bodies == {f"event-{n}".encode() for n in range(1000)}
        record = client.server.app.deployments.records[module.resolve()]
        assert record.reloads >= 1
    finally:
        await client.server.stop()  # first: a running consumer would create its stream again
        for key in admin.scan_iter(f"{prefix}:*"):
            admin.delete(key)
        admin.close()



async def test_a_cheap_subscriber_gets_its_batches_in_the_consumer_thread(serve, tmp_path: Path, c_guests: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # Once the function is known to be cheap and its deliveries quick, a batch runs one message after
    # another in the consumer thread (no hop to the event loop and a guest thread); every event still
    # arrives exactly once and is acknowledged.
    ran_here: list[str] = []
    real = Subscriber._deliver_here

    def counted(self: Subscriber, message: Any) -> tuple[int, str]:
        ran_here.append(threading.current_thread().name)
        return real(self, message)

    monkeypatch.setattr(Subscriber, "_deliver_here", counted)
    # Quick deliveries take well under a millisecond; a loaded machine must not decide this test.
    monkeypatch.setattr(delivery, "SERIAL_DELIVERY_MAX_S", 0.1)
    config = make_config(tmp_path, _probe(tmp_path, c_guests, refusals=0), pubsub={"bus": {"type": "memory"}},
                         state={"events": {"type": "memory"}}, subscriptions=[_subscription(concurrency=16)])
    client = await serve(config)
    count = 400
    await asyncio.to_thread(lambda: [_publish(client, "bus", "jobs", f"event-{n}".encode()) for n in range(count)])
    subscriber = client.server.app.events.subscribers[0]
    await _until(lambda: subscriber.stats.delivered >= count, 30, f"{count} deliveries")
    assert client.server.app.router.pick("event_probe").policy.cheap
    assert ran_here and set(ran_here) == {"events-event_probe"}  # the consumer thread, not a guest thread
    ids = _event_ids(client)
    assert len(ids) == count and all(_attempts(client, event_id) == 1 for event_id in ids)
    assert {_got(client, "events", f"got:{event_id}") for event_id in ids} == {f"event-{n}".encode()
                                                                                for n in range(count)}
    assert (subscriber.stats.redelivered, subscriber.stats.dead_lettered) == (0, 0)

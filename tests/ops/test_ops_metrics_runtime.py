"""Runtime-call and event-delivery metrics (issue 14) read from a real host's `GET /metrics` after
known calls: the gRPC APIs (Layotto's and Dapr's, real grpc.aio clients) count under api="grpc",
Dapr's HTTP API under api="http", each by capability, component and outcome, with one latency
observation per call; a name nothing configures creates no series of its own. Event deliveries
into a function count delivered, retried, dead-lettered and dropped attempts per subscription."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from host.components.pubsub.cloudevents import envelope
from host.grpc.proto.dapr.proto.runtime.v1 import dapr_pb2, dapr_pb2_grpc
from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2 as pb
from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2_grpc
from tests.conftest import Client, functions_dir, make_config
from tests.grpc.api_support import api_config
from tests.grpc.test_foreign_runtime import calls_guest
from tests.guest_wat import write_guest
from tests.ops.test_ops_metrics import Samples, samples

TIMEOUT = 5.0


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def scrape(client: Client) -> Samples:
    async with client.session.get(client.admin + "/metrics") as response:
        assert response.status == 200
        return samples(await response.text())


def calls(found: Samples, api: str, capability: str, component: str, outcome: str) -> float:
    labels = {"api": api, "capability": capability, "component": component, "outcome": outcome}
    return found.get(("wasm_faas_runtime_calls_total", frozenset(labels.items())), 0.0)


def timed(found: Samples, api: str, capability: str, component: str) -> float:
    labels = {"api": api, "capability": capability, "component": component}
    return found.get(("wasm_faas_runtime_call_duration_seconds_count", frozenset(labels.items())), 0.0)


def series(found: Samples, name: str, **match: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in found.items() if n == name and set(match.items()) <= labels}


async def _fails(call: Any, code: grpc.StatusCode) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code, raised.value.details()


async def test_grpc_calls_are_counted_by_capability_component_and_outcome(serve, tmp_path: Path) -> None:
    down = {"type": "redis", "address": f"127.0.0.1:{_closed_port()}", "timeout_ms": 200}
    client = await serve(api_config(tmp_path, state={"state_demo": {"type": "memory", "seed": {"book1": "100"}},
                                                     "down": down}))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{client.server.grpc_port}") as channel:
        layotto, dapr = runtime_pb2_grpc.RuntimeStub(channel), dapr_pb2_grpc.DaprStub(channel)
        for _ in range(5):
            answer = await layotto.GetState(pb.GetStateRequest(store_name="state_demo", key="book1"), timeout=TIMEOUT)
            assert answer.data == b"100"
        for _ in range(3):  # Dapr's service, same port: the same api label
            answer = await dapr.GetState(dapr_pb2.GetStateRequest(store_name="state_demo", key="book1"),
                                         timeout=TIMEOUT)
            assert answer.data == b"100"
        for name in ("no-such-store", "another-made-up-name"):
            await _fails(layotto.GetState(pb.GetStateRequest(store_name=name, key="k"), timeout=TIMEOUT),
                         grpc.StatusCode.INVALID_ARGUMENT)
        await _fails(layotto.GetState(pb.GetStateRequest(store_name="state_demo", key="k", metadata={"x": "y"}),
                                      timeout=TIMEOUT), grpc.StatusCode.INVALID_ARGUMENT)  # metadata refused
        stale = pb.StateItem(key="book1", value=b"1")
        stale.etag.value = "999"
        await _fails(layotto.SaveState(pb.SaveStateRequest(store_name="state_demo", states=[stale]), timeout=TIMEOUT),
                     grpc.StatusCode.ABORTED)
        await _fails(layotto.GetState(pb.GetStateRequest(store_name="down", key="k"), timeout=TIMEOUT),
                     grpc.StatusCode.INTERNAL)  # the backend is not there
        fresh = pb.StateItem(key="k", value=b"v")
        await layotto.SaveState(pb.SaveStateRequest(store_name="state_demo", states=[fresh]), timeout=TIMEOUT)
        await layotto.PublishEvent(pb.PublishEventRequest(pubsub_name="pubsub", topic="t", data=b"x"), timeout=TIMEOUT)
        locked = await layotto.TryLock(pb.TryLockRequest(store_name="lockstore", resource_id="r", lock_owner="o",
                                                         expire=10), timeout=TIMEOUT)
        assert locked.success
        await layotto.Unlock(pb.UnlockRequest(store_name="lockstore", resource_id="r", lock_owner="o"), timeout=TIMEOUT)
        for _ in range(2):
            await layotto.GetNextId(pb.GetNextIdRequest(store_name="ids", key="orders"), timeout=TIMEOUT)
        await layotto.GetConfiguration(pb.GetConfigurationRequest(store_name="settings", keys=["greeting"]),
                                       timeout=TIMEOUT)
        invoke = pb.InvokeServiceRequest(id="echo", message=pb.CommonInvokeRequest(method="/x"))
        await layotto.InvokeService(invoke, timeout=TIMEOUT)
        await _fails(layotto.InvokeService(pb.InvokeServiceRequest(id="ghost", message=pb.CommonInvokeRequest(
            method="/x")), timeout=TIMEOUT), grpc.StatusCode.NOT_FOUND)
    found = await scrape(client)

    assert calls(found, "grpc", "state", "state_demo", "ok") == 5 + 3 + 1  # GetState x8, SaveState x1
    assert calls(found, "grpc", "state", "", "unknown_component") == 2
    assert calls(found, "grpc", "state", "state_demo", "bad_request") == 1
    assert calls(found, "grpc", "state", "state_demo", "conflict") == 1
    assert calls(found, "grpc", "state", "down", "error") == 1
    assert timed(found, "grpc", "state", "state_demo") == 5 + 3 + 1 + 1 + 1  # every outcome is timed
    assert timed(found, "grpc", "state", "") == 2
    assert calls(found, "grpc", "pubsub", "pubsub", "ok") == 1
    assert calls(found, "grpc", "lock", "lockstore", "ok") == 2
    assert calls(found, "grpc", "sequencer", "ids", "ok") == 2
    assert calls(found, "grpc", "configuration", "settings", "ok") == 1
    assert calls(found, "grpc", "invoke", "echo", "ok") == 1
    assert calls(found, "grpc", "invoke", "", "unknown_component") == 1
    # Client-chosen names never become label values; nothing here was a function's or HTTP's call.
    values = {value for _, labels in found for _, value in labels}
    assert not values & {"no-such-store", "another-made-up-name", "ghost"}
    assert not series(found, "wasm_faas_runtime_calls_total", api="http")
    assert not series(found, "wasm_faas_runtime_calls_total", api="function")


async def test_dapr_http_calls_are_counted_under_http(serve, tmp_path: Path) -> None:
    client = await serve(api_config(tmp_path))
    base = f"http://127.0.0.1:{client.server.dapr_http_port}"

    async def status(method: str, path: str, **kwargs: Any) -> int:
        async with client.session.request(method, base + path, **kwargs) as response:
            await response.read()
            return response.status

    assert [await status("GET", "/v1.0/state/state_demo/book1") for _ in range(3)] == [200] * 3
    assert await status("GET", "/v1.0/state/nowhere/book1") == 400
    assert await status("POST", "/v1.0/state/state_demo", json=[{"key": "book1", "value": 1, "etag": "999"}]) == 409
    assert await status("POST", "/v1.0/publish/pubsub/orders", data=b"x") == 204
    assert await status("POST", "/v1.0-alpha1/lock/lockstore",
                        json={"resourceId": "r", "lockOwner": "o", "expiryInSeconds": 5}) == 200
    assert await status("GET", "/v1.0/configuration/settings?key=greeting") == 200
    assert await status("POST", "/v1.0/invoke/id_2/method/stock", data=b"book1") == 200  # id_2 reads state itself
    assert await status("GET", "/v1.0/invoke/refuse/method/x") == 404  # the function's own answer
    found = await scrape(client)

    assert calls(found, "http", "state", "state_demo", "ok") == 3
    assert calls(found, "http", "state", "", "unknown_component") == 1
    assert calls(found, "http", "state", "state_demo", "conflict") == 1
    assert calls(found, "http", "pubsub", "pubsub", "ok") == 1
    assert calls(found, "http", "lock", "lockstore", "ok") == 1
    assert calls(found, "http", "configuration", "settings", "ok") == 1
    assert calls(found, "http", "invoke", "id_2", "ok") == 1
    assert calls(found, "http", "invoke", "refuse", "ok") == 1  # answered: its 404 is in its request metrics
    assert timed(found, "http", "state", "state_demo") == 4
    # The function id_2 read the state store itself: counted under api="function", not "http".
    assert calls(found, "function", "state", "state_demo", "ok") == 1
    assert not series(found, "wasm_faas_runtime_calls_total", api="grpc")


async def test_foreign_runtime_calls_of_a_guest_are_counted_under_function(serve, tmp_path: Path) -> None:
    stale = pb.SaveStateRequest(store_name="state_demo", states=[
        pb.StateItem(key="fk", value=b"x", etag=pb.Etag(value="999"))])
    invoke = pb.InvokeServiceRequest(id="id_2", message=pb.CommonInvokeRequest(method="stock"))
    invoke.message.data.value = b"book1"
    guest_calls = [
        ("runtime.v1.SaveState", pb.SaveStateRequest(store_name="state_demo", states=[
            pb.StateItem(key="fk", value=b"v")])),
        ("runtime.v1.GetState", pb.GetStateRequest(store_name="state_demo", key="fk")),
        ("runtime.v1.SaveState", stale),
        ("runtime.v1.GetState", pb.GetStateRequest(store_name="elsewhere", key="fk")),
        ("runtime.v1.InvokeService", invoke),
    ]
    tmp_path.mkdir(exist_ok=True)
    config = api_config(tmp_path)
    write_guest(Path(config.functions_dirs[0]), "foreign",
                calls_guest([(name, message.SerializeToString()) for name, message in guest_calls]))
    client = await serve(config)
    assert (await client.call("foreign"))[0] == 200
    found = await scrape(client)
    # SaveState + GetState from the foreign route, and id_2's own proxy_get_state when invoked.
    assert calls(found, "function", "state", "state_demo", "ok") == 3
    assert calls(found, "function", "state", "state_demo", "conflict") == 1
    assert calls(found, "function", "state", "", "unknown_component") == 1
    assert calls(found, "function", "invoke", "id_2", "ok") == 1
    assert not {value for _, labels in found for _, value in labels} & {"elsewhere"}


# -- event deliveries into a function ----------------------------------------------------------------
def _probe_config(tmp_path: Path, c_guests: Path, refusals: int, subscriptions: list[dict[str, Any]]) -> Any:
    folder = functions_dir(tmp_path, c_guests / "event_probe.wasm")
    (folder / "event_probe.toml").write_text(f'plugin_config = "{refusals}"\n')
    return make_config(tmp_path, folder, pubsub={"bus": {"type": "memory"}}, state={"events": {"type": "memory"}},
                       subscriptions=[{"function": "event_probe", "pubsub": "bus", "backoff_ms": 20,
                                       "max_backoff_ms": 50, **fields} for fields in subscriptions])


def _publish(client: Client, topic: str, data: bytes) -> None:
    app = client.server.app
    app.components.of("pubsub")["bus"].publish(topic, envelope(data, "text/plain", topic=topic, pubsub_name="bus",
                                                               source=app.config.app_id))


def deliveries(found: Samples, topic: str, outcome: str) -> float:
    labels = {"function": "event_probe", "pubsub": "bus", "topic": topic, "group": "wasm-faas.event_probe",
              "outcome": outcome}
    return found[("wasm_faas_event_deliveries_total", frozenset(labels.items()))]


def delivery_times(found: Samples, topic: str) -> float:
    labels = {"function": "event_probe", "pubsub": "bus", "topic": topic, "group": "wasm-faas.event_probe"}
    return found[("wasm_faas_event_delivery_duration_seconds_count", frozenset(labels.items()))]


async def _settled(client: Client, attempts: int, timeout_s: float = 10.0) -> Samples:
    """The exposition once `attempts` delivery attempts were settled over all subscriptions."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await scrape(client)
        total = sum(series(found, "wasm_faas_event_deliveries_total").values())
        if total >= attempts:
            return found
        assert time.monotonic() < deadline, f"{total} of {attempts} attempts settled"
        await asyncio.sleep(0.05)


async def test_an_event_delivered_after_a_retry_is_counted(serve, tmp_path: Path, c_guests: Path) -> None:
    client = await serve(_probe_config(tmp_path, c_guests, refusals=1,
                                       subscriptions=[{"topic": "jobs", "max_attempts": 3}]))
    found = await scrape(client)
    assert deliveries(found, "jobs", "delivered") == 0  # every outcome is there from the start
    await asyncio.to_thread(_publish, client, "jobs", b"job-1")
    found = await _settled(client, attempts=2)
    assert (deliveries(found, "jobs", "delivered"), deliveries(found, "jobs", "retried")) == (1, 1)
    assert (deliveries(found, "jobs", "dead_lettered"), deliveries(found, "jobs", "dropped")) == (0, 0)
    assert delivery_times(found, "jobs") == 2


async def test_a_refused_event_is_retried_then_dead_lettered_or_dropped(serve, tmp_path: Path,
                                                                        c_guests: Path) -> None:
    client = await serve(_probe_config(tmp_path, c_guests, refusals=-1, subscriptions=[
        {"topic": "jobs", "max_attempts": 3, "dead_letter_topic": "jobs-dead"},
        {"topic": "lost", "max_attempts": 2}]))
    await asyncio.to_thread(_publish, client, "jobs", b"job-1")
    await asyncio.to_thread(_publish, client, "lost", b"job-2")
    found = await _settled(client, attempts=3 + 2)
    assert [deliveries(found, "jobs", outcome) for outcome in ("delivered", "retried", "dead_lettered", "dropped")] \
        == [0, 2, 1, 0]
    assert [deliveries(found, "lost", outcome) for outcome in ("delivered", "retried", "dead_lettered", "dropped")] \
        == [0, 1, 0, 1]
    assert (delivery_times(found, "jobs"), delivery_times(found, "lost")) == (3, 2)
    _, info = await client.admin_get("/actuator/info")
    assert [(s["dead_lettered"], s["dropped"]) for s in info["subscriptions"]] == [(1, 0), (0, 1)]

"""The official Dapr Python SDK (dapr==1.19.0, unchanged) pointed at a real host: state (ETags as
the SDK reports a conflict, bulk, transactions), invoking wasm functions over HTTP (the SDK's
default) and gRPC, publish, locks from two clients, configuration get and subscribe, metadata, and
the API token with its exemptions. The SDK is synchronous and blocks: every call runs in a thread,
so the host keeps serving on the test's event loop."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from host.components.configuration import ConfigItem
from host.components.pubsub.cloudevents import parse
from tests.grpc.api_support import api_config
from tests.grpc.test_generated_protos import require_package

T = TypeVar("T")
# The SDK warns on every lock call (an Alpha API) and on gRPC invocation (deprecated upstream).
pytestmark = [pytest.mark.filterwarnings("ignore:The Distributed Lock API is an Alpha version"),
              pytest.mark.filterwarnings("ignore:invoke_method with protocol gRPC is deprecated")]


@pytest.fixture(autouse=True)
def _sdk_installed() -> None:
    require_package("dapr", "the official Dapr SDK, pointed at the host")


def point_sdk_at(monkeypatch: pytest.MonkeyPatch, server: Any, *, token: str | None = None,
                 protocol: str = "http") -> None:
    """The SDK reads these at each access (dapr/conf)."""
    monkeypatch.setenv("DAPR_GRPC_ENDPOINT", f"127.0.0.1:{server.grpc_port}")
    monkeypatch.setenv("DAPR_HTTP_ENDPOINT", f"http://127.0.0.1:{server.dapr_http_port}")
    monkeypatch.setenv("DAPR_HEALTH_TIMEOUT", "3")
    monkeypatch.setenv("DAPR_API_METHOD_INVOCATION_PROTOCOL", protocol)
    if token is None:
        monkeypatch.delenv("DAPR_API_TOKEN", raising=False)
    else:
        monkeypatch.setenv("DAPR_API_TOKEN", token)


async def with_client(work: Callable[[Any], T]) -> T:
    """`work(DaprClient())` in a thread (construction itself probes /v1.0/healthz/outbound)."""
    from dapr.clients import DaprClient

    def run() -> T:
        with DaprClient() as client:
            return work(client)

    return await asyncio.to_thread(run)


async def test_state_save_get_delete_and_etag_conflict(serve, tmp_path: Path, monkeypatch) -> None:
    from dapr.clients.exceptions import DaprGrpcError

    client = await serve(api_config(tmp_path))
    point_sdk_at(monkeypatch, client.server)

    def work(d: Any) -> dict[str, Any]:
        d.save_state("state_demo", "sdk-key", "first")
        first = d.get_state("state_demo", "sdk-key")
        d.save_state("state_demo", "sdk-key", "second", etag=first.etag)
        second = d.get_state("state_demo", "sdk-key")
        try:
            d.save_state("state_demo", "sdk-key", "stale", etag=first.etag)
            conflict = None
        except DaprGrpcError as error:
            conflict = error
        try:
            d.get_state("no-such-store", "k")
            unknown = None
        except DaprGrpcError as error:
            unknown = error
        d.delete_state("state_demo", "sdk-key", etag=second.etag)
        return {"first": first, "second": second, "conflict": conflict, "unknown": unknown,
                "after": d.get_state("state_demo", "sdk-key")}

    seen = await with_client(work)
    assert seen["first"].data == b"first" and seen["first"].etag
    assert seen["second"].data == b"second" and seen["second"].etag != seen["first"].etag
    assert seen["conflict"] is not None and seen["conflict"].code() == grpc.StatusCode.ABORTED
    assert seen["unknown"] is not None and seen["unknown"].code() == grpc.StatusCode.INVALID_ARGUMENT
    assert seen["after"].data == b"" and seen["after"].etag == ""


async def test_bulk_state_and_transaction(serve, tmp_path: Path, monkeypatch) -> None:
    from dapr.clients.exceptions import DaprGrpcError
    from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
    from dapr.clients.grpc._state import StateItem

    client = await serve(api_config(tmp_path))
    point_sdk_at(monkeypatch, client.server)

    def work(d: Any) -> dict[str, Any]:
        d.save_bulk_state("state_demo", [StateItem(key="b1", value="one"), StateItem(key="b2", value="two")])
        bulk = d.get_bulk_state("state_demo", ["b1", "b2", "book1", "missing"]).items
        d.execute_state_transaction("state_demo", [
            TransactionalStateOperation(key="b3", data="three"),
            TransactionalStateOperation(key="b1", data="", operation_type=TransactionOperationType.delete)])
        try:  # a conflict inside a transaction: Internal, as Dapr answers
            d.execute_state_transaction("state_demo", [TransactionalStateOperation(key="b2", data="x", etag="77")])
            failed = None
        except DaprGrpcError as error:
            failed = error
        after = d.get_bulk_state("state_demo", ["b1", "b2", "b3"]).items
        return {"bulk": bulk, "after": after, "failed": failed}

    seen = await with_client(work)
    assert [(i.key, i.data, bool(i.etag)) for i in seen["bulk"]] == [
        ("b1", b"one", True), ("b2", b"two", True), ("book1", b"100", True), ("missing", b"", False)]
    assert [(i.key, i.data) for i in seen["after"]] == [("b1", b""), ("b2", b"two"), ("b3", b"three")]
    assert seen["failed"] is not None and seen["failed"].code() == grpc.StatusCode.INTERNAL


@pytest.mark.parametrize("protocol", ["http", "grpc"])
async def test_invoke_a_wasm_function(serve, tmp_path: Path, monkeypatch, protocol: str) -> None:
    client = await serve(api_config(tmp_path))
    point_sdk_at(monkeypatch, client.server, protocol=protocol)

    def work(d: Any) -> tuple[bytes, bytes]:
        stock = d.invoke_method("id_2", "stock", data="book1", http_verb="POST")
        # Write through the SDK, read through the function (same state store).
        d.save_state("state_demo", "book9", "9 copies")
        return stock.data, d.invoke_method("id_2", "stock", data="book9", http_verb="POST").data

    assert await with_client(work) == (b"100", b"9 copies")


async def test_invoke_with_the_sdk_default_verb_and_a_failing_function(serve, tmp_path: Path,
                                                                       monkeypatch) -> None:
    from dapr.clients.exceptions import DaprHttpError

    client = await serve(api_config(tmp_path))
    point_sdk_at(monkeypatch, client.server)

    def work(d: Any) -> tuple[Any, Any]:
        echoed = d.invoke_method("echo", "path/x", data=b"payload")  # no verb: the SDK sends GET
        try:
            d.invoke_method("refuse", "anything")
            refused = None
        except DaprHttpError as error:
            refused = error
        return echoed, refused

    echoed, refused = await with_client(work)
    assert b"GET" in echoed.data and b"/path/x" in echoed.data and b"payload" in echoed.data
    assert refused is not None and refused.status_code == 404


async def test_publish_single_and_bulk(serve, tmp_path: Path, monkeypatch) -> None:
    client = await serve(api_config(tmp_path))
    point_sdk_at(monkeypatch, client.server)
    pubsub = client.server.app.components.of("pubsub")["pubsub"]
    subscription = await asyncio.to_thread(pubsub.subscribe, "sdk-topic", "sdk-test", "c1")
    try:
        def work(d: Any) -> Any:
            d.publish_event("pubsub", "sdk-topic", json.dumps({"n": 1}), data_content_type="application/json")
            return d.publish_events("pubsub", "sdk-topic", ["a", "b"], data_content_type="text/plain")

        bulk = await with_client(work)
        assert bulk.failed_entries == []
        messages = await asyncio.to_thread(subscription.fetch, 3, 2.0)
    finally:
        await asyncio.to_thread(subscription.close)
    events = [parse(message.data) for message in messages]
    assert [event.data for event in events] == [b'{"n":1}', b"a", b"b"]
    assert {event.source for event in events} == {"api-test"}


async def test_try_lock_and_unlock_from_two_clients(serve, tmp_path: Path, monkeypatch) -> None:
    from dapr.clients import DaprClient
    from dapr.clients.grpc._response import UnlockResponseStatus

    client = await serve(api_config(tmp_path))
    point_sdk_at(monkeypatch, client.server)

    def work() -> list[Any]:
        with DaprClient() as alice, DaprClient() as bob:
            taken = alice.try_lock("lockstore", "printer", "alice", expiry_in_seconds=10).success
            refused = bob.try_lock("lockstore", "printer", "bob", expiry_in_seconds=10).success
            not_bobs = bob.unlock("lockstore", "printer", "bob").status
            released = alice.unlock("lockstore", "printer", "alice").status
            now_bobs = bob.try_lock("lockstore", "printer", "bob", expiry_in_seconds=10).success
            gone = alice.unlock("lockstore", "nothing", "alice").status
            return [taken, refused, not_bobs, released, now_bobs, gone]

    assert await asyncio.to_thread(work) == [True, False, UnlockResponseStatus.lock_belongs_to_others,
                                             UnlockResponseStatus.success, True,
                                             UnlockResponseStatus.lock_does_not_exist]


async def test_configuration_get_and_subscribe(serve, tmp_path: Path, monkeypatch) -> None:
    client = await serve(api_config(tmp_path))
    point_sdk_at(monkeypatch, client.server)
    store = client.server.app.components.of("configuration")["settings"]
    changes: list[tuple[str, dict[str, str]]] = []
    changed = threading.Event()

    def handler(subscription_id: str, response: Any) -> None:
        changes.append((subscription_id, {key: item.value for key, item in response.items.items()}))
        changed.set()

    def work(d: Any) -> tuple[Any, str, bool, bool]:
        got = d.get_configuration("settings", ["greeting", "missing"])
        subscription = d.subscribe_configuration("settings", ["color"], handler)
        store.save([ConfigItem(key="color", value="green")])  # a change made by someone else
        arrived = changed.wait(5)
        return got, subscription, arrived, d.unsubscribe_configuration("settings", subscription)

    got, subscription, arrived, unsubscribed = await with_client(work)
    assert {key: item.value for key, item in got.items.items()} == {"greeting": "hello"}
    assert got.items["greeting"].version
    assert subscription and arrived and unsubscribed
    assert changes == [(subscription, {"color": "green"})]


async def test_metadata(serve, tmp_path: Path, monkeypatch) -> None:
    client = await serve(api_config(tmp_path))
    point_sdk_at(monkeypatch, client.server)

    def work(d: Any) -> Any:
        d.set_metadata("team", "runtime")
        return d.get_metadata()

    metadata = await with_client(work)
    assert metadata.application_id == "api-test"
    types = {component.name: component.type for component in metadata.registered_components}
    assert types == {"state_demo": "state.memory", "pubsub": "pubsub.memory", "lockstore": "lock.memory",
                     "ids": "sequencer.memory", "settings": "configuration.file"}
    assert metadata.extended_metadata["team"] == "runtime"
    assert set(metadata.extended_metadata["functions"].split(",")) == {"id_2", "echo", "refuse"}


async def test_api_token_refused_without_accepted_with_health_exempt(serve, tmp_path: Path, monkeypatch) -> None:
    from dapr.clients.exceptions import DaprGrpcError, DaprHttpError

    client = await serve(api_config(tmp_path, server={"api_token": "s3cret"}))
    point_sdk_at(monkeypatch, client.server)  # no token: the health probe still answers

    def without(d: Any) -> tuple[Any, Any]:
        try:
            d.get_state("state_demo", "book1")
            grpc_error = None
        except DaprGrpcError as error:
            grpc_error = error
        try:
            d.invoke_method("id_2", "stock", data="book1", http_verb="POST")
            http_error = None
        except DaprHttpError as error:
            http_error = error
        return grpc_error, http_error

    grpc_error, http_error = await with_client(without)
    assert grpc_error is not None and grpc_error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert http_error is not None and http_error.status_code == 401

    point_sdk_at(monkeypatch, client.server, token="wrong")
    wrong, _ = await with_client(without)
    assert wrong is not None and wrong.code() == grpc.StatusCode.UNAUTHENTICATED

    point_sdk_at(monkeypatch, client.server, token="s3cret")

    def with_token(d: Any) -> tuple[bytes, bytes, str]:
        # Server-streaming calls carry no token from this SDK: they are exempt, so this works too.
        subscription = d.subscribe_configuration("settings", ["color"], lambda *_: None)
        d.unsubscribe_configuration("settings", subscription)
        return (d.get_state("state_demo", "book1").data,
                d.invoke_method("id_2", "stock", data="book1", http_verb="POST").data, subscription)

    state, invoked, subscription = await with_client(with_token)
    assert (state, invoked) == (b"100", b"100") and subscription


async def test_state_over_redis_in_daprs_layout(serve, tmp_path: Path, monkeypatch) -> None:
    """The same API over a real Redis store: the SDK's writes land in Dapr's layout (a hash with
    `data` and `version` under `<prefix>||<key>`), and ETags are its version counter."""
    import redis

    from tests.services import REDIS_ADDRESS, require_redis, unique_prefix

    require_redis()
    prefix = unique_prefix("api-sdk")
    host, _, port = REDIS_ADDRESS.rpartition(":")
    direct = redis.Redis(host=host, port=int(port))
    try:
        config = api_config(tmp_path, state={"shared": {"type": "redis", "address": REDIS_ADDRESS,
                                                        "key_prefix": prefix, "timeout_ms": 2000}})
        client = await serve(config)
        point_sdk_at(monkeypatch, client.server)
        from dapr.clients.exceptions import DaprGrpcError

        def work(d: Any) -> tuple[Any, Any, Any]:
            d.save_state("shared", "order", "v1")
            first = d.get_state("shared", "order")
            d.save_state("shared", "order", "v2", etag=first.etag)
            try:
                d.save_state("shared", "order", "v3", etag=first.etag)
                conflict = None
            except DaprGrpcError as error:
                conflict = error
            return first, d.get_state("shared", "order"), conflict

        first, second, conflict = await with_client(work)
        assert (first.data, first.etag, second.data, second.etag) == (b"v1", "1", b"v2", "2")
        assert conflict is not None and conflict.code() == grpc.StatusCode.ABORTED
        assert direct.hgetall(f"{prefix}||order") == {b"data": b"v2", b"version": b"2"}
    finally:
        stale = list(direct.scan_iter(match=f"{prefix}*", count=1000))
        if stale:
            direct.delete(*stale)
        direct.close()

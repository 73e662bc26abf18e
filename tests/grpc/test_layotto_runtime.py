"""Layotto's `spec.proto.runtime.v1.Runtime` on a real host, through stubs generated from the
project's own `.proto` files: every RPC, its answers and its error codes (unknown stores, none
configured, bad arguments, ETag conflicts), and that it shares the components functions use."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from host.components.pubsub.cloudevents import parse
from host.grpc import pool
from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2 as pb
from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2_grpc
from tests.grpc.api_support import api_config
from tests.guest_wat import Results

TIMEOUT = 5.0
Code = grpc.StatusCode
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Host:
    def __init__(self, client, stub: runtime_pb2_grpc.RuntimeStub):
        self.client = client
        self.app = client.server.app
        self.stub = stub


@pytest_asyncio.fixture
async def host(serve, tmp_path: Path) -> AsyncIterator[Host]:
    client = await serve(api_config(tmp_path))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{client.server.grpc_port}") as channel:
        yield Host(client, runtime_pb2_grpc.RuntimeStub(channel))


async def fails(call, code: grpc.StatusCode, *words: str) -> str:
    """Awaits `call`, which must fail with `code` and a message containing `words`."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code, raised.value.details()
    details = raised.value.details() or ""
    for word in words:
        assert word in details, details
    return details


def item(key: str, value: bytes, etag: str | None = None, **options: int) -> pb.StateItem:
    state = pb.StateItem(key=key, value=value, options=pb.StateOptions(**options))
    if etag is not None:
        state.etag.value = etag
    return state


async def test_say_hello_echoes_its_data(host: Host) -> None:
    data = pool.Any(type_url="type.googleapis.com/x", value=b"\x01\x02")
    answer = await host.stub.SayHello(pb.SayHelloRequest(service_name="helloworld", name="layotto", data=data),
                                      timeout=TIMEOUT)
    assert answer.hello == "greetings, layotto"
    assert answer.data.value == b"\x01\x02" and answer.data.type_url == "type.googleapis.com/x"


async def test_state_round_trip_etags_and_codes(host: Host) -> None:
    stub = host.stub
    await stub.SaveState(pb.SaveStateRequest(store_name="state_demo", states=[item("k1", b"v1")]), timeout=TIMEOUT)
    got = await stub.GetState(pb.GetStateRequest(store_name="state_demo", key="k1"), timeout=TIMEOUT)
    assert got.data == b"v1" and got.etag
    # The same store instance functions use: the host's component holds the write.
    assert host.app.components.of("state")["state_demo"].get("k1").value == b"v1"

    # A matching ETag writes (and moves the ETag on); a stale one is Aborted, a malformed one InvalidArgument.
    await stub.SaveState(pb.SaveStateRequest(store_name="state_demo", states=[item("k1", b"v2", got.etag)]),
                         timeout=TIMEOUT)
    await fails(stub.SaveState(pb.SaveStateRequest(store_name="state_demo", states=[item("k1", b"v3", got.etag)]),
                               timeout=TIMEOUT), Code.ABORTED)
    await fails(stub.SaveState(pb.SaveStateRequest(store_name="state_demo", states=[item("k1", b"v3", "x")]),
                               timeout=TIMEOUT), Code.INVALID_ARGUMENT, "ETag")
    # last-write ignores the ETag, as Dapr does.
    await stub.SaveState(pb.SaveStateRequest(store_name="state_demo", states=[
        item("k1", b"v4", "999", concurrency=pb.StateOptions.CONCURRENCY_LAST_WRITE)]), timeout=TIMEOUT)
    current = await stub.GetState(pb.GetStateRequest(store_name="state_demo", key="k1"), timeout=TIMEOUT)
    assert current.data == b"v4"

    await fails(stub.DeleteState(pb.DeleteStateRequest(store_name="state_demo", key="k1", etag=pb.Etag(value="1")),
                                 timeout=TIMEOUT), Code.ABORTED)
    await stub.DeleteState(pb.DeleteStateRequest(store_name="state_demo", key="k1",
                                                 etag=pb.Etag(value=current.etag)), timeout=TIMEOUT)
    missing = await stub.GetState(pb.GetStateRequest(store_name="state_demo", key="k1"), timeout=TIMEOUT)
    assert missing.data == b"" and missing.etag == ""

    await fails(stub.GetState(pb.GetStateRequest(store_name="nope", key="k1"), timeout=TIMEOUT),
                Code.INVALID_ARGUMENT, "nope")
    await fails(stub.GetState(pb.GetStateRequest(store_name="", key="k1"), timeout=TIMEOUT), Code.INVALID_ARGUMENT)
    await fails(stub.GetState(pb.GetStateRequest(store_name="state_demo", key=""), timeout=TIMEOUT),
                Code.INVALID_ARGUMENT)
    await fails(stub.GetState(pb.GetStateRequest(store_name="state_demo", key="a||b"), timeout=TIMEOUT),
                Code.INVALID_ARGUMENT, "||")
    # Unsupported metadata is refused, naming it; ttlInSeconds is supported.
    await fails(stub.GetState(pb.GetStateRequest(store_name="state_demo", key="k", metadata={"partitionKey": "p"}),
                              timeout=TIMEOUT), Code.INVALID_ARGUMENT, "partitionKey")
    ttl = item("short", b"x")
    ttl.metadata["ttlInSeconds"] = "soon"
    await fails(stub.SaveState(pb.SaveStateRequest(store_name="state_demo", states=[ttl]), timeout=TIMEOUT),
                Code.INVALID_ARGUMENT, "ttlInSeconds")
    # An enum value the schema does not define is refused, naming the field.
    await fails(stub.SaveState(pb.SaveStateRequest(store_name="state_demo", states=[item("k", b"", concurrency=7)]),
                               timeout=TIMEOUT), Code.INVALID_ARGUMENT, "concurrency")


async def test_state_ttl_expires_the_key(host: Host) -> None:
    ttl = item("ephemeral", b"x")
    ttl.metadata["ttlInSeconds"] = "1"
    await host.stub.SaveState(pb.SaveStateRequest(store_name="state_demo", states=[ttl]), timeout=TIMEOUT)
    assert (await host.stub.GetState(pb.GetStateRequest(store_name="state_demo", key="ephemeral"))).data == b"x"
    await asyncio.sleep(1.1)
    assert (await host.stub.GetState(pb.GetStateRequest(store_name="state_demo", key="ephemeral"))).data == b""


async def test_bulk_state_and_transactions(host: Host) -> None:
    stub = host.stub
    await stub.SaveState(pb.SaveStateRequest(store_name="state_demo", states=[item("a", b"1"), item("b", b"2")]),
                         timeout=TIMEOUT)
    bulk = await stub.GetBulkState(pb.GetBulkStateRequest(store_name="state_demo", keys=["a", "b", "none"]),
                                   timeout=TIMEOUT)
    assert [(i.key, i.data, bool(i.etag), i.error) for i in bulk.items] == [
        ("a", b"1", True, ""), ("b", b"2", True, ""), ("none", b"", False, "")]
    await stub.DeleteBulkState(pb.DeleteBulkStateRequest(store_name="state_demo", states=[item("a", b"")]),
                               timeout=TIMEOUT)
    await fails(stub.DeleteBulkState(pb.DeleteBulkStateRequest(store_name="state_demo", states=[item("b", b"x")]),
                                     timeout=TIMEOUT), Code.INVALID_ARGUMENT, "value")

    etag_b = bulk.items[1].etag
    await stub.ExecuteStateTransaction(pb.ExecuteStateTransactionRequest(storeName="state_demo", operations=[
        pb.TransactionalStateOperation(operationType="upsert", request=item("c", b"3")),
        pb.TransactionalStateOperation(operationType="delete", request=pb.StateItem(key="b", etag=pb.Etag(
            value=etag_b)))]), timeout=TIMEOUT)
    after = await stub.GetBulkState(pb.GetBulkStateRequest(store_name="state_demo", keys=["a", "b", "c"]),
                                    timeout=TIMEOUT)
    assert [(i.key, i.data) for i in after.items] == [("a", b""), ("b", b""), ("c", b"3")]
    # Any failure inside a transaction is Internal, an ETag conflict included (Dapr's code); nothing applied.
    await fails(stub.ExecuteStateTransaction(pb.ExecuteStateTransactionRequest(storeName="state_demo", operations=[
        pb.TransactionalStateOperation(operationType="upsert", request=item("d", b"4")),
        pb.TransactionalStateOperation(operationType="upsert", request=item("c", b"5", etag="42"))]),
        timeout=TIMEOUT), Code.INTERNAL)
    assert host.app.components.of("state")["state_demo"].get("d") is None
    await fails(stub.ExecuteStateTransaction(pb.ExecuteStateTransactionRequest(storeName="state_demo", operations=[
        pb.TransactionalStateOperation(operationType="merge", request=item("c", b"5"))]), timeout=TIMEOUT),
        Code.UNIMPLEMENTED, "merge")
    await fails(stub.ExecuteStateTransaction(pb.ExecuteStateTransactionRequest(storeName="elsewhere"),
                                             timeout=TIMEOUT), Code.INVALID_ARGUMENT, "elsewhere")


async def test_invoke_service_reaches_functions_through_the_call_path(host: Host) -> None:
    request = pb.InvokeServiceRequest(id="id_2", message=pb.CommonInvokeRequest(method="stock"))
    request.message.data.value = b"book1"
    answer = await host.stub.InvokeService(request, timeout=TIMEOUT)
    assert answer.data.value == b"100"  # function_2 reads state_demo's seeded book1

    # The translation: verb, path with query string, content type and metadata become the HTTP request.
    echo = pb.InvokeServiceRequest(id="echo", message=pb.CommonInvokeRequest(
        method="orders/7", content_type="application/json",
        http_extension=pb.HTTPExtension(verb=pb.HTTPExtension.PUT, querystring="full=1")))
    echo.message.data.value = b'{"n": 1}'
    answer = await host.stub.InvokeService(echo, metadata=(("x-trace", "t-1"),), timeout=TIMEOUT)
    seen = Results(answer.data.value)
    assert [seen.ret()[1] for _ in range(5)] == [b"PUT", b"/orders/7?full=1", b"application/json", b"t-1",
                                                 b'{"n": 1}']

    await fails(host.stub.InvokeService(pb.InvokeServiceRequest(id="ghost", message=pb.CommonInvokeRequest(
        method="x")), timeout=TIMEOUT), Code.NOT_FOUND, "ghost")
    await fails(host.stub.InvokeService(pb.InvokeServiceRequest(id="", message=pb.CommonInvokeRequest()),
                                        timeout=TIMEOUT), Code.INVALID_ARGUMENT)
    # A function's non-2xx answer is an error with Dapr's code for that status (404 -> NotFound).
    await fails(host.stub.InvokeService(pb.InvokeServiceRequest(id="refuse", message=pb.CommonInvokeRequest(
        method="x")), timeout=TIMEOUT), Code.NOT_FOUND, "404", "no such thing")


async def test_publish_event_stores_a_cloudevent(host: Host) -> None:
    pubsub = host.app.components.of("pubsub")["pubsub"]
    subscription = await asyncio.to_thread(pubsub.subscribe, "orders", "test-group", "test-consumer")
    try:
        await host.stub.PublishEvent(pb.PublishEventRequest(pubsub_name="pubsub", topic="orders", data=b'{"id": 7}',
                                                            data_content_type="application/json"),
                                     metadata=(("traceparent", TRACEPARENT),),
                                     timeout=TIMEOUT)
        await host.stub.PublishEvent(pb.PublishEventRequest(pubsub_name="pubsub", topic="orders", data=b"raw bytes",
                                                            metadata={"rawPayload": "true"}), timeout=TIMEOUT)
        messages = await asyncio.to_thread(subscription.fetch, 2, 2.0)
        assert len(messages) == 2
        event = parse(messages[0].data)
        assert (event.source, event.type, event.topic, event.pubsubname) == ("api-test", "com.dapr.event.sent",
                                                                             "orders", "pubsub")
        assert json.loads(event.data) == {"id": 7}
        assert event.extensions["traceparent"].startswith("00-0af7651916cd43dd")
        assert messages[1].data == b"raw bytes"
    finally:
        await asyncio.to_thread(subscription.close)
    await fails(host.stub.PublishEvent(pb.PublishEventRequest(pubsub_name="nope", topic="t"), timeout=TIMEOUT),
                Code.INVALID_ARGUMENT, "nope")
    await fails(host.stub.PublishEvent(pb.PublishEventRequest(pubsub_name="pubsub", topic=""), timeout=TIMEOUT),
                Code.INVALID_ARGUMENT, "topic")
    await fails(host.stub.PublishEvent(pb.PublishEventRequest(pubsub_name="pubsub", topic="t",
                                                              metadata={"ttlInSeconds": "5"}), timeout=TIMEOUT),
                Code.INVALID_ARGUMENT, "ttlInSeconds")


async def test_try_lock_and_unlock(host: Host) -> None:
    stub = host.stub
    take = pb.TryLockRequest(store_name="lockstore", resource_id="order-1", lock_owner="alice", expire=10)
    assert (await stub.TryLock(take, timeout=TIMEOUT)).success
    other = pb.TryLockRequest(store_name="lockstore", resource_id="order-1", lock_owner="bob", expire=10)
    assert not (await stub.TryLock(other, timeout=TIMEOUT)).success
    unlock = pb.UnlockRequest(store_name="lockstore", resource_id="order-1", lock_owner="bob")
    assert (await stub.Unlock(unlock, timeout=TIMEOUT)).status == pb.UnlockResponse.LOCK_BELONG_TO_OTHERS
    unlock.lock_owner = "alice"
    assert (await stub.Unlock(unlock, timeout=TIMEOUT)).status == pb.UnlockResponse.SUCCESS
    assert (await stub.Unlock(unlock, timeout=TIMEOUT)).status == pb.UnlockResponse.LOCK_UNEXIST
    await fails(stub.TryLock(pb.TryLockRequest(store_name="lockstore", resource_id="r", lock_owner="a", expire=0),
                             timeout=TIMEOUT), Code.INVALID_ARGUMENT, "expir")
    await fails(stub.TryLock(pb.TryLockRequest(store_name="lockstore", resource_id="", lock_owner="a", expire=1),
                             timeout=TIMEOUT), Code.INVALID_ARGUMENT, "resource")
    await fails(stub.TryLock(pb.TryLockRequest(store_name="lockstore", resource_id="r", lock_owner="", expire=1),
                             timeout=TIMEOUT), Code.INVALID_ARGUMENT, "owner")
    await fails(stub.Unlock(pb.UnlockRequest(store_name="locks?", resource_id="r", lock_owner="a"), timeout=TIMEOUT),
                Code.INVALID_ARGUMENT, "locks?")
    await fails(stub.LockKeepAlive(pb.LockKeepAliveRequest(store_name="lockstore", resource_id="r", lock_owner="a",
                                                           expire=1), timeout=TIMEOUT), Code.UNIMPLEMENTED)


async def test_get_next_id(host: Host) -> None:
    strong = pb.GetNextIdRequest(store_name="ids", key="order",
                                 options=pb.SequencerOptions(increment=pb.SequencerOptions.STRONG))
    first = (await host.stub.GetNextId(strong, timeout=TIMEOUT)).next_id
    assert (await host.stub.GetNextId(strong, timeout=TIMEOUT)).next_id == first + 1
    weak = pb.GetNextIdRequest(store_name="ids", key="order")
    weak_ids = [(await host.stub.GetNextId(weak, timeout=TIMEOUT)).next_id for _ in range(3)]
    assert weak_ids == sorted(weak_ids) and len(set(weak_ids)) == 3 and weak_ids[0] > first + 1
    # STRONG after WEAK: above the reserved segment, never a duplicate.
    assert (await host.stub.GetNextId(strong, timeout=TIMEOUT)).next_id > weak_ids[-1]
    await fails(host.stub.GetNextId(pb.GetNextIdRequest(store_name="ids", key=""), timeout=TIMEOUT),
                Code.INVALID_ARGUMENT, "key")
    await fails(host.stub.GetNextId(pb.GetNextIdRequest(store_name="nope", key="k"), timeout=TIMEOUT),
                Code.INVALID_ARGUMENT, "nope")
    await fails(host.stub.GetNextId(pb.GetNextIdRequest(store_name="ids", key="k", metadata={"a": "b"}),
                                    timeout=TIMEOUT), Code.INVALID_ARGUMENT, "'a'")


async def test_configuration_get_save_delete_and_subscribe(host: Host) -> None:
    stub = host.stub
    got = await stub.GetConfiguration(pb.GetConfigurationRequest(store_name="settings", keys=["greeting"]),
                                      timeout=TIMEOUT)
    assert [(i.key, i.content, i.group) for i in got.items] == [("greeting", "hello", "")]
    ops = await stub.GetConfiguration(pb.GetConfigurationRequest(store_name="settings", group="ops", label="v1",
                                                                 keys=["greeting"]), timeout=TIMEOUT)
    assert [(i.key, i.content, i.group, i.label) for i in ops.items] == [("greeting", "hello ops", "ops", "v1")]

    stream = stub.SubscribeConfiguration(timeout=10)
    await stream.write(pb.SubscribeConfigurationRequest(store_name="settings", keys=["color"]))
    await asyncio.sleep(0.2)  # the subscription is made by the server when it reads the request
    await stub.SaveConfiguration(pb.SaveConfigurationRequest(store_name="settings", items=[
        pb.ConfigurationItem(key="color", content="blue", tags={"team": "web"})]), timeout=TIMEOUT)
    update = await asyncio.wait_for(stream.read(), TIMEOUT)
    assert update.store_name == "settings" and update.app_id == "api-test"
    assert [(i.key, i.content, dict(i.tags)) for i in update.items] == [("color", "blue", {"team": "web"})]

    await stub.DeleteConfiguration(pb.DeleteConfigurationRequest(store_name="settings", keys=["color"]),
                                   timeout=TIMEOUT)
    deleted = await asyncio.wait_for(stream.read(), TIMEOUT)
    assert [(i.key, i.content) for i in deleted.items] == [("color", "")]
    stream.cancel()
    gone = await stub.GetConfiguration(pb.GetConfigurationRequest(store_name="settings", keys=["color"]),
                                       timeout=TIMEOUT)
    assert list(gone.items) == []

    await fails(stub.GetConfiguration(pb.GetConfigurationRequest(store_name="nope"), timeout=TIMEOUT),
                Code.INVALID_ARGUMENT, "nope")
    await fails(stub.GetConfiguration(pb.GetConfigurationRequest(store_name="settings", subscribe_update=True),
                                      timeout=TIMEOUT), Code.INVALID_ARGUMENT, "subscribe_update")
    await fails(stub.GetConfiguration(pb.GetConfigurationRequest(store_name="settings", app_id="someone-else"),
                                      timeout=TIMEOUT), Code.INVALID_ARGUMENT, "app_id")
    bad = stub.SubscribeConfiguration(timeout=TIMEOUT)
    await bad.write(pb.SubscribeConfigurationRequest(store_name="nope"))
    await fails(bad.read(), Code.INVALID_ARGUMENT, "nope")


async def test_unserved_rpcs_answer_unimplemented(host: Host) -> None:
    await fails(host.stub.GetSecret(pb.GetSecretRequest(store_name="s", key="k"), timeout=TIMEOUT),
                Code.UNIMPLEMENTED)
    await fails(host.stub.InvokeBinding(pb.InvokeBindingRequest(name="b"), timeout=TIMEOUT), Code.UNIMPLEMENTED)


async def test_no_component_configured_is_failed_precondition(serve, tmp_path: Path) -> None:
    config = api_config(tmp_path, with_functions=False, state={}, lock={}, sequencer={}, pubsub={},
                        configuration={})
    client = await serve(config)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{client.server.grpc_port}") as channel:
        stub = runtime_pb2_grpc.RuntimeStub(channel)
        calls = [stub.GetState(pb.GetStateRequest(store_name="s", key="k"), timeout=TIMEOUT),
                 stub.TryLock(pb.TryLockRequest(store_name="l", resource_id="r", lock_owner="o", expire=1),
                              timeout=TIMEOUT),
                 stub.GetNextId(pb.GetNextIdRequest(store_name="q", key="k"), timeout=TIMEOUT),
                 stub.PublishEvent(pb.PublishEventRequest(pubsub_name="p", topic="t"), timeout=TIMEOUT),
                 stub.GetConfiguration(pb.GetConfigurationRequest(store_name="c"), timeout=TIMEOUT)]
        for call in calls:
            await fails(call, Code.FAILED_PRECONDITION, "configured")


async def test_api_token_and_message_size_limit(serve, tmp_path: Path) -> None:
    config = api_config(tmp_path, with_functions=False, server={"api_token": "t0k", "api_max_message_bytes": 2048})
    client = await serve(config)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{client.server.grpc_port}") as channel:
        stub = runtime_pb2_grpc.RuntimeStub(channel)
        get = pb.GetStateRequest(store_name="state_demo", key="book1")
        await fails(stub.GetState(get, timeout=TIMEOUT), Code.UNAUTHENTICATED, "missing")
        await fails(stub.GetState(get, metadata=(("dapr-api-token", "nope"),), timeout=TIMEOUT),
                    Code.UNAUTHENTICATED, "mismatch")
        token = (("dapr-api-token", "t0k"),)
        assert (await stub.GetState(get, metadata=token, timeout=TIMEOUT)).data == b"100"
        # Bidi streams need the token too (only server-streaming calls are exempt).
        stream = stub.SubscribeConfiguration(timeout=TIMEOUT)
        await stream.write(pb.SubscribeConfigurationRequest(store_name="settings"))
        await fails(stream.read(), Code.UNAUTHENTICATED)
        big = pb.SaveStateRequest(store_name="state_demo", states=[item("big", b"x" * 4096)])
        await fails(stub.SaveState(big, metadata=token, timeout=TIMEOUT), Code.RESOURCE_EXHAUSTED)
        # The host is still serving.
        assert (await stub.GetState(get, metadata=token, timeout=TIMEOUT)).data == b"100"

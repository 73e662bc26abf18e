"""W3C trace context through a real host with no exporter (propagation only): a traceparent that
enters at id_1 (the Layotto demo's real id_1) reaches id_2 over proxy_invoke_service, the event id_2
publishes (its CloudEvent trace extension) and the delivery of that event; outbound http and gRPC
calls get it unless the guest set its own; a malformed traceparent is ignored, never an error."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from host.components.pubsub.cloudevents import parse
from tests.conftest import EXAMPLES, functions_dir, make_config
from tests.guest_wat import Results, write_guest
from tests.tracing.trace_guests import (
    PUBSUB,
    TOPIC,
    TRACEPARENT,
    echo_trace,
    grpc_caller,
    http_caller,
    store_trace,
)
from tests.tracing.upstreams import GrpcRecorder, HttpRecorder

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
INCOMING = f"00-{TRACE_ID}-{PARENT_ID}-01"


def parts(traceparent: str) -> tuple[str, str, str]:
    match = TRACEPARENT.fullmatch(traceparent)
    assert match, traceparent
    return match.group(1), match.group(2), match.group(3)


def stock_of(body: bytes) -> str:
    """What id_2 answered, from id_1's sentence."""
    match = re.fullmatch(rb"There are (.+) inventories for book1\.", body)
    assert match, body
    return match.group(1).decode()


async def wait_for(probe: Any, what: str, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def stored(client: Any, key: bytes) -> str:
    """Shared data `key` as text ("" while it is not there)."""
    entry = client.server.app.services.shared_data.get(key)
    return entry[0].decode() if entry is not None else ""


@pytest.fixture
async def demo(serve, tmp_path: Path):
    """id_1 (examples/functions/function_1.wasm) calling an id_2 that echoes and publishes its
    traceparent; `sink` receives the published events."""
    folder = functions_dir(tmp_path, EXAMPLES / "function_1.wasm")
    write_guest(folder, "id_2", echo_trace(publish=True))
    write_guest(folder, "sink", store_trace("delivered"))
    config = make_config(tmp_path, folder, pubsub={PUBSUB: {"type": "memory"}},
                         subscriptions=[{"pubsub": PUBSUB, "topic": TOPIC, "function": "sink"}])
    return await serve(config)


def published(client: Any) -> list[Any]:
    bus = client.server.app.components.of("pubsub")[PUBSUB]
    subscription = bus.subscribe(TOPIC, "test-reader", "reader")  # a group of its own reads the whole log
    try:
        return [parse(message.data) for message in subscription.fetch(10, 0.5)]
    finally:
        subscription.close()


async def test_trace_id_entering_id_1_reaches_id_2_its_event_and_the_delivery(demo) -> None:
    status, _, body = await demo.call("id_1", "/?name=book1", headers={"traceparent": INCOMING,
                                                                       "tracestate": "vendor=abc"})
    assert status == 200, body
    seen_by_id_2 = stock_of(body)
    trace_id, id_1_span, flags = parts(seen_by_id_2)
    assert trace_id == TRACE_ID and flags == "01"  # the same trace, its sampled flag kept
    assert id_1_span != PARENT_ID  # id_2's parent is id_1's own span, a child of the caller's

    events = await asyncio.to_thread(published, demo)
    assert len(events) == 1
    event = events[0]
    assert event.data == seen_by_id_2.encode()  # id_2 published what it received...
    event_trace, id_2_span, _ = parts(event.extensions["traceparent"])  # ...and the host added its context
    assert event_trace == TRACE_ID and id_2_span not in (id_1_span, PARENT_ID)
    assert event.extensions["traceid"] == event.extensions["traceparent"]  # Dapr's second name
    assert event.extensions["tracestate"] == "vendor=abc"  # passed on unchanged

    delivered = await wait_for(lambda: stored(demo, b"delivered"), "the delivery to sink")
    assert delivered == event.extensions["traceparent"]  # the publisher's span is the parent


async def test_a_root_request_starts_a_trace_that_still_reaches_id_2(demo) -> None:
    status, _, body = await demo.call("id_1", "/?name=book1")
    assert status == 200
    trace_id, _, flags = parts(stock_of(body))
    assert flags == "00"  # nothing records spans here: a new trace is not sampled
    status, _, again = await demo.call("id_1", "/?name=book1")
    assert parts(stock_of(again))[0] != trace_id  # every root request starts its own


@pytest.mark.parametrize("malformed", [
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",  # upper case
    f"00-{'0' * 32}-{PARENT_ID}-01",  # all-zero trace id
    f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
    f"ff-{TRACE_ID}-{PARENT_ID}-01",  # the forbidden version
    f"00-{TRACE_ID}-{PARENT_ID}-01-extra",  # version 00 has exactly four fields
    f"00-{TRACE_ID}-{PARENT_ID[:-1]}-01",  # short parent id
    f"00_{TRACE_ID}_{PARENT_ID}_01",  # wrong separators
    "garbage",
])
async def test_a_malformed_traceparent_is_ignored_not_an_error(demo, malformed: str) -> None:
    status, _, body = await demo.call("id_1", "/?name=book1", headers={"traceparent": malformed,
                                                                       "tracestate": "vendor=abc"})
    assert status == 200, body
    trace_id, _, flags = parts(stock_of(body))
    assert trace_id not in (TRACE_ID, "0" * 32) and trace_id not in malformed.lower()  # a new trace
    events = await asyncio.to_thread(published, demo)
    assert "tracestate" not in events[-1].extensions  # its tracestate went with it


async def test_a_later_version_with_more_fields_is_continued(demo) -> None:
    status, _, body = await demo.call("id_1", "/?name=book1",
                                      headers={"traceparent": f"01-{TRACE_ID}-{PARENT_ID}-01-later"})
    assert status == 200 and parts(stock_of(body))[0] == TRACE_ID


# -- outbound calls ------------------------------------------------------------------------------------
async def test_outbound_http_and_grpc_calls_carry_the_request_context(serve, tmp_path: Path) -> None:
    http = HttpRecorder()
    http_port = await http.start()
    rpc = GrpcRecorder()
    try:
        folder = functions_dir(tmp_path)
        own = f"00-{'a' * 32}-{'b' * 16}-00"
        write_guest(folder, "plain", http_caller("rec", None))
        write_guest(folder, "own", http_caller("rec", own))
        write_guest(folder, "rpc", grpc_caller("rec"))
        client = await serve(make_config(tmp_path, folder, upstreams={"rec": f"http://127.0.0.1:{http_port}"},
                                         grpc_upstreams={"rec": f"127.0.0.1:{rpc.port}"}))
        headers = {"traceparent": INCOMING, "tracestate": "vendor=abc"}

        status, _, body = await client.call("plain", headers=headers)
        assert status == 200 and Results(body).u32() == 0
        sent = http.seen[-1]
        trace_id, parent, flags = parts(sent["traceparent"])
        assert (trace_id, flags) == (TRACE_ID, "01") and parent != PARENT_ID  # the request's span is the parent
        assert sent["tracestate"] == "vendor=abc" and sent["x-from"] == "wat"

        status, _, _ = await client.call("own", headers=headers)
        assert status == 200 and http.seen[-1]["traceparent"] == own  # the guest's own is left alone

        status, _, body = await client.call("rpc", headers=headers)
        r = Results(body)
        assert status == 200 and r.u32() == 0 and r.u32() == 0  # accepted, closed with OK
        metadata = rpc.seen[-1]
        assert parts(metadata["traceparent"])[0] == TRACE_ID and metadata["tracestate"] == "vendor=abc"

        status, _, _ = await client.call("plain")  # no incoming context: the request's own new trace
        assert status == 200 and parts(http.seen[-1]["traceparent"])[0] != TRACE_ID
    finally:
        await http.runner.cleanup()
        rpc.server.stop(0)


async def test_grpc_invoke_service_continues_the_callers_trace(serve, tmp_path: Path) -> None:
    from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2 as pb
    from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2_grpc

    folder = functions_dir(tmp_path)
    write_guest(folder, "echo", echo_trace(publish=False))
    client = await serve(make_config(tmp_path, folder))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{client.server.grpc_port}") as channel:
        stub = runtime_pb2_grpc.RuntimeStub(channel)
        request = pb.InvokeServiceRequest(id="echo", message=pb.CommonInvokeRequest(method="/"))
        response = await stub.InvokeService(request, metadata=(("traceparent", INCOMING),))
    assert response.data.value.decode() == INCOMING  # the caller's span is the function's parent



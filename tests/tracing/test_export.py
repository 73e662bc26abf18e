"""Spans exported over OTLP/gRPC to a real receiver started here (the collector's TraceService):
the Layotto demo's id_1 -> id_2 chain is one trace with id_2's span under id_1's under the caller's;
an unsampled caller is not recorded but still propagated; a new trace is sampled at the configured
ratio; a publish is a PRODUCER span that the delivery's span continues. With tracing off the
OpenTelemetry SDK is never imported."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, REPO, functions_dir, make_config
from tests.guest_wat import write_guest
from tests.tracing.otlp_receiver import OtlpReceiver
from tests.tracing.test_propagation import (
    INCOMING,
    PARENT_ID,
    TRACE_ID,
    parts,
    stock_of,
    stored,
    wait_for,
)
from tests.tracing.trace_guests import PUBSUB, TOPIC, echo_trace, grpc_caller, http_caller, store_trace
from tests.tracing.upstreams import GrpcRecorder, HttpRecorder

SERVER, CLIENT, PRODUCER = 2, 3, 4  # opentelemetry.proto.trace.v1.Span.SpanKind


@pytest.fixture
def receiver():
    sink = OtlpReceiver()
    yield sink
    sink.stop()


def tracing(receiver: OtlpReceiver, **extra: object) -> dict[str, object]:
    return {"otlp_endpoint": receiver.endpoint, "batch_delay_ms": 50, "service_name": "demo-host", **extra}


async def flushed(client) -> None:
    assert await asyncio.to_thread(client.server.app.tracing.flush)


async def test_the_demo_chain_is_one_trace_with_parent_and_child_spans(receiver, serve, tmp_path: Path) -> None:
    folder = functions_dir(tmp_path, EXAMPLES / "function_1.wasm", EXAMPLES / "function_2.wasm")
    client = await serve(make_config(tmp_path, folder, tracing=tracing(receiver)))
    status, _, body = await client.call("id_1", "/?name=book1", headers={"traceparent": INCOMING})
    assert (status, body) == (200, b"There are 100 inventories for book1.")
    await flushed(client)
    spans = {span.name: span for span in receiver.of_trace(TRACE_ID)}
    assert set(spans) == {"id_1", "id_2"}
    id_1, id_2 = spans["id_1"], spans["id_2"]
    assert id_1.parent_id == PARENT_ID and id_2.parent_id == id_1.span_id  # caller -> id_1 -> id_2
    assert id_1.kind == id_2.kind == SERVER and id_1.service == "demo-host"
    assert id_1.attributes["http.response.status_code"] == 200 and not id_1.error
    assert id_1.attributes["wasm_faas.function_id"] == "id_1" and id_2.attributes["url.path"] == "/"

    # A caller that did not sample: nothing recorded (the SDK is not even asked), the answer the same.
    unsampled = f"00-{'1' * 32}-{PARENT_ID}-00"
    status, _, body = await client.call("id_1", "/?name=book1", headers={"traceparent": unsampled})
    assert status == 200
    # A new trace (no traceparent) is sampled at ratio 1: a root span, and id_2 under it.
    status, _, _ = await client.call("id_1", "/?name=book1")
    assert status == 200
    await flushed(client)
    assert receiver.of_trace("1" * 32) == []
    roots = [span for span in receiver.spans if span.name == "id_1" and span.parent_id == ""]
    assert len(roots) == 1
    children = receiver.of_trace(roots[0].trace_id)
    assert {(span.name, span.parent_id) for span in children} == {("id_1", ""), ("id_2", roots[0].span_id)}


async def test_a_new_trace_at_ratio_zero_is_not_recorded(receiver, serve, tmp_path: Path) -> None:
    folder = functions_dir(tmp_path, EXAMPLES / "hello.wasm")
    client = await serve(make_config(tmp_path, folder, tracing=tracing(receiver, sample_ratio=0.0)))
    assert (await client.call("hello"))[0] == 200
    assert (await client.call("hello", headers={"traceparent": INCOMING}))[0] == 200  # the caller decided
    await flushed(client)
    assert [span.trace_id for span in receiver.spans] == [TRACE_ID]


async def test_publish_is_a_producer_span_that_the_delivery_continues(receiver, serve, tmp_path: Path) -> None:
    folder = functions_dir(tmp_path, EXAMPLES / "function_1.wasm")
    write_guest(folder, "id_2", echo_trace(publish=True))
    write_guest(folder, "sink", store_trace("delivered"))
    client = await serve(make_config(tmp_path, folder, tracing=tracing(receiver),
                                     pubsub={PUBSUB: {"type": "memory"}},
                                     subscriptions=[{"pubsub": PUBSUB, "topic": TOPIC, "function": "sink"}]))
    status, _, body = await client.call("id_1", "/?name=book1", headers={"traceparent": INCOMING})
    assert status == 200
    delivered = await wait_for(lambda: stored(client, b"delivered"), "the delivery")
    for _ in range(50):  # the sink's span ends after its delivery, a moment later
        await flushed(client)
        if len(receiver.of_trace(TRACE_ID)) == 4:
            break
        await asyncio.sleep(0.05)
    spans = {span.name: span for span in receiver.of_trace(TRACE_ID)}
    assert set(spans) == {"id_1", "id_2", f"publish {TOPIC}", "sink"}
    publish = spans[f"publish {TOPIC}"]
    assert parts(stock_of(body))[1] == spans["id_1"].span_id  # what id_2 saw names the recorded span
    assert publish.kind == PRODUCER and publish.parent_id == spans["id_2"].span_id
    assert publish.attributes["messaging.destination.name"] == TOPIC
    assert parts(delivered)[1] == publish.span_id and spans["sink"].parent_id == publish.span_id


async def test_outbound_calls_are_client_spans_named_in_what_they_send(receiver, serve, tmp_path: Path) -> None:
    http = HttpRecorder()
    http_port = await http.start()
    rpc = GrpcRecorder()
    try:
        folder = functions_dir(tmp_path)
        write_guest(folder, "web", http_caller("rec", None))
        write_guest(folder, "rpc", grpc_caller("rec"))
        client = await serve(make_config(tmp_path, folder, tracing=tracing(receiver),
                                         upstreams={"rec": f"http://127.0.0.1:{http_port}"},
                                         grpc_upstreams={"rec": f"127.0.0.1:{rpc.port}"}))
        for function in ("web", "rpc"):
            assert (await client.call(function, headers={"traceparent": INCOMING}))[0] == 200
        await flushed(client)
    finally:
        await http.runner.cleanup()
        rpc.server.stop(0)
    spans = {span.name: span for span in receiver.of_trace(TRACE_ID)}
    assert set(spans) == {"web", "GET", "rpc", "trace.Probe/Seen"}
    for server_name, client_name, sent in (("web", "GET", http.seen[-1]), ("rpc", "trace.Probe/Seen", rpc.seen[-1])):
        call = spans[client_name]
        assert call.kind == CLIENT and call.parent_id == spans[server_name].span_id
        assert parts(sent["traceparent"])[1] == call.span_id  # the upstream's parent is the client span
    assert spans["GET"].attributes["http.response.status_code"] == 200
    assert spans["trace.Probe/Seen"].attributes["rpc.grpc.status_code"] == 0


def _modules_after_a_request(tmp_path: Path, tracing_section: dict[str, object]) -> dict[str, bool]:
    """Serves one traced request in a fresh interpreter; which OpenTelemetry modules it imported."""
    folder = functions_dir(tmp_path, EXAMPLES / "function_1.wasm", EXAMPLES / "function_2.wasm")
    script = textwrap.dedent(f"""
        import asyncio, json, sys, urllib.request
        from host.config import validate_config
        from host.process.serve import start_server

        async def main():
            config = validate_config({{"server": {{"listen": "127.0.0.1:0", "admin": "127.0.0.1:0", "grpc": "",
                "dapr_http": "", "cache_dir": {str(tmp_path / "cache")!r}}},
                "functions_dirs": [{str(folder)!r}], "tracing": {json.dumps(tracing_section)},
                "state": {{"state_demo": {{"type": "memory", "seed": {{"book1": "100"}}}}}}}})
            server = await start_server(config)
            request = urllib.request.Request(f"http://127.0.0.1:{{server.listen_port}}/?name=book1",
                headers={{"id": "id_1", "traceparent": {INCOMING!r}}})
            body = await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=10).read())
            assert body == b"There are 100 inventories for book1.", body
            await server.stop()
            print(json.dumps({{"sdk": "opentelemetry.sdk.trace" in sys.modules,
                              "any": any(name.startswith("opentelemetry") for name in sys.modules)}}))

        asyncio.run(main())
    """)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no OTEL_* from the outside
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_with_tracing_off_the_sdk_is_never_imported(tmp_path: Path, receiver) -> None:
    assert _modules_after_a_request(tmp_path, {}) == {"sdk": False, "any": False}
    # The same request with an exporter configured does import it (so the check above can fail).
    assert _modules_after_a_request(tmp_path, {"otlp_endpoint": receiver.endpoint})["sdk"] is True

"""WAT guests for the tracing tests: each reports the `traceparent` it was given, or sends a call
without one (so the host must add it)."""

from __future__ import annotations

import re

from tests.guest_wat import RET, RET_PTR, RET_SIZE, U32_A, WatGuest, serialize_map

TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
PUBSUB, TOPIC = "bus", "traces"

# (ptr, len) of what the last get-style call returned: two WAT arguments
_GOT = (f"(i32.load (i32.const {RET_PTR}))", f"(i32.load (i32.const {RET_SIZE}))")


def _header(g: WatGuest) -> str:
    return g.call("proxy_get_header_map_value", 0, g.s("traceparent"), RET)


def echo_trace(publish: bool) -> str:
    """Answers the traceparent it received ("none" without one); with `publish`, also publishes it
    as an event to PUBSUB/TOPIC (the host adds the CloudEvent's trace extension)."""
    g = WatGuest()
    published = (f"(drop {g.call('proxy_publish_event', g.s(PUBSUB), g.s(TOPIC), _GOT, g.s('text/plain'))})"
                 if publish else "")
    body = f"""
    (if (i32.eqz {_header(g)})
      (then {published}
        (drop {g.call("proxy_set_buffer_bytes", 1, 0, 0, _GOT)}))
      (else (drop {g.call("proxy_set_buffer_bytes", 1, 0, 0, g.s("none"))})))
    (i32.const 0)"""
    return g.module(proxy_on_request_headers=body)


def store_trace(key: str) -> str:
    """Keeps the traceparent it received in shared data `key` (what a delivery carried)."""
    g = WatGuest()
    body = f"""
    (if (i32.eqz {_header(g)})
      (then (drop {g.call("proxy_set_shared_data", g.s(key), _GOT, 0)})))
    (call $emit (i32.const 1)) (call $flush)
    (i32.const 0)"""
    return g.module(proxy_on_request_headers=body)


def http_caller(upstream: str, own_traceparent: str | None) -> str:
    """proxy_http_call GET /seen to `upstream` (with the guest's own traceparent when given); the
    stream resumes when the answer comes."""
    g = WatGuest()
    pairs = [(":method", "GET"), (":path", "/seen"), ("x-from", "wat")]
    if own_traceparent:
        pairs.append(("traceparent", own_traceparent))
    request = f"""
    (call $emit {g.call("proxy_http_call", g.s(upstream), g.s(serialize_map(pairs)), (0, 0),
                        g.s(serialize_map([])), 2000, U32_A)})
    (i32.const 1)"""
    response = f"""(call $flush) (drop {g.call("proxy_continue_stream", 0)})"""
    return g.module(proxy_on_request_headers=request, proxy_on_http_call_response=response)


def grpc_caller(upstream: str) -> str:
    """proxy_grpc_call trace.Probe/Seen on `upstream` with no metadata; resumes on close."""
    g = WatGuest()
    request = f"""
    (call $emit {g.call("proxy_grpc_call", g.s(upstream), g.s("trace.Probe"), g.s("Seen"), (0, 0), g.s("hi"),
                        2000, U32_A)})
    (i32.const 1)"""
    close = f"""(call $emit (local.get $status)) (call $flush) (drop {g.call("proxy_continue_stream", 0)})"""
    return g.module(proxy_on_request_headers=request, proxy_on_grpc_close=close)

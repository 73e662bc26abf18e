"""The trace context of one request, and the decision whether a new trace is sampled.

A request's context is made from its `traceparent` / `tracestate` headers the first time anything
needs it (a call it makes, an event it publishes, a log line), and kept on the request: a request
that needs none costs nothing. With an exporter configured, the call path makes it up front
instead (host/tracing/spans.py), because a recorded span starts with the request.

The request's own span id is new; the caller's becomes its parent. Every call the request makes
carries `00-<trace id>-<own span id>-<flags>` (a child of this hop), and the incoming `tracestate`
as it came. Without a valid `traceparent` the request starts a trace: sampled only when spans are
exported, at the configured ratio; otherwise the caller's sampled flag is kept (parent-based).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from host.tracing.w3c import clean_tracestate, format_traceparent, new_span_id, new_trace_id, parse_traceparent

if TYPE_CHECKING:
    from abi import HttpRequest
    from abi.maps import HeaderList

_KEPT_FLAGS = 0x03  # sampled, and level 2's "random trace id": both still true of the trace we continue
_root_ratio = 0.0  # of new traces to sample: 0 while nothing exports spans (host/tracing/setup.py)


@dataclass(slots=True)
class TraceContext:
    trace_id: str
    span_id: str  # this hop: the parent of every call the request makes
    parent_id: str  # the caller's span ("" when the request started the trace)
    flags: int
    tracestate: str = ""
    span: Any = None  # the recorded SDK span while it is open (host/tracing/spans.py)

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 0x01)

    def traceparent(self, span_id: str | None = None) -> str:
        """The header a call made by this request sends (`span_id`: a client span's, when recorded)."""
        return format_traceparent(self.trace_id, span_id or self.span_id, self.flags)

    def headers(self) -> list[tuple[str, str]]:
        headers = [("traceparent", self.traceparent())]
        if self.tracestate:
            headers.append(("tracestate", self.tracestate))
        return headers


def set_root_ratio(ratio: float) -> None:
    global _root_ratio
    _root_ratio = ratio


def root_flags() -> int:
    ratio = _root_ratio
    return 0x01 if ratio >= 1.0 or (ratio > 0.0 and random.random() < ratio) else 0


def incoming(headers: HeaderList) -> TraceContext:
    """The context a request with these (lower-case) headers runs in."""
    traceparent: str | None = None
    states: list[str] = []
    for name, value in headers:
        if name == "traceparent":
            if traceparent is None:
                traceparent = value
        elif name == "tracestate":
            states.append(value)
    parsed = parse_traceparent(traceparent) if traceparent is not None else None
    if parsed is None:
        return TraceContext(new_trace_id(), new_span_id(), "", root_flags())
    trace_id, parent_id, flags = parsed
    return TraceContext(trace_id, new_span_id(), parent_id, flags & _KEPT_FLAGS,
                        clean_tracestate(states) if states else "")


def context_of(request: HttpRequest) -> TraceContext:
    """The request's context, made on first use."""
    context = request.trace
    if context is None:
        context = request.trace = incoming(request.headers)
    return context  # type: ignore[return-value]  # only this module and spans.py set it


def event_headers(extensions: dict[str, Any]) -> list[tuple[str, str]]:
    """The HTTP headers a delivery of a CloudEvent carries for its trace extension (Dapr delivers
    them as `traceparent` / `tracestate`), so the publisher's span becomes the function's parent."""
    headers: list[tuple[str, str]] = []
    traceparent = extensions.get("traceparent")
    if isinstance(traceparent, str) and traceparent:
        headers.append(("traceparent", traceparent))
        tracestate = extensions.get("tracestate")
        if isinstance(tracestate, str) and tracestate:
            headers.append(("tracestate", tracestate))
    return headers

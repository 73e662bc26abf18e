"""The trace context of the request running in this thread, for what its guest does: invoke
another function, call an upstream over http or gRPC, publish an event.

The call path (host/functions/dispatch.py `_run`) already names the running request in a context
variable for log lines (host/logs.py `REQUEST_SCOPE`); host calls are made from the guest's own
thread while it runs, so they find their request there without anything more on the call path.
Outside a request (a tick, a queue delivery) there is no context and nothing is added.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from abi import HttpRequest
from abi.maps import HeaderList
from host.logs import REQUEST_SCOPE
from host.tracing import spans
from host.tracing.context import TraceContext, context_of


def current() -> TraceContext | None:
    scope = REQUEST_SCOPE.get()
    return context_of(cast(HttpRequest, scope[1])) if scope is not None else None


def child_headers() -> list[tuple[str, str]]:
    """traceparent (and tracestate) for a request to another function (proxy_invoke_service):
    the same trace, this request's span as the parent."""
    context = current()
    return context.headers() if context is not None else []


def _has_traceparent(headers: HeaderList) -> bool:
    return any(name.lower() == "traceparent" for name, _ in headers)


Describe = Callable[[], tuple[str, dict[str, Any]]]  # the span's name and attributes, made only if recorded


def start_call(headers: HeaderList, kind: str, describe: Describe) -> tuple[HeaderList, Any]:
    """`headers` of an outbound call with the request's trace context added — unless the guest set
    its own traceparent, which goes as it is — and the call's span to `end_call` (None unless the
    request is recorded)."""
    context = current()
    if context is None or _has_traceparent(headers):
        return headers, None
    span = span_id = None
    recorder = spans.ACTIVE
    if recorder is not None and context.span is not None:
        name, attributes = describe()
        span, span_id = recorder.child(context, name, kind, attributes)
    added = [("traceparent", context.traceparent(span_id))]
    if context.tracestate:
        added.append(("tracestate", context.tracestate))
    return [*headers, *added], span


def end_call(span: Any, error: str = "", attributes: dict[str, Any] | None = None) -> None:
    recorder = spans.ACTIVE
    if span is not None and recorder is not None:
        recorder.finish(span, error, attributes)


def event_context(pubsub: str, topic: str) -> tuple[str, str, Any]:
    """(traceparent, tracestate, span) for an event the current request publishes: its CloudEvent
    carries them (the trace extension), and a delivery continues the trace from there."""
    headers, span = start_call([], "producer", lambda: (f"publish {topic}", {
        "messaging.operation.type": "send", "messaging.destination.name": topic, "wasm_faas.pubsub": pubsub}))
    values = dict(headers)
    return values.get("traceparent", ""), values.get("tracestate", ""), span

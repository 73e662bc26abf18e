"""Recorded spans, exported over OTLP/gRPC with the OpenTelemetry SDK — only while an exporter is
configured (host/tracing/setup.py sets `ACTIVE`), and only for sampled requests.

The SDK is imported when the first `Spans` is made, never by a host without tracing configured.
The sampling decision is taken before the SDK is touched (host/tracing/context.py): an unsampled
request costs the hand-made context only, not an SDK span (~17 µs even unsampled). The SDK's own
sampler is therefore ALWAYS_ON, and no SDK context is ever attached: parents are passed by hand.

Spans: a SERVER span per function call (every entry point of host/functions/dispatch.py, nested
`proxy_invoke_service` calls included, so id_2's span is a child of id_1's); a CLIENT span per
outbound http / gRPC call and a PRODUCER span per publish (host/tracing/current.py).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from host.tracing.context import TraceContext, incoming

if TYPE_CHECKING:
    from abi import HttpRequest
    from host.tracing.setup import ExportSettings

ACTIVE: Spans | None = None  # read on the call path: None means no span work at all
INSTRUMENTATION = "wasm-faas-host"
_SDK_QUEUE_LOGGER = "opentelemetry.sdk._shared_internal"  # the batch processor's (SDK 1.45)


class _DropWarnings(logging.Filter):
    """The SDK warns once per span dropped from a full queue (spans come faster than they export):
    under load that would be a line per request. One line per interval, with the count, instead."""

    def __init__(self, interval_s: float = 10.0):
        super().__init__()
        self.interval_s = interval_s
        self._next = 0.0
        self._dropped = 0
        self._guard = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Queue full"):
            return True
        with self._guard:
            self._dropped += 1
            now = time.monotonic()
            if now < self._next:
                return False
            self._next = now + self.interval_s
            record.msg, record.args = "span queue full: %d span(s) dropped unexported (a lower sample_ratio helps)", (
                self._dropped,)
            self._dropped = 0
        return True


_DROP_WARNINGS = _DropWarnings()


class Spans:
    def __init__(self, settings: ExportSettings):
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON
        from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
        from opentelemetry.trace.span import TraceState

        self._api = trace
        self._SpanContext, self._NonRecordingSpan = SpanContext, NonRecordingSpan
        self._TraceFlags, self._TraceState = TraceFlags, TraceState
        self._Status, self._ERROR = Status, StatusCode.ERROR
        self.kinds = {"server": SpanKind.SERVER, "client": SpanKind.CLIENT, "producer": SpanKind.PRODUCER}
        exporter = OTLPSpanExporter(endpoint=settings.endpoint, headers=settings.headers or None,
                                    timeout=settings.timeout_s)
        # Not the global provider: the host's spans are its own, whatever else runs in the process.
        self.provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}),
                                       sampler=ALWAYS_ON)
        self.provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=settings.delay_ms))
        self._tracer = self.provider.get_tracer(INSTRUMENTATION)
        logging.getLogger(_SDK_QUEUE_LOGGER).addFilter(_DROP_WARNINGS)  # once per process (same object)

    # -- the function's own span ------------------------------------------------------------------
    def begin(self, function_id: str, request: HttpRequest) -> None:
        """Makes the request's context now; a sampled request gets its SERVER span, whose id is
        the request's span id. A request that has its context already (a retry) keeps it."""
        if request.trace is not None:
            return
        context = request.trace = incoming(request.headers)
        if not context.sampled:
            return
        parent = self._remote(context) if context.parent_id else None
        span = self._tracer.start_span(function_id, context=parent, kind=self.kinds["server"], attributes={
            "wasm_faas.function_id": function_id, "http.request.method": request.method,
            "url.path": request.url_path})
        own = span.get_span_context()
        context.trace_id, context.span_id = f"{own.trace_id:032x}", f"{own.span_id:016x}"
        context.span = span

    def end(self, request: HttpRequest, status: int, message: str = "") -> None:
        context = request.trace
        if not isinstance(context, TraceContext) or context.span is None:
            return
        span, context.span = context.span, None  # ended once, whoever gets here first
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(self._Status(self._ERROR, message or f"HTTP {status}"))
        span.end()

    # -- calls the request makes ----------------------------------------------------------------
    def child(self, context: TraceContext, name: str, kind: str, attributes: dict[str, Any]) -> tuple[Any, str]:
        """A span under the request's recorded span, and its id (the outgoing call's parent)."""
        span = self._tracer.start_span(name, context=self._api.set_span_in_context(context.span),
                                       kind=self.kinds[kind], attributes=attributes)
        return span, f"{span.get_span_context().span_id:016x}"

    def finish(self, span: Any, error: str = "", attributes: dict[str, Any] | None = None) -> None:
        if attributes:
            span.set_attributes(attributes)
        if error:
            span.set_status(self._Status(self._ERROR, error))
        span.end()

    def _remote(self, context: TraceContext) -> Any:
        """The caller's span as the SDK's parent context."""
        state = self._TraceState.from_header([context.tracestate]) if context.tracestate else None
        parent = self._SpanContext(int(context.trace_id, 16), int(context.parent_id, 16), is_remote=True,
                                   trace_flags=self._TraceFlags(context.flags & 0x01), trace_state=state)
        return self._api.set_span_in_context(self._NonRecordingSpan(parent))

    # -- lifecycle --------------------------------------------------------------------------------
    def flush(self, timeout_s: float = 5.0) -> bool:
        return bool(self.provider.force_flush(int(timeout_s * 1000)))

    def shutdown(self) -> None:
        """Exports what is still queued (bounded by the exporter's timeout), then stops."""
        self.provider.shutdown()

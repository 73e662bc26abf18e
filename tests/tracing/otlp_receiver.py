"""A real OTLP/gRPC trace receiver for the tests (and bench/tracing.py's sink): the collector's
TraceService from the opentelemetry-proto package, served by grpcio on an ephemeral port; every
exported span is kept as a plain record."""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass(frozen=True)
class SpanRecord:
    name: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root span
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind: 2 server, 3 client, 4 producer
    service: str
    attributes: dict[str, Any]
    error: bool


def _value(any_value: Any) -> Any:
    field = any_value.WhichOneof("value")
    return getattr(any_value, field) if field else None


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.spans: list[SpanRecord] = []
        self.exports = 0
        self.count = 0
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - the gRPC method's name
        records = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    records.append(SpanRecord(
                        span.name, span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(), span.kind,
                        str(resource.get("service.name", "")), {a.key: _value(a.value) for a in span.attributes},
                        span.status.code == 2))
        with self._lock:
            self.exports += 1
            self.count += len(records)
            if self.keep:
                self.spans.extend(records)
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_id: str) -> list[SpanRecord]:
        with self._lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def stop(self) -> None:
        self.server.stop(0)

"""Distributed tracing (issue 14): W3C `traceparent` / `tracestate` carried from the incoming
request through `proxy_invoke_service`, outbound http and gRPC calls, published events (the
CloudEvents trace extension) and deliveries; spans exported over OTLP only when configured.

- w3c.py: the header grammar and ids, by hand (the hot path);
- context.py: one request's context, made on first use, and the sampling of new traces;
- current.py: the running request's context, for the host calls its guest makes;
- spans.py: recorded spans with the OpenTelemetry SDK (imported only when exporting);
- setup.py: `[tracing]` and the OTEL_* environment, install and remove export.

Nothing is imported here, so that host/logs.py can use context.py without a cycle.
"""

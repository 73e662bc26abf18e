"""Dapr's HTTP API subset, on its own listener (default 127.0.0.1:3500), over the runtime API:
what Dapr's SDKs need over HTTP (the health probe the Python SDK blocks on, service invocation,
state, publish, locks, configuration, metadata), with Dapr's routes, bodies and status codes."""

from host.http.dapr.app import create_dapr_app

__all__ = ["create_dapr_app"]

"""Dapr's `dapr.proto.runtime.v1`: the `Dapr`, `AppCallback`, `AppCallbackHealthCheck` services (generated)."""

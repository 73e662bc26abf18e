"""Layotto's `spec.proto.runtime.v1`: the `Runtime` and `AppCallback` services (generated modules)."""

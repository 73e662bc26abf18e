"""Dapr's `dapr.proto.common.v1`: messages shared by its services (generated modules)."""

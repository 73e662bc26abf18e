"""Dapr's `dapr.proto.common.*` proto packages (generated modules)."""

"""Dapr's `dapr.proto.runtime.*` proto packages (generated modules)."""

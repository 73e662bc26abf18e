"""Dapr's `dapr.proto.*` proto packages (generated modules)."""

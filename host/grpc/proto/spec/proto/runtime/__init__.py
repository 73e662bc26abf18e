"""Layotto's `spec.proto.runtime.*` proto packages (generated modules)."""

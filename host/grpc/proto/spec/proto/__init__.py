"""Layotto's `spec.proto.*` proto packages (generated modules)."""

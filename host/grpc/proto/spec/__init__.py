"""Layotto's `spec.*` proto packages (generated modules)."""

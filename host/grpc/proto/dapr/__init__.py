"""Dapr's `dapr.*` proto packages, kept under host.grpc so they never shadow the Dapr SDK's `dapr` package."""

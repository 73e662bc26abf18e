"""The runtime gRPC API's wire schemas: Layotto's `spec.proto.runtime.v1` and Dapr's `dapr.proto.*.v1`.

The `.proto` sources live under `proto/`, at paths that mirror their proto packages. Their Python
modules (`*_pb2.py`, `*_pb2.pyi`, `*_pb2_grpc.py`) are generated next to them at install time (setup.py)
or by `python -m host.grpc.codegen`, and are never committed. They register in a private descriptor
pool (`host.grpc.pool`), so they load in the same process as the official Dapr SDK's own modules.
"""

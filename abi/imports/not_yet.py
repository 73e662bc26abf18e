"""Imports that link but answer Unimplemented (12): gRPC calls to upstreams are not built yet."""

from __future__ import annotations

from ._registry import ImportGroup

hostcall = ImportGroup()

for _name, _params in [
    ("proxy_grpc_call", "iiiiiiiiiiii"),
    ("proxy_grpc_stream", "iiiiiiiii"),
    ("proxy_grpc_send", "iiii"),
    ("proxy_grpc_cancel", "i"),
    ("proxy_grpc_close", "i"),
]:
    hostcall.unimplemented(_name, _params)

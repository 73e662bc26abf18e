"""Imports that link but answer Unimplemented (12) until their capability is built."""

from __future__ import annotations

from ._registry import ImportGroup

hostcall = ImportGroup()

for _name, _params in [
    ("proxy_set_tick_period_milliseconds", "i"),
    ("proxy_get_shared_data", "iiiii"),
    ("proxy_set_shared_data", "iiiii"),
    ("proxy_register_shared_queue", "iii"),
    ("proxy_resolve_shared_queue", "iiiii"),
    ("proxy_dequeue_shared_queue", "iii"),
    ("proxy_enqueue_shared_queue", "iii"),
    ("proxy_http_call", "iiiiiiiiii"),
    ("proxy_dispatch_http_call", "iiiiiiiiii"),
    ("proxy_grpc_call", "iiiiiiiiiiii"),
    ("proxy_grpc_stream", "iiiiiiiii"),
    ("proxy_grpc_send", "iiii"),
    ("proxy_grpc_cancel", "i"),
    ("proxy_grpc_close", "i"),
    ("proxy_get_status", "iii"),
    ("proxy_define_metric", "iiii"),
    ("proxy_increment_metric", "iI"),
    ("proxy_record_metric", "iI"),
    ("proxy_get_metric", "ii"),
    ("proxy_call_foreign_function", "iiiiii"),
]:
    hostcall.unimplemented(_name, _params)

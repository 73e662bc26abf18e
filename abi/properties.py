"""Property paths (Envoy attribute names) a guest can read with proxy_get_property.

Paths arrive as segments joined by NUL (`request\\0path`); a dotted path (`request.path`) is accepted
too. Strings are returned as raw bytes, integers as 8-byte little-endian, header maps serialized.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from abi.maps import encode_map


def split_path(raw: bytes) -> list[str]:
    text = raw.decode("utf-8", "surrogateescape").rstrip("\0")
    if "\0" in text:
        return text.split("\0")
    return text.split(".") if text else []


def _int(value: int) -> bytes:
    return struct.pack("<q", value)


def _request_props(vm) -> dict[str, Callable[[], bytes]]:
    stream = vm.stream
    if stream is None:
        return {}
    request = stream.request
    return {
        "request.path": lambda: request.path.encode(),
        "request.url_path": lambda: request.url_path.encode(),
        "request.query": lambda: request.query.encode(),
        "request.method": lambda: request.method.encode(),
        "request.scheme": lambda: request.scheme.encode(),
        "request.host": lambda: (request.header(":authority") or "").encode(),
        "request.protocol": lambda: b"HTTP/1.1",
        "request.id": lambda: (request.header("x-request-id") or "").encode(),
        "request.headers": lambda: encode_map(stream.request_headers),
        "request.size": lambda: _int(len(request.body)),
        "request.total_size": lambda: _int(len(request.body)),
        "response.code": lambda: _int(stream.response.status),
        "response.headers": lambda: encode_map(stream.response.headers),
        "response.size": lambda: _int(len(stream.response_body)),
        "source.address": lambda: f"{request.source_address}:{request.source_port}".encode(),
        "source.port": lambda: _int(request.source_port),
        "destination.address": lambda: f"{request.destination_address}:{request.destination_port}".encode(),
        "destination.port": lambda: _int(request.destination_port),
        # One request per connection context as far as a guest can tell; plain HTTP, no TLS.
        "connection.id": lambda: _int(stream.context_id),
        "connection.mtls": lambda: b"\x00",
        "connection.tls_version": lambda: b"",
        "connection.requested_server_name": lambda: (request.header(":authority") or "").split(":")[0].encode(),
    }


def get_property(vm, segments: list[str]) -> bytes | None:
    """The property's bytes, or None when the path names nothing."""
    key = ".".join(segments)
    stream = vm.stream
    if stream is not None and key in stream.properties:
        return stream.properties[key]
    if key in vm.properties:
        return vm.properties[key]
    settings = vm.settings
    plugin = {
        "plugin_name": settings.name.encode(),
        "plugin_root_id": settings.root_id.encode(),
        "plugin_vm_id": settings.vm_id.encode(),
        "function_id": vm.function_id.encode(),
    }
    if key in plugin:
        return plugin[key]
    if stream is not None and len(segments) == 3 and segments[:2] == ["request", "headers"]:
        value = stream.request.header(segments[2])
        return value.encode() if value is not None else None
    getter = _request_props(vm).get(key)
    return getter() if getter is not None else None

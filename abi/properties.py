"""Property paths (Envoy attribute names) a guest can read with proxy_get_property.

Paths arrive as segments joined by NUL (`request\\0path`); a dotted path (`request.path`) is accepted
too (then a segment cannot itself contain a dot). Values are byte strings encoded as Envoy encodes
them: strings raw, integers 8-byte little-endian, doubles 8-byte IEEE, booleans one byte, maps as a
serialized proxy-wasm map whose values are encoded the same way (recursively), lists as a map of
(element, "") pairs, and protobuf messages as their wire bytes.

Besides the request's attributes, a filter written for Envoy/Istio finds what Envoy gives it:
- at any time: `plugin_name`, `plugin_root_id`, `plugin_vm_id`, `listener_direction` (INBOUND: this
  host serves what it receives) and `node` — this host as Envoy's bootstrap describes a proxy
  (`[server.node]`): `node` is the serialized envoy.config.core.v3.Node (only its id, cluster and
  metadata fields are set), `node.id` / `node.cluster` strings, `node.metadata` the Struct as a map,
  `node.metadata.<key>...` one value (Struct numbers are doubles);
- during a request, the route's (the function's `properties`): `route_name`, `cluster_name`,
  `route_metadata` / `cluster_metadata` (the serialized envoy.config.core.v3.Metadata; below it
  `filter_metadata.<filter>.<key>...`) and any other configured name. Outside a request these are
  NotFound, as in Envoy's root context.
The same attributes are also found under Envoy's newer `xds.` names (`xds.node`, `xds.route_name`...).
A configured null reads as NotFound (Envoy cannot serialize one either).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from abi.maps import encode_map

if TYPE_CHECKING:
    from abi.vm import ProxyWasmVM

LISTENER_DIRECTION_INBOUND = 1  # envoy.config.core.v3.TrafficDirection
# Route property names with a meaning of their own; any other configured name is read as configured.
ROUTE_METADATA_KEYS = ("route_metadata", "cluster_metadata")
_XDS = {"node", "route_name", "cluster_name", "route_metadata", "cluster_metadata", "listener_direction"}
_MISSING = object()


def split_path(raw: bytes) -> list[str]:
    text = raw.decode("utf-8", "surrogateescape").rstrip("\0")
    if "\0" in text:
        return text.split("\0")
    return text.split(".") if text else []


def _int(value: int) -> bytes:
    return struct.pack("<q", value)


# -- values as Envoy's CEL sees them ---------------------------------------------------------------

@dataclass(frozen=True)
class _Message:
    """A protobuf message: read whole, its wire bytes; below it, a field by name."""

    fields: Mapping[str, Any]
    wire: bytes


@dataclass(frozen=True)
class _Struct:
    """A value inside a google.protobuf.Struct (where every number is a double)."""

    value: Any


def _walk(value: Any, segments: list[str]) -> Any:
    """The value `segments` name below `value`, or _MISSING."""
    for segment in segments:
        in_struct = isinstance(value, _Struct)
        raw = value.value if in_struct else value
        if isinstance(raw, _Message):
            child = raw.fields.get(segment, _MISSING)
        elif isinstance(raw, Mapping):
            child = raw.get(segment, _MISSING)
        elif isinstance(raw, list):
            index = int(segment) if segment.isdigit() else -1
            child = raw[index] if 0 <= index < len(raw) else _MISSING
        else:
            return _MISSING
        if child is _MISSING:
            return _MISSING
        value = _Struct(child) if in_struct else child
    return value


def _pairs(pairs: list[tuple[bytes, bytes]]) -> bytes:
    return encode_map([(k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
                       for k, v in pairs])


def _serialize(value: Any) -> bytes | None:
    """Envoy's encoding of a property value; None for a null (nothing to encode)."""
    in_struct = isinstance(value, _Struct)
    raw = value.value if in_struct else value
    wrap: Callable[[Any], Any] = _Struct if in_struct else (lambda child: child)
    if isinstance(raw, _Message):
        return raw.wire
    if raw is None:
        return None
    if isinstance(raw, bool):
        return b"\x01" if raw else b"\x00"
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, int) and not in_struct:
        return _int(raw)
    if isinstance(raw, int | float):
        return struct.pack("<d", float(raw))
    if isinstance(raw, Mapping):
        entries = [(str(key).encode(), _serialize(wrap(child))) for key, child in raw.items()]
        if any(encoded is None for _, encoded in entries):
            return None
        return _pairs([(key, encoded) for key, encoded in entries if encoded is not None])
    if isinstance(raw, list):
        elements = [_serialize(wrap(child)) for child in raw]
        if any(encoded is None for encoded in elements):
            return None
        return _pairs([(encoded, b"") for encoded in elements if encoded is not None])
    return None


# -- protobuf wire encoding of the two messages Envoy hands out ------------------------------------

def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _struct_wire(value: Mapping[str, Any]) -> bytes:
    from google.protobuf import struct_pb2  # on first use: protobuf is not needed to import the ABI

    message = struct_pb2.Struct()
    message.update(value)
    return message.SerializeToString(deterministic=True)


def node_message(node: Mapping[str, Any]) -> _Message:
    """envoy.config.core.v3.Node: id = 1, cluster = 2, metadata = 3 (proto3: empty fields omitted)."""
    node_id, cluster, metadata = str(node.get("id", "")), str(node.get("cluster", "")), node.get("metadata") or {}
    wire = b"".join([_length_delimited(1, node_id.encode()) if node_id else b"",
                     _length_delimited(2, cluster.encode()) if cluster else b"",
                     _length_delimited(3, _struct_wire(metadata)) if metadata else b""])
    return _Message({"id": node_id, "cluster": cluster, "metadata": _Struct(dict(metadata))}, wire)


def metadata_message(filter_metadata: Mapping[str, Mapping[str, Any]]) -> _Message:
    """envoy.config.core.v3.Metadata: filter_metadata = 1 (map<string, Struct>); typed_filter_metadata
    (map<string, Any>) cannot be configured here and is always empty."""
    entries = [_length_delimited(1, _length_delimited(1, name.encode()) + _length_delimited(2, _struct_wire(value)))
               for name, value in filter_metadata.items()]
    fields = {"filter_metadata": {name: _Struct(dict(value)) for name, value in filter_metadata.items()},
              "typed_filter_metadata": {}}
    return _Message(fields, b"".join(entries))


def _plugin_attributes(vm: ProxyWasmVM) -> dict[str, Any]:
    settings = vm.settings
    return {"plugin_name": settings.name, "plugin_root_id": settings.root_id, "plugin_vm_id": settings.vm_id,
            "function_id": vm.function_id, "node": lambda: node_message(settings.node),
            "listener_direction": LISTENER_DIRECTION_INBOUND}


def _route_attributes(vm: ProxyWasmVM) -> dict[str, Any]:
    """The function's route properties as configured, the two metadata tables as Metadata messages."""
    attributes = dict(vm.settings.route_properties)
    for key in ROUTE_METADATA_KEYS:
        attributes[key] = _metadata_factory(attributes.get(key) or {})
    return attributes


def _metadata_factory(filter_metadata: Mapping[str, Mapping[str, Any]]) -> Callable[[], _Message]:
    return lambda: metadata_message(filter_metadata)


def _lookup(attributes: Mapping[str, Any], segments: list[str]) -> bytes | None:
    """Find the longest configured name (dotted) that starts `segments`, then walk below it. A
    function value is built when read (the protobuf messages). Only as many leading segments as the
    longest name has are tried: a guest's path of thousands of segments costs one pass, not a square."""
    depth = max((name.count(".") + 1 for name in attributes), default=0)
    for split in range(min(len(segments), depth), 0, -1):
        value = attributes.get(".".join(segments[:split]), _MISSING)
        if value is not _MISSING:
            value = value() if callable(value) else value
            found = _walk(value, segments[split:])
            return None if found is _MISSING else _serialize(found)
    return None


# -- the request's attributes ----------------------------------------------------------------------

def _request_props(vm: ProxyWasmVM) -> dict[str, Callable[[], bytes]]:
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


def get_property(vm: ProxyWasmVM, segments: list[str]) -> bytes | None:
    """The property's bytes, or None when the path names nothing."""
    key = ".".join(segments)
    stream = vm.stream
    if stream is not None and key in stream.properties:
        return stream.properties[key]
    if key in vm.properties:
        return vm.properties[key]
    if len(segments) > 1 and segments[0] == "xds" and segments[1] in _XDS:
        segments = segments[1:]  # Envoy's newer names for the same attributes
    value = _lookup(_plugin_attributes(vm), segments)
    if value is not None or stream is None:
        return value
    value = _lookup(_route_attributes(vm), segments)
    if value is not None:
        return value
    if len(segments) == 3 and segments[:2] == ["request", "headers"]:
        header = stream.request.header(segments[2])
        return header.encode() if header is not None else None
    getter = _request_props(vm).get(key)
    return getter() if getter is not None else None

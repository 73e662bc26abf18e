"""Envoy-shaped properties, configured, so filters written for Envoy/Istio configure instead of
refusing: `node.*` from `[server.node]` (at any time), `plugin_*` and `listener_direction`, and the
function's route attributes from `[functions.<id>.properties]` (during requests, for the function and
its filters). Values are decoded here independently: protobuf messages with a descriptor built from
Envoy's field numbers, maps with a byte-level parser.
"""

from __future__ import annotations

import datetime
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory, struct_pb2

from abi import HostServices, PluginSettings, ProxyWasmVM, WasmEngine, all_host_functions
from host.config import validate_config
from host.config.errors import ConfigError
from host.functions.spec import spec_for
from tests.conftest import ENGINE_BACKENDS, functions_dir, make_config
from tests.guest_wat import RET, Results, WatGuest, write_guest

OK, NOT_FOUND = 0, 1
NODE_ID = "sidecar~10.0.0.1~props.default~default.svc.cluster.local"
NODE = {"id": NODE_ID, "cluster": "props-cluster",
        "metadata": {"NAMESPACE": "default", "ISTIO_VERSION": "1.22.0", "PORT": 8080, "LABELS": {"app": "props"},
                     "TAGS": ["a", "b"]}}
ROUTE_METADATA = {"filter_metadata": {"envoy.lb": {"canary": True, "weight": 2.5}}}
PROPERTIES = {"route_name": "props-route", "cluster_name": "outbound|80||props.default",
              "route_metadata": ROUTE_METADATA, "my.attr": "custom", "count": 7, "my.table": {"k": "v"}}


def envoy_messages() -> tuple[Any, Any]:
    """envoy.config.core.v3.Node (id 1, cluster 2, metadata 3) and Metadata (filter_metadata 1)."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(struct_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(name="test_envoy_core.proto", package="envoy.config.core.v3",
                                               dependency=["google/protobuf/struct.proto"], syntax="proto3")
    field = descriptor_pb2.FieldDescriptorProto
    string, message = field.TYPE_STRING, field.TYPE_MESSAGE
    optional, repeated = field.LABEL_OPTIONAL, field.LABEL_REPEATED
    node = proto.message_type.add(name="Node")
    node.field.add(name="id", number=1, type=string, label=optional)
    node.field.add(name="cluster", number=2, type=string, label=optional)
    node.field.add(name="metadata", number=3, type=message, label=optional, type_name=".google.protobuf.Struct")
    metadata = proto.message_type.add(name="Metadata")
    entry = metadata.nested_type.add(name="FilterMetadataEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=string, label=optional)
    entry.field.add(name="value", number=2, type=message, label=optional, type_name=".google.protobuf.Struct")
    metadata.field.add(name="filter_metadata", number=1, type=message, label=repeated,
                       type_name=".envoy.config.core.v3.Metadata.FilterMetadataEntry")
    pool.Add(proto)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName("envoy.config.core.v3.Node")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName("envoy.config.core.v3.Metadata")))


def pairs(data: bytes) -> list[tuple[bytes, bytes]]:
    """A serialized proxy-wasm map, byte for byte (values may be any bytes)."""
    (count,) = struct.unpack_from("<I", data)
    sizes = struct.unpack_from(f"<{2 * count}I", data, 4)
    pos, out = 4 + 8 * count, []
    for i in range(count):
        key = data[pos:pos + sizes[2 * i]]
        pos += sizes[2 * i] + 1
        value = data[pos:pos + sizes[2 * i + 1]]
        pos += sizes[2 * i + 1] + 1
        out.append((key, value))
    assert pos == len(data)
    return out


def reader(g: WatGuest, paths: list[str]) -> str:
    """WAT recording (status, bytes) of each NUL-separated path (a "." in a path stays in its segment)."""
    return "\n    ".join(f"(call $emit_ret {g.call('proxy_get_property', g.s(chr(0).join(p.split('/'))), RET)})"
                         for p in paths)


ROOT_PATHS = ["node/id", "node/cluster", "node/metadata/NAMESPACE", "node/metadata/PORT", "node/metadata/LABELS/app",
              "node/metadata/TAGS/1", "node/metadata/MISSING", "node/locality", "xds/node/id", "plugin_name",
              "plugin_root_id", "plugin_vm_id", "listener_direction", "route_name", "node", "node/metadata"]
REQUEST_PATHS = ["route_name", "xds/route_name", "cluster_name", "route_metadata/filter_metadata/envoy.lb/canary",
                 "route_metadata/filter_metadata/envoy.lb/weight", "route_metadata/filter_metadata/nope",
                 "route_metadata", "cluster_metadata", "my.attr", "my/attr", "count", "my/table/k", "my.table",
                 "request/path"]
FILTER_PATHS = ["plugin_name", "route_name", "cluster_name", "node/id"]


async def test_envoy_properties_as_configured(serve, tmp_path: Path) -> None:
    g = WatGuest()
    props = g.module(proxy_on_configure=f"{reader(g, ROOT_PATHS)}\n    (i32.const 1)",
                     proxy_on_request_headers=f"{reader(g, REQUEST_PATHS)}\n    (call $flush) (i32.const 0)")
    f = WatGuest()
    authz = f.module(proxy_on_request_headers=f"{reader(f, FILTER_PATHS)}\n    (call $flush) (i32.const 0)")
    p = WatGuest()
    plain = p.module(proxy_on_request_headers=f"{reader(p, ['route_name', 'cluster_name', 'node/cluster'])}\n"
                                              "    (call $flush) (i32.const 0)")
    folder = functions_dir(tmp_path)
    write_guest(folder, "props", props)
    write_guest(folder, "plain", plain)
    write_guest(tmp_path / "filters", "authz", authz)
    config = make_config(tmp_path, folder, function_defaults={"instance_num": 1},
                         server={"node": NODE},
                         functions={"props": {"root_id": "props_root", "vm_id": "vm-1", "properties": PROPERTIES,
                                              "filters": [{"path": str(tmp_path / "filters" / "authz.wat")}]}})
    client = await serve(config)
    node_message, metadata_message = envoy_messages()

    status, _, body = await client.call("props")
    assert status == 200, body
    r = Results(body)
    root = {path: r.ret() for path in ROOT_PATHS}
    assert root["node/id"] == (OK, NODE_ID.encode()) and root["xds/node/id"] == (OK, NODE_ID.encode())
    assert root["node/cluster"] == (OK, b"props-cluster")
    assert root["node/metadata/NAMESPACE"] == (OK, b"default")
    assert root["node/metadata/PORT"] == (OK, struct.pack("<d", 8080.0))  # a Struct number is a double
    assert root["node/metadata/LABELS/app"] == (OK, b"props")
    assert root["node/metadata/TAGS/1"] == (OK, b"b")
    assert root["node/metadata/MISSING"][0] == NOT_FOUND and root["node/locality"][0] == NOT_FOUND
    assert root["plugin_name"] == (OK, b"props") and root["plugin_root_id"] == (OK, b"props_root")
    assert root["plugin_vm_id"] == (OK, b"vm-1")
    assert root["listener_direction"] == (OK, struct.pack("<q", 1))  # INBOUND
    assert root["route_name"][0] == NOT_FOUND  # no route outside a request, as in Envoy's root context
    status, wire = root["node"]
    node = node_message.FromString(wire)
    assert status == OK and (node.id, node.cluster) == (NODE_ID, "props-cluster")
    assert json_format.MessageToDict(node.metadata) == NODE["metadata"] | {"PORT": 8080.0}
    status, metadata = root["node/metadata"]
    entries = dict(pairs(metadata))
    assert status == OK and set(entries) == {b"NAMESPACE", b"ISTIO_VERSION", b"PORT", b"LABELS", b"TAGS"}
    assert entries[b"ISTIO_VERSION"] == b"1.22.0" and entries[b"PORT"] == struct.pack("<d", 8080.0)
    assert pairs(entries[b"LABELS"]) == [(b"app", b"props")]  # a nested Struct is a nested map
    assert pairs(entries[b"TAGS"]) == [(b"a", b""), (b"b", b"")]  # a list: (element, "") pairs

    request = {path: r.ret() for path in REQUEST_PATHS}
    assert request["route_name"] == request["xds/route_name"] == (OK, b"props-route")
    assert request["cluster_name"] == (OK, b"outbound|80||props.default")
    assert request["route_metadata/filter_metadata/envoy.lb/canary"] == (OK, b"\x01")
    assert request["route_metadata/filter_metadata/envoy.lb/weight"] == (OK, struct.pack("<d", 2.5))
    assert request["route_metadata/filter_metadata/nope"][0] == NOT_FOUND
    status, wire = request["route_metadata"]
    route_metadata = metadata_message.FromString(wire)
    assert status == OK and json_format.MessageToDict(route_metadata.filter_metadata["envoy.lb"]) == \
        ROUTE_METADATA["filter_metadata"]["envoy.lb"]
    assert request["cluster_metadata"] == (OK, b"")  # an empty Metadata message
    assert request["my.attr"] == request["my/attr"] == (OK, b"custom")
    assert request["count"] == (OK, struct.pack("<q", 7))  # a configured integer is an int64
    assert request["my/table/k"] == (OK, b"v")
    assert pairs(request["my.table"][1]) == [(b"k", b"v")]
    assert request["request/path"] == (OK, b"/")  # the request's own attributes are still there

    # The filter in front of the function: its own plugin name, the function's route.
    filter_view = {path: r.ret() for path in FILTER_PATHS}
    assert filter_view == {"plugin_name": (OK, b"authz"), "route_name": (OK, b"props-route"),
                           "cluster_name": (OK, b"outbound|80||props.default"), "node/id": (OK, NODE_ID.encode())}
    assert r.done()

    # Without properties, the route and the cluster are the function itself.
    status, _, body = await client.call("plain")
    r = Results(body)
    assert [r.ret() for _ in range(3)] == [(OK, b"plain"), (OK, b"plain"), (OK, b"props-cluster")]


def test_node_defaults_to_this_host(tmp_path: Path) -> None:
    folder = functions_dir(tmp_path)
    write_guest(folder, "f", WatGuest().module())
    config = make_config(tmp_path, folder, app_id="shop")
    settings = spec_for(config, folder / "f.wat").plugin_settings()
    assert settings.node == {"id": socket.gethostname(), "cluster": "shop", "metadata": {}}
    assert settings.route_properties == {"route_name": "f", "cluster_name": "f", "route_metadata": {},
                                         "cluster_metadata": {}}


@pytest.mark.parametrize(("section", "value", "named"), [
    ("functions", {"f": {"properties": {"route_metadata": {"envoy.lb": {"canary": True}}}}}, "route_metadata"),
    ("server", {"node": {"metadata": {"since": datetime.date(2024, 1, 1)}}}, "server.node.metadata"),
    ("server", {"node": {"name": "x"}}, "server.node.name"),
])
def test_malformed_envoy_configuration_is_refused(tmp_path: Path, section: str, value: dict[str, Any],
                                                  named: str) -> None:
    raw: dict[str, Any] = {"functions_dirs": [], section: value}
    with pytest.raises(ConfigError) as refused:
        validate_config(raw, "test")
    assert named in str(refused.value)


def test_a_path_of_many_segments_costs_one_pass() -> None:
    """A guest's path of ~60000 NUL-separated segments is answered at once (a prefix search over all
    of them would hold the GIL for seconds: host code is not interrupted by the guest's deadline)."""
    g = WatGuest()
    g.extra.append('  (data (i32.const 61023) "x")')
    g.extra.append(f'''  (func (export "lookup") (result i32)
    {g.call("proxy_get_property", (1024, 60000), RET)})''')
    engine = WasmEngine(ENGINE_BACKENDS[0])
    vm = ProxyWasmVM(engine, engine.linker(all_host_functions()), engine.compile(wasmtime.wat2wasm(g.module())),
                     PluginSettings(name="long", route_properties={"my.deep.name": "v"}), HostServices())
    vm.start()
    lookup = vm.guest.func("lookup")
    assert lookup is not None
    started = time.monotonic()
    assert lookup() == NOT_FOUND
    assert time.monotonic() - started < 0.5

"""A function's resolved settings (FunctionSpec): defaults < `name.toml` beside the module < the config
entry < settings given through the admin API, and the PluginSettings its instances start with."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abi import PluginSettings
from abi.maps import encode_map
from host.config import FilterConfig, FunctionConfig, HostConfig
from host.functions.errors import DeployError
from host.functions.sources import explicit_entries, read_settings

# The FunctionConfig allow-lists; the ABI checks each under its setting's name.
ALLOW_LISTS = ("allowed_state_stores", "allowed_invoke_targets", "allowed_upstreams", "allowed_pubsubs",
               "allowed_lock_stores", "allowed_sequencers", "allowed_configuration_stores")


@dataclass(frozen=True)
class FunctionSpec:
    """A function's resolved settings: everything needed to deploy it."""

    name: str
    path: Path
    instance_num: int
    timeout_s: float
    md5: str | None = None
    plugin_config: bytes = b""
    vm_config: bytes = b""
    root_id: str = ""
    vm_id: str = ""
    memory_limit_bytes: int | None = None
    max_queue: int = 256
    allow_lists: dict[str, tuple[str, ...]] = field(default_factory=dict)  # allow-list setting -> names
    fuel: int | None = None
    filters: tuple[FunctionSpec, ...] = ()
    node: dict[str, Any] = field(default_factory=dict)  # the Envoy node filters read (abi/properties.py)
    route_properties: dict[str, Any] = field(default_factory=dict)  # the function's route attributes

    def plugin_settings(self) -> PluginSettings:
        """What each instance of this function (or filter) starts with."""
        return PluginSettings(name=self.name, plugin_config=self.plugin_config, vm_config=self.vm_config,
                              root_id=self.root_id, vm_id=self.vm_id, memory_limit_bytes=self.memory_limit_bytes,
                              allow_lists=self.allow_lists, fuel_per_request=self.fuel, node=self.node,
                              route_properties=self.route_properties)


def _allow_lists(item: FunctionConfig) -> dict[str, tuple[str, ...]]:
    lists = {name: getattr(item, name) for name in ALLOW_LISTS}
    return {name: tuple(names) for name, names in lists.items() if names is not None}


def _config_bytes(value: str | dict[str, Any], encoding: str = "json") -> bytes:
    if isinstance(value, str):
        return value.encode()
    if encoding == "proxy-wasm-map":
        return encode_map([(str(k), str(v)) for k, v in value.items()])
    return json.dumps(value, separators=(",", ":")).encode()


def spec_for(config: HostConfig, path: Path, override: FunctionConfig | None = None) -> FunctionSpec:
    """Settings for the module at `path`: defaults < settings file < config entry < `override`."""
    path = path.resolve()
    key, explicit = explicit_entries(config).get(path, (path.stem, FunctionConfig()))
    merged: dict[str, Any] = {}
    for layer in (read_settings(path), explicit, override or FunctionConfig()):
        merged.update(layer.model_dump(exclude_unset=True))
    item = FunctionConfig.model_validate(merged)
    defaults = config.function_defaults
    instances = instance_count(item.instance_num if item.instance_num is not None else defaults.instance_num)
    timeout_s = (item.timeout_ms or defaults.timeout_ms) / 1000
    memory_mb = item.memory_limit_mb or defaults.memory_limit_mb
    name = item.name or key
    node, route = node_properties(config), route_properties(item, name)
    return FunctionSpec(
        name=name, path=path, instance_num=instances, timeout_s=timeout_s, md5=item.md5,
        plugin_config=_config_bytes(item.plugin_config, item.plugin_config_encoding),
        vm_config=_config_bytes(item.vm_config),
        root_id=item.root_id, vm_id=item.vm_id, memory_limit_bytes=memory_mb * 1024 * 1024,
        max_queue=item.max_queue if item.max_queue is not None else defaults.max_queue,
        allow_lists=_allow_lists(item), fuel=_fuel(config, item, key), node=node, route_properties=route,
        filters=tuple(_filter_spec(config, f, instances, timeout_s, route) for f in item.filters))


def node_properties(config: HostConfig) -> dict[str, Any]:
    """`[server.node]` with its defaults: the host name as id, the app id as cluster."""
    node = config.server.node
    return {"id": node.id if node.id is not None else socket.gethostname(),
            "cluster": node.cluster if node.cluster is not None else config.app_id, "metadata": node.metadata}


def route_properties(item: FunctionConfig, name: str) -> dict[str, Any]:
    """The function's route attributes: the route and cluster are the function unless configured."""
    props = item.properties
    return {**(props.model_extra or {}),
            "route_name": props.route_name if props.route_name is not None else name,
            "cluster_name": props.cluster_name if props.cluster_name is not None else name,
            "route_metadata": props.route_metadata.filter_metadata,
            "cluster_metadata": props.cluster_metadata.filter_metadata}


def instance_count(configured: int) -> int:
    """`instance_num` as configured: <= 0 means one instance per CPU."""
    return configured if configured > 0 else (os.cpu_count() or 1)


def _fuel(config: HostConfig, item: FunctionConfig, key: str) -> int | None:
    if item.fuel is not None and not config.server.fuel_metering:
        raise DeployError(f"functions.{key}.fuel needs server.fuel_metering = true")
    return item.fuel


def _filter_spec(config: HostConfig, item: FilterConfig, instances: int, timeout_s: float,
                 route: dict[str, Any]) -> FunctionSpec:
    """A filter is its own plugin (name, configuration, ids) on the function's route."""
    path = config.resolve(item.path)
    return FunctionSpec(name=item.name or path.stem, path=path, instance_num=instances, timeout_s=timeout_s,
                        plugin_config=_config_bytes(item.plugin_config, item.plugin_config_encoding),
                        vm_config=_config_bytes(item.vm_config), root_id=item.root_id, vm_id=item.vm_id,
                        memory_limit_bytes=config.function_defaults.memory_limit_mb * 1024 * 1024,
                        node=node_properties(config), route_properties=route)

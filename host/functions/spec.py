"""A function's resolved settings (FunctionSpec): defaults < `name.toml` beside the module < the config
entry < settings given through the admin API, and the PluginSettings its instances start with."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from abi import PluginSettings
from abi.maps import encode_map
from host.config import FilterConfig, FunctionConfig, FunctionDefaults, HostConfig, describe_validation_error
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
    instance_num: int  # the most instances (max_instances)
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
    # --- instances (issue 16) ---
    min_instances: int | None = None  # the fewest kept, idle or not; None: instance_num (a fixed pool)
    idle_timeout_s: float = 60.0  # an instance above the minimum idle this long is retired

    @property
    def min_size(self) -> int:
        return self.instance_num if self.min_instances is None else min(self.min_instances, self.instance_num)
    # --- end instances ---

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


_NO_SETTINGS = FunctionConfig()


def spec_for(config: HostConfig, path: Path, override: FunctionConfig | None = None) -> FunctionSpec:
    """Settings for the module at `path`: defaults < settings file < config entry < `override`."""
    path = path.resolve()
    key, explicit = explicit_entries(config).get(path, (path.stem, None))
    merged: dict[str, Any] = {}
    for layer in (read_settings(path), explicit, override):
        if layer is not None:  # an absent layer sets nothing (and building an empty one costs a deep copy)
            merged.update(layer.model_dump(exclude_unset=True))
    low, high = merged.get("min_instances"), merged.get("max_instances")
    if isinstance(low, int) and isinstance(high, int) and 0 < high < low:
        merged["min_instances"] = high  # set in different layers: the minimum is lowered to the maximum
    try:
        # A module with no settings of its own (the common case: 10,000 of them, issue 16) shares one
        # validated empty table, only read from here on.
        item = _NO_SETTINGS if not merged else FunctionConfig.model_validate(merged)
    except ValidationError as error:  # each layer was valid alone, together they are not
        raise DeployError(f"{path.name}: {'; '.join(describe_validation_error(error))}") from None
    defaults = config.function_defaults
    low, instances, idle_timeout_s = instance_bounds(defaults, item)
    check_instance_count(config, instances)
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
        min_instances=low, idle_timeout_s=idle_timeout_s,
        filters=tuple(_filter_spec(config, f, (low, instances, idle_timeout_s), timeout_s, route)
                      for f in item.filters))


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


# --- instances (issue 16) ---
def instance_bounds(defaults: FunctionDefaults, item: FunctionConfig) -> tuple[int, int, float]:
    """(min, max, idle timeout in seconds) of a function's pool. `instance_num` is a fixed pool
    (min = max = instance_num, Layotto's meaning); min_instances / max_instances given beside it win.
    The function's own settings come before [function_defaults]; a minimum over the maximum is
    lowered to it."""
    if defaults.instance_num is not None:
        low = high = instance_count(defaults.instance_num)
    else:
        low, high = 0, instance_count(0)
    set_here = defaults.model_fields_set
    if "max_instances" in set_here:
        high = instance_count(defaults.max_instances)
    if "min_instances" in set_here or defaults.instance_num is None:
        low = defaults.min_instances
    if item.instance_num is not None:
        low = high = instance_count(item.instance_num)
    if item.max_instances is not None:
        high = instance_count(item.max_instances)
    if item.min_instances is not None:
        low = item.min_instances
    idle_ms = item.idle_timeout_ms if item.idle_timeout_ms is not None else defaults.idle_timeout_ms
    return min(low, high), high, idle_ms / 1000
# --- end instances ---


def check_instance_count(config: HostConfig, instances: int) -> None:
    """Refuse a pool larger than `server.max_instances_per_function` (issue 15 item 9)."""
    most = config.server.max_instances_per_function
    if instances > most:
        raise DeployError(f"instance_num {instances} is over server.max_instances_per_function ({most})")


def _fuel(config: HostConfig, item: FunctionConfig, key: str) -> int | None:
    if item.fuel is not None and not config.server.fuel_metering:
        raise DeployError(f"functions.{key}.fuel needs server.fuel_metering = true")
    return item.fuel


def _filter_spec(config: HostConfig, item: FilterConfig, bounds: tuple[int, int, float], timeout_s: float,
                 route: dict[str, Any]) -> FunctionSpec:
    """A filter is its own plugin (name, configuration, ids) on the function's route; its pool scales
    with the function's (the same bounds)."""
    path = config.resolve(item.path)
    low, instances, idle_timeout_s = bounds
    return FunctionSpec(name=item.name or path.stem, path=path, instance_num=instances, timeout_s=timeout_s,
                        min_instances=low, idle_timeout_s=idle_timeout_s,
                        plugin_config=_config_bytes(item.plugin_config, item.plugin_config_encoding),
                        vm_config=_config_bytes(item.vm_config), root_id=item.root_id, vm_id=item.vm_id,
                        memory_limit_bytes=config.function_defaults.memory_limit_mb * 1024 * 1024,
                        node=node_properties(config), route_properties=route)

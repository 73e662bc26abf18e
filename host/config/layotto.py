"""Turn Layotto's `config.json` (reference §6) into the native config shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from host.components.registry import from_layotto
from host.config.errors import ConfigError


def _listeners(raw: dict[str, Any]) -> list[dict[str, Any]]:
    servers = raw.get("servers")
    if not isinstance(servers, list):
        raise ConfigError("Layotto config: 'servers' must be a list")
    return [listener for server in servers for listener in server.get("listeners", [])]


def _function_item(key: str, item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ConfigError(f"Layotto config: function {key!r} must be an object")
    vm_config = item.get("vm_config") or {}
    if "path" not in vm_config:
        raise ConfigError(f"Layotto config: function {key!r}: vm_config.path is required")
    unknown = set(vm_config) - {"engine", "path", "md5", "url"}
    if unknown:
        raise ConfigError(f"Layotto config: function {key!r}: unknown vm_config field(s) {sorted(unknown)}")
    # Every top-level string field (`name` included) becomes the plugin configuration, as in Layotto
    # (its parseUserData keeps all string fields but `from_wasm_plugin`).
    plugin = {k: v for k, v in item.items() if k != "from_wasm_plugin" and isinstance(v, str)}
    converted: dict[str, Any] = {
        "name": item.get("name", key),
        "path": vm_config["path"],
        "engine": vm_config.get("engine", "wasmtime"),
        "plugin_config": plugin or "",
        "plugin_config_encoding": "proxy-wasm-map",  # Layotto serializes the fields as a map
    }
    if "instance_num" in item:
        converted["instance_num"] = item["instance_num"]
    if vm_config.get("md5"):
        converted["md5"] = vm_config["md5"]
    return converted


# Layotto's grpc_config sections -> this host's capability sections.
_SECTIONS = {"state": "state", "pub_subs": "pubsub", "lock": "lock", "sequencer": "sequencer",
             "config_store": "configuration"}


def _component(section: str, name: str, spec: Any) -> dict[str, Any]:
    """One `{"type": ..., "metadata": {...}}` entry as the backend's own config fields."""
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise ConfigError(f"Layotto config: grpc_config.{section}.{name} needs a 'type'")
    metadata = spec.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ConfigError(f"Layotto config: grpc_config.{section}.{name}.metadata must be an object")
    metadata = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    if section == "sequencer" and isinstance(spec.get("biggerThan"), dict):
        metadata["biggerThan"] = json.dumps(spec["biggerThan"])
    try:
        return from_layotto(_SECTIONS[section], spec["type"], metadata)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"Layotto config: grpc_config.{section}.{name}: {error}") from None


def _grpc_config(config: dict[str, Any], grpc: dict[str, Any]) -> None:
    for section, capability in _SECTIONS.items():
        for name, spec in (grpc.get(section) or {}).items():
            config[capability][name] = _component(section, name, spec)
    app = grpc.get("app") or {}
    if isinstance(app, dict) and isinstance(app.get("app_id"), str) and app["app_id"]:
        config["app_id"] = app["app_id"]
    if isinstance(app, dict) and app.get("grpc_callback_port"):  # the app's Layotto AppCallback (runtime API)
        host = app.get("grpc_callback_host") or "127.0.0.1"
        config["server"]["app_callback"] = f"{host}:{app['grpc_callback_port']}"
        config["server"]["app_callback_protocol"] = "layotto"


def convert_layotto_config(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    config: dict[str, Any] = {"server": {}, "functions": {}, **{c: {} for c in _SECTIONS.values()}}
    for listener in _listeners(raw):
        for chain_filter in listener.get("stream_filters", []):
            if chain_filter.get("type") == "Layotto":
                config["server"]["listen"] = listener.get("address", "0.0.0.0:2045")
                for key, item in (chain_filter.get("config") or {}).items():
                    converted = _function_item(key, item)
                    config["functions"][converted["name"]] = converted
        for chain in listener.get("filter_chains", []):
            for chain_filter in chain.get("filters", []):
                filter_config = chain_filter.get("config") or {}
                if "grpc_config" in filter_config and listener.get("address"):
                    config["server"]["grpc"] = listener["address"]  # the runtime API's gRPC listener
                _grpc_config(config, filter_config.get("grpc_config") or {})
    if not config["functions"]:
        raise ConfigError(f"{path}: no Layotto function items found (stream_filters of type 'Layotto')")
    return config

"""Turn Layotto's `config.json` (reference §6) into the native config shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import ConfigError


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


def _state_store(name: str, spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"Layotto config: state store {name!r} needs a 'type'")
    metadata = spec.get("metadata") or {}
    if spec["type"] == "redis":
        store = {"type": "redis", "address": metadata.get("redisHost", "127.0.0.1:6379"),
                 "password": metadata.get("redisPassword", "")}
        if "redisDB" in metadata:
            store["db"] = int(metadata["redisDB"])
        return store
    return {"type": spec["type"]}


def convert_layotto_config(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    config: dict[str, Any] = {"server": {}, "functions": {}, "state": {}}
    for listener in _listeners(raw):
        for chain_filter in listener.get("stream_filters", []):
            if chain_filter.get("type") == "Layotto":
                config["server"]["listen"] = listener.get("address", "0.0.0.0:2045")
                for key, item in (chain_filter.get("config") or {}).items():
                    converted = _function_item(key, item)
                    config["functions"][converted["name"]] = converted
        for chain in listener.get("filter_chains", []):
            for chain_filter in chain.get("filters", []):
                grpc = (chain_filter.get("config") or {}).get("grpc_config") or {}
                for name, spec in (grpc.get("state") or {}).items():
                    config["state"][name] = _state_store(name, spec)
    if not config["functions"]:
        raise ConfigError(f"{path}: no Layotto function items found (stream_filters of type 'Layotto')")
    return config

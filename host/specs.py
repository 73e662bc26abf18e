"""Which functions exist and with which settings: config entries, modules in the functions folders,
and per-function settings files (`name.toml` beside `name.wasm`)."""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from pydantic import ValidationError

from abi.maps import encode_map

from .config import FilterConfig, FunctionConfig, HostConfig

MODULE_SUFFIXES = (".wasm", ".wat")
SETTINGS_SUFFIX = ".toml"


class DeployError(Exception):
    """The module cannot be deployed; the message says why."""


@dataclass(frozen=True)
class FunctionSpec:
    """A function's resolved settings: everything needed to deploy it."""

    name: str
    path: Path
    instance_num: int
    timeout_s: float
    md5: Optional[str] = None
    plugin_config: bytes = b""
    vm_config: bytes = b""
    root_id: str = ""
    vm_id: str = ""
    memory_limit_bytes: Optional[int] = None
    max_queue: int = 256
    allowed_state_stores: Optional[tuple[str, ...]] = None
    allowed_invoke_targets: Optional[tuple[str, ...]] = None
    allowed_upstreams: Optional[tuple[str, ...]] = None
    fuel: Optional[int] = None
    filters: tuple["FunctionSpec", ...] = ()


def _optional_tuple(values: Optional[list[str]]) -> Optional[tuple[str, ...]]:
    return tuple(values) if values is not None else None


def _config_bytes(value: Union[str, dict[str, Any]], encoding: str = "json") -> bytes:
    if isinstance(value, str):
        return value.encode()
    if encoding == "proxy-wasm-map":
        return encode_map([(str(k), str(v)) for k, v in value.items()])
    return json.dumps(value, separators=(",", ":")).encode()


def is_module(path: Path) -> bool:
    return path.suffix in MODULE_SUFFIXES and not path.name.startswith(".")


def module_for_settings(path: Path) -> Optional[Path]:
    """The module a settings file belongs to (`x.toml` -> `x.wasm` or `x.wat`), if present."""
    for suffix in MODULE_SUFFIXES:
        candidate = path.with_suffix(suffix)
        if candidate.exists():
            return candidate
    return None


def read_settings(path: Path) -> FunctionConfig:
    """`name.toml` beside `name.wasm`: the same fields as a [functions.x] table."""
    settings = path.with_suffix(SETTINGS_SUFFIX)
    if not settings.exists():
        return FunctionConfig()
    try:
        return FunctionConfig.model_validate(tomllib.loads(settings.read_text()))
    except tomllib.TOMLDecodeError as error:
        raise DeployError(f"{settings.name}: not valid TOML: {error}") from None
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise DeployError(f"{settings.name}: {problems}") from None


def watched_folders(config: HostConfig) -> list[Path]:
    return [config.resolve(d) for d in config.functions_dirs]


def explicit_entries(config: HostConfig) -> dict[Path, tuple[str, FunctionConfig]]:
    """[functions.<key>] tables by module path; without `path`, `<key>.wasm` (or `.wat`) in a functions folder."""
    entries = {}
    for key, item in config.functions.items():
        path = config.resolve(item.path) if item.path is not None else _find_in_folders(config, key)
        if path is None:
            raise DeployError(f"functions.{key}: no 'path', and no {key}.wasm or {key}.wat in functions_dirs")
        entries[path] = (key, item)
    return entries


def _find_in_folders(config: HostConfig, key: str) -> Optional[Path]:
    for folder in watched_folders(config):
        for suffix in MODULE_SUFFIXES:
            candidate = folder / f"{key}{suffix}"
            if candidate.is_file():
                return candidate.resolve()
    return None


def discover(config: HostConfig) -> list[Path]:
    """Every module to deploy at start-up: folder contents plus explicit entries."""
    paths: dict[Path, None] = {}
    for folder in watched_folders(config):
        if not folder.is_dir():
            raise DeployError(f"functions folder {folder} does not exist")
        for path in sorted(folder.iterdir()):
            if is_module(path) and path.is_file():
                paths[path.resolve()] = None
    for path in explicit_entries(config):
        paths[path] = None
    return list(paths)


def spec_for(config: HostConfig, path: Path, override: Optional[FunctionConfig] = None) -> FunctionSpec:
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
    return FunctionSpec(
        name=item.name or key, path=path, instance_num=instances, timeout_s=timeout_s, md5=item.md5,
        plugin_config=_config_bytes(item.plugin_config, item.plugin_config_encoding), vm_config=_config_bytes(item.vm_config),
        root_id=item.root_id, vm_id=item.vm_id, memory_limit_bytes=memory_mb * 1024 * 1024,
        max_queue=item.max_queue if item.max_queue is not None else defaults.max_queue,
        allowed_state_stores=_optional_tuple(item.allowed_state_stores),
        allowed_invoke_targets=_optional_tuple(item.allowed_invoke_targets),
        allowed_upstreams=_optional_tuple(item.allowed_upstreams),
        fuel=_fuel(config, item, key),
        filters=tuple(_filter_spec(config, f, instances, timeout_s) for f in item.filters))


def instance_count(configured: int) -> int:
    """`instance_num` as configured: <= 0 means one instance per CPU."""
    return configured if configured > 0 else (os.cpu_count() or 1)


def _fuel(config: HostConfig, item: FunctionConfig, key: str) -> Optional[int]:
    if item.fuel is not None and not config.server.fuel_metering:
        raise DeployError(f"functions.{key}.fuel needs server.fuel_metering = true")
    return item.fuel


def _filter_spec(config: HostConfig, item: FilterConfig, instances: int, timeout_s: float) -> FunctionSpec:
    path = config.resolve(item.path)
    return FunctionSpec(name=item.name or path.stem, path=path, instance_num=instances, timeout_s=timeout_s,
                        plugin_config=_config_bytes(item.plugin_config, item.plugin_config_encoding),
                        vm_config=_config_bytes(item.vm_config), root_id=item.root_id, vm_id=item.vm_id,
                        memory_limit_bytes=config.function_defaults.memory_limit_mb * 1024 * 1024)

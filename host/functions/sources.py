"""Which files are functions: modules in the functions folders, explicit config entries, and the
settings file beside a module (`name.toml` beside `name.wasm`)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import ValidationError

from host.config import FunctionConfig, HostConfig, describe_validation_error
from host.functions.errors import DeployError

MODULE_SUFFIXES = (".wasm", ".wat")
SETTINGS_SUFFIX = ".toml"


def is_module(path: Path) -> bool:
    return path.suffix in MODULE_SUFFIXES and not path.name.startswith(".")


def module_for_settings(path: Path) -> Path | None:
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
        raise DeployError(f"{settings.name}: {'; '.join(describe_validation_error(error))}") from None


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


def _find_in_folders(config: HostConfig, key: str) -> Path | None:
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

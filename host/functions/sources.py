"""Which files are functions: modules in the functions folders, explicit config entries, and the
settings file beside a module (`name.toml` beside `name.wasm`).

A problem with one function never stops the others (issue 15 item 12): an explicit entry whose module
is missing is deployed as that missing file, so it is rejected — and reported in the listings and by
readiness — like any module that cannot be read; a module in a folder that is a symbolic link out of
every functions folder is rejected the same way (`link_outside_folders`)."""

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


def read_settings(path: Path) -> FunctionConfig | None:
    """`name.toml` beside `name.wasm`: the same fields as a [functions.x] table (None: no such file)."""
    settings = path.with_suffix(SETTINGS_SUFFIX)
    if not settings.exists():
        return None
    try:
        return FunctionConfig.model_validate(tomllib.loads(settings.read_text()))
    except tomllib.TOMLDecodeError as error:
        raise DeployError(f"{settings.name}: not valid TOML: {error}") from None
    except ValidationError as error:
        raise DeployError(f"{settings.name}: {'; '.join(describe_validation_error(error))}") from None


def watched_folders(config: HostConfig) -> list[Path]:
    return [config.resolve(d) for d in config.functions_dirs]


def module_folders(config: HostConfig) -> list[Path]:
    """Where modules may be installed from: the functions folders, and the folders of the configured
    functions' modules (a Layotto config.json names modules, not folders)."""
    folders = watched_folders(config)
    for path in explicit_entries(config):
        if path.parent not in folders:
            folders.append(path.parent)
    return folders


def explicit_entries(config: HostConfig) -> dict[Path, tuple[str, FunctionConfig]]:
    """[functions.<key>] tables by module path; without `path`, `<key>.wasm` (or `.wat`) in a functions
    folder — or, when there is none, the `<key>.wasm` it would be (`missing_entry` says why it fails)."""
    entries = {}
    for key, item in config.functions.items():
        path = config.resolve(item.path) if item.path is not None else _find_in_folders(config, key)
        entries[path or _expected_path(config, key)] = (key, item)
    return entries


def _expected_path(config: HostConfig, key: str) -> Path:
    folders = watched_folders(config)
    return (folders[0] if folders else config.resolve(".")) / f"{key}{MODULE_SUFFIXES[0]}"


def missing_entry(config: HostConfig, path: Path) -> str | None:
    """Why the explicit entry deployed from `path` has no module, or None."""
    if path.exists():
        return None
    for key, item in config.functions.items():
        if item.path is None and _expected_path(config, key) == path:
            return f"functions.{key}: no 'path', and no {key}.wasm or {key}.wat in functions_dirs"
    return None


def _inside(path: Path, folders: list[Path]) -> bool:
    return any(path == folder or folder in path.parents for folder in folders)


def link_outside_folders(config: HostConfig, path: Path) -> str | None:
    """Why the module at `path` (found in a functions folder) must not be deployed: it is a symbolic
    link to a file outside every functions folder — which the admin API refuses too. None otherwise."""
    folders = watched_folders(config)
    parent = path.parent.resolve()
    if not _inside(parent, folders):
        return None
    target = path.resolve() if path.is_symlink() else parent / path.name  # one resolve fewer per deploy
    if _inside(target, folders):
        return None
    return (f"{path.name} is a symbolic link to {target}, outside the functions folders "
            "(set server.admin_allow_any_path to allow it)")


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
            if is_module(path) and (path.is_file() or path.is_symlink()):
                paths[path.parent.resolve() / path.name] = None  # a link stays a link: deploying refuses escapes
    for path in explicit_entries(config):
        paths[path] = None
    return list(paths)

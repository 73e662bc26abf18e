"""A function project on disk: `wasm-faas.toml` (written by `wasm-faas new`) names the function, its
language, its sources and where the module goes. `build` and `dev` also take a lone source file
(`hello.c`, `hello.rs`, `hello.ts`), built beside itself."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "wasm-faas.toml"
LANGUAGES = ("c", "rust", "assemblyscript")
SUFFIXES = {".c": "c", ".rs": "rust", ".ts": "assemblyscript"}
SETTINGS_DIR = "host"  # settings files (name.toml) copied beside the built module


class ProjectError(Exception):
    """No usable project at the given path; the message says why."""


@dataclass(frozen=True)
class Project:
    root: Path
    name: str
    lang: str
    sources: tuple[Path, ...]
    output: Path

    @property
    def watched(self) -> list[Path]:
        """Files whose change means a rebuild (the sources and everything beside them)."""
        return [self.root]


def load_project(path: Path) -> Project:
    path = path.resolve()
    if path.is_file() and path.suffix in SUFFIXES:
        manifest = path.parent / MANIFEST
        if not manifest.exists():
            return Project(path.parent, path.stem, SUFFIXES[path.suffix], (path,), path.with_suffix(".wasm"))
        path = path.parent
    manifest = path if path.is_file() else path / MANIFEST
    if not manifest.is_file():
        raise ProjectError(f"no {MANIFEST} in {path} (create a project with `wasm-faas new NAME --lang c`, "
                           f"or pass a .c / .rs / .ts file)")
    try:
        raw = tomllib.loads(manifest.read_text())
    except (OSError, tomllib.TOMLDecodeError) as failure:
        raise ProjectError(f"{manifest}: {failure}") from None
    root = manifest.parent
    name, lang = raw.get("name"), raw.get("lang")
    if not isinstance(name, str) or not name:
        raise ProjectError(f"{manifest}: 'name' (a string) is required")
    if lang not in LANGUAGES:
        raise ProjectError(f"{manifest}: 'lang' must be one of {', '.join(LANGUAGES)}, got {lang!r}")
    sources = raw.get("sources")
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) for s in sources):
        raise ProjectError(f"{manifest}: 'sources' (a list of file names) is required")
    missing = [s for s in sources if not (root / s).is_file()]
    if missing:
        raise ProjectError(f"{manifest}: no such source file(s): {', '.join(missing)}")
    output = raw.get("output", f"build/{name}.wasm")
    if not isinstance(output, str):
        raise ProjectError(f"{manifest}: 'output' must be a path")
    return Project(root, name, lang, tuple((root / s).resolve() for s in sources), (root / output).resolve())

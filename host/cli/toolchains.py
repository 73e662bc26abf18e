"""Build one function with its language's toolchain, reusing the repository's guest build
machinery (scripts/build_guests.py: zig cc from PyPI `ziglang`; scripts/build_rust_guests.py:
Debian's /usr/bin/rustc; scripts/build_as_guests.py: the pinned asc via npm). Compiler errors come
back as `file:line:col: error: message` lines, whatever the compiler's own format."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from host.cli.project import SETTINGS_DIR, Project
from host.config.model import REPO_ROOT

SCRIPTS = REPO_ROOT / "scripts"
SDK = REPO_ROOT / "sdk-guest"


class ToolchainMissing(Exception):
    """The language's compiler is not installed; the message says how to get it."""


class BuildFailed(Exception):
    """The compiler refused the sources: `diagnostics` are `file:line:col: error: message` lines,
    `output` the compiler's whole output."""

    def __init__(self, message: str, diagnostics: list[str], output: str):
        super().__init__(message)
        self.diagnostics = diagnostics
        self.output = output


def _script(name: str) -> ModuleType:
    """scripts/<name>.py as a module (the scripts are not a package)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return __import__(name)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wasm-faas"


# -- diagnostics ---------------------------------------------------------------------------------
_CLANG = re.compile(r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?P<col>\d+): (?P<kind>error|fatal error): (?P<msg>.*)$")
_RUST_HEAD = re.compile(r"^error(?:\[E\d+\])?: (?P<msg>.*)$")
_RUST_AT = re.compile(r"^\s*--> (?P<file>.+?):(?P<line>\d+):(?P<col>\d+)$")
_ASC_HEAD = re.compile(r"^ERROR(?: (?P<code>[A-Z]+\d+))?: (?P<msg>.*)$")
_ASC_AT = re.compile(r"^\s*in (?P<file>.+?)\((?P<line>\d+),(?P<col>\d+)\)")


def diagnostics(output: str, base: Path) -> list[str]:
    """`file:line:col: error: message` for every error in a compiler's output (clang/zig, rustc, asc)."""
    found: list[str] = []
    pending: str | None = None  # rustc and asc name the location on a line after the message
    for line in output.splitlines():
        if match := _CLANG.match(line):
            found.append(f"{_shown(match['file'], base)}:{match['line']}:{match['col']}: error: {match['msg']}")
        elif match := _RUST_HEAD.match(line):
            pending = match["msg"]
        elif match := _ASC_HEAD.match(line):
            pending = match["msg"]
        elif pending is not None and (match := _RUST_AT.match(line) or _ASC_AT.match(line)):
            found.append(f"{_shown(match['file'], base)}:{match['line']}:{match['col']}: error: {pending}")
            pending = None
    return found


def _shown(file: str, base: Path) -> str:
    """A compiler's file name, as a path a user can open (relative to where they are, if inside)."""
    path = Path(file)
    if not path.is_absolute():
        for root in (base, REPO_ROOT):
            if (root / path).exists():
                path = root / path
                break
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _failed(project: Project, text: str, cwd: Path) -> BuildFailed:
    found = diagnostics(text, cwd)
    summary = found[0] if found else "see the compiler output"
    return BuildFailed(f"building {project.name} failed: {summary}", found, text)


# -- the languages -------------------------------------------------------------------------------
def build(project: Project) -> Path:
    """Compile the project into `project.output` (replaced atomically); settings files from its
    host/ folder are copied beside the module. Raises ToolchainMissing or BuildFailed."""
    project.output.parent.mkdir(parents=True, exist_ok=True)
    {"c": _build_c, "rust": _build_rust, "assemblyscript": _build_assemblyscript}[project.lang](project)
    settings = project.root / SETTINGS_DIR
    if settings.is_dir():
        for item in settings.glob("*.toml"):
            shutil.copyfile(item, project.output.parent / item.name)
    return project.output


def _build_c(project: Project) -> None:
    script = _script("build_guests")
    try:
        script.check_zig_version()
    except script.BuildError as failure:
        raise ToolchainMissing(str(failure)) from None
    flags = [str(SDK / "c") if flag == str(script.SDK_DIR) else flag for flag in script.CFLAGS]
    env = dict(os.environ)
    zig_cache = cache_dir() / "zig"
    env.setdefault("ZIG_GLOBAL_CACHE_DIR", str(zig_cache / "global"))
    env.setdefault("ZIG_LOCAL_CACHE_DIR", str(zig_cache / "local"))
    partial = project.output.with_name(f".{project.output.name}.partial")
    command = [sys.executable, "-m", "ziglang", "cc", *flags, "-o", str(partial), *map(str, project.sources)]
    done = subprocess.run(command, cwd=project.root, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise _failed(project, done.stdout + done.stderr, project.root)
    os.replace(partial, project.output)  # atomic: a watching host never loads half a module


def _build_rust(project: Project) -> None:
    script = _script("build_rust_guests")
    try:
        script.check_toolchain(any_rustc=True)
    except script.BuildError as failure:
        raise ToolchainMissing(str(failure)) from None
    if len(project.sources) != 1:
        raise BuildFailed(f"{project.name}: a Rust function is one file (the crate root); got "
                          f"{len(project.sources)}", [], "")
    with tempfile.TemporaryDirectory(prefix="wasm-faas-rust-") as tmp:
        work = Path(tmp)
        try:
            rlib = script.build_sdk(work)
            script.build_example(project.sources[0], project.output, rlib, work)
        except script.BuildError as failure:
            raise _failed(project, str(failure), REPO_ROOT) from None


def _build_assemblyscript(project: Project) -> None:
    script = _script("build_as_guests")
    try:
        node = script.check_node()
        script.ensure_toolchain()
    except script.BuildError as failure:
        text = str(failure)
        if "was not found on PATH" in text:
            raise ToolchainMissing(text) from None
        raise BuildFailed(text, [], text) from None
    asc = script.AS_DIR / "node_modules" / "assemblyscript" / "bin" / "asc"
    partial = project.output.with_name(f".{project.output.name}.partial")
    # --path: the SDK's node_modules resolve imports for a project outside sdk-guest/assemblyscript.
    command = [node, str(asc), *map(str, project.sources), "-b", str(partial), "--path",
               str(script.AS_DIR / "node_modules"), *script.ASC_FLAGS]
    done = subprocess.run(command, cwd=project.root, capture_output=True, text=True)
    if done.returncode != 0 or not partial.exists():
        partial.unlink(missing_ok=True)
        raise _failed(project, done.stdout + done.stderr, project.root)
    os.replace(partial, project.output)

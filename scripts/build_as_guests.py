#!/usr/bin/env python3
"""Build the AssemblyScript guest modules (third-party SDK @solo-io/proxy-runtime) with the pinned asc.

    python scripts/build_as_guests.py              # sdk-guest/assemblyscript/assembly/*.ts -> .../build/*.wasm
    python scripts/build_as_guests.py --out DIR    # ... -> DIR/*.wasm

Needs Node.js and npm. The toolchain comes from sdk-guest/assemblyscript/package-lock.json: when
node_modules is missing (or holds other versions than the pinned ones) this runs `npm ci` there first.
Each module is compiled alone:

    node node_modules/assemblyscript/bin/asc assembly/<name>.ts -b OUT/<name>.wasm --use abort=abort_proc_exit -O3

(`--use abort=abort_proc_exit` is what the SDK's README asks for: an abort logs and calls
`wasi_unstable.proc_exit(255)`). Files in assembly/lib/ are shared helpers, not modules.
Standard library only.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AS_DIR = ROOT / "sdk-guest" / "assemblyscript"
SOURCE_DIR = AS_DIR / "assembly"
DEFAULT_OUT = AS_DIR / "build"
# Newer compilers fail with this SDK version; keep both exactly pinned (package.json + package-lock.json).
PINNED = {"assemblyscript": "0.14.13", "@solo-io/proxy-runtime": "0.1.8"}
ASC_FLAGS = ["--use", "abort=abort_proc_exit", "-O3"]
MIN_NODE_MAJOR = 12


class BuildError(Exception):
    pass


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BuildError(
            f"'{name}' was not found on PATH. The AssemblyScript guests need Node.js (>= {MIN_NODE_MAJOR}) "
            f"and npm: install them (e.g. `apt-get install nodejs npm`, or from https://nodejs.org/) and re-run."
        )
    return found


def check_node() -> str:
    node = _tool("node")
    _tool("npm")
    proc = subprocess.run([node, "--version"], capture_output=True, text=True)
    version = proc.stdout.strip().lstrip("v")
    try:
        major = int(version.split(".")[0])
    except ValueError:
        raise BuildError(f"cannot tell the Node.js version from `node --version`: {proc.stdout!r}{proc.stderr!r}")
    if major < MIN_NODE_MAJOR:
        raise BuildError(f"Node.js {version} is too old for assemblyscript {PINNED['assemblyscript']}; "
                         f"need >= {MIN_NODE_MAJOR}")
    return node


def installed_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for package in PINNED:
        manifest = AS_DIR / "node_modules" / package / "package.json"
        try:
            versions[package] = json.loads(manifest.read_text())["version"]
        except (OSError, ValueError, KeyError):
            versions[package] = None
    return versions


def ensure_toolchain() -> None:
    """`npm ci` when node_modules is missing or does not hold the pinned versions."""
    if not (AS_DIR / "package-lock.json").exists():
        raise BuildError(f"{AS_DIR / 'package-lock.json'} is missing; it pins the toolchain (run `npm install` "
                         f"in {AS_DIR} once and commit it)")
    if installed_versions() == PINNED:
        return
    npm = _tool("npm")
    print(f"build_as_guests: installing the pinned toolchain (npm ci in {AS_DIR.relative_to(ROOT)})", flush=True)
    proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=AS_DIR, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"`npm ci` in {AS_DIR} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    found = installed_versions()
    if found != PINNED:
        raise BuildError(f"after `npm ci` the installed versions are {found}, expected {PINNED}; "
                         f"check {AS_DIR / 'package-lock.json'}")


def sources() -> list[Path]:
    found = sorted(SOURCE_DIR.glob("*.ts"))
    if not found:
        raise BuildError(f"no .ts modules in {SOURCE_DIR}")
    return found


def compile_one(node: str, src: Path, out: Path) -> Path:
    """Compile one module, replacing `out` atomically (a functions-folder watcher never sees half a file)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    asc = AS_DIR / "node_modules" / "assemblyscript" / "bin" / "asc"
    cmd = [node, str(asc), str(src.relative_to(AS_DIR)), "-b", str(partial), *ASC_FLAGS]
    proc = subprocess.run(cmd, cwd=AS_DIR, capture_output=True, text=True)
    if proc.returncode != 0 or not partial.exists():
        partial.unlink(missing_ok=True)
        raise BuildError(f"compiling {src.relative_to(ROOT)} failed (exit {proc.returncode}):\n"
                         f"  {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    os.replace(partial, out)
    return out


def build(out_dir: Path, jobs: int) -> list[Path]:
    node = check_node()
    ensure_toolchain()
    modules = sources()
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(compile_one, node, src, out_dir / (src.stem + ".wasm")) for src in modules]
        errors = [str(f.exception()) for f in futures if f.exception() is not None]
    if errors:
        raise BuildError("\n".join(errors))
    return [f.result() for f in futures]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default: {DEFAULT_OUT.relative_to(ROOT)})")
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1),
                        help="parallel compiler processes (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        outputs = build(args.out.resolve(), max(1, args.jobs))
    except BuildError as exc:
        print(f"build_as_guests: error: {exc}", file=sys.stderr)
        return 1
    for out in outputs:
        print(f"built {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Components for the tests: the examples (examples/functions/python, .../javascript) and the test
guests (tests/components_wasm/guests) built by scripts/build_components.py — cached by source hash in
.cache/components/builds, so a session builds each at most once and CI builds them before the tests
(.ci/run) — and compiled into one host module cache shared by every server these tests start
(`COMPILED`), so a deploy deserializes (milliseconds) instead of compiling (tens of seconds)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from host.config import HostConfig
from tests.conftest import EXAMPLES, IN_CI, REPO, make_config

CACHE = REPO / ".cache" / "components"
COMPILED = CACHE / "compiled"  # a host `server.cache_dir`
BUILD = REPO / "scripts" / "build_components.py"
# Builds can take minutes on a cold cache (CI builds them in .ci/run first).
BUILD_TIMEOUT = pytest.mark.timeout(1200)


@dataclass(frozen=True)
class Components:
    examples: Path  # function_1.wasm (JS, id_1), function_2.wasm (Python, id_2), stock.wasm (Python)
    tests: Path  # cw_probe.wasm

    def example(self, stem: str) -> Path:
        return self.examples / f"{stem}.wasm"

    @property
    def probe(self) -> Path:
        return self.tests / "cw_probe.wasm"


def _build(*args: str) -> None:
    """Locally, tests skip when a toolchain is missing (Node.js and npm for JavaScript); in CI they fail."""
    if not (shutil.which("node") and shutil.which("npm")) and not IN_CI:
        pytest.skip("the JavaScript example needs Node.js and npm (scripts/build_components.py)")
    proc = subprocess.run([sys.executable, str(BUILD), *args, "--precompile", str(COMPILED)], cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"scripts/build_components.py {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")


_built: list[Components] = []  # once per session: each test module imports the fixture (pytest defines it per module)


@pytest.fixture(scope="session")
def components() -> Components:
    if not _built:
        built = Components(CACHE / "examples", CACHE / "tests")
        _build("--out", str(built.examples))
        _build("--tests", str(built.tests))
        _built.append(built)
    return _built[0]


def folder_of(tmp_path: Path, *modules: Path, names: dict[Path, str] | None = None) -> Path:
    """A fresh functions folder with copies of `modules` (renamed per `names`)."""
    folder = tmp_path / "functions"
    folder.mkdir(exist_ok=True)
    for module in modules:
        shutil.copyfile(module, folder / (names or {}).get(module, module.name))
    return folder


def config_for(tmp_path: Path, folder: Path | None, **sections: Any) -> HostConfig:
    """`make_config` on the shared compiled cache."""
    server = {"cache_dir": str(COMPILED), **sections.pop("server", {})}
    return make_config(tmp_path, folder, server=server, **sections)


C_FUNCTION_1 = EXAMPLES / "function_1.wasm"
C_FUNCTION_2 = EXAMPLES / "function_2.wasm"
C_HELLO = EXAMPLES / "hello.wasm"

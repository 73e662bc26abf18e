"""`python -m host inspect FILE.wasm` on components: the world, imports (provided or MISSING),
exports with their signatures, the function id, and a verdict found by starting an instance."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from host.functions.components.inspect import inspect_component
from tests.components_wasm.cw_support import BUILD_TIMEOUT, COMPILED, Components, components
from tests.conftest import REPO

pytestmark = BUILD_TIMEOUT
__all__ = ["components"]

ECHO = Path(__file__).resolve().parent / "guests" / "cw_echo.wat"
HANDLE = ("handle func(request: record { method: string, path: string, headers: list<tuple<string, string>>, "
          "body: list<u8> }) -> record { status: u16, headers: list<tuple<string, string>>, body: list<u8> }")


def test_a_javascript_component_that_runs(components: Components) -> None:
    path = components.example("function_1")
    report, runs = inspect_component(path, path.read_bytes(), COMPILED)
    assert runs, report
    assert "world: wasm-faas:function/named-function@0.1.0" in report
    assert "ok      wasm-faas:function/runtime@0.1.0 instance (get-state, set-state" in report
    assert "ok      wasi:cli/stdout@0.2." in report and "MISSING" not in report
    assert HANDLE in report and "function-id func() -> string" in report
    assert "function id: id_1 (reported by wasm-faas:function/identity@0.1.0)" in report
    assert report.endswith("verdict: will run here")


def test_a_python_component_named_by_its_file(components: Components) -> None:
    report, runs = inspect_component(components.probe, components.probe.read_bytes(), COMPILED)
    assert runs, report
    assert "world: wasm-faas:function/function@0.1.0" in report
    assert "function id: the file stem: cw_probe" in report


def inspect(path: Path, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "host", "inspect", str(path)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "XDG_CACHE_HOME": str(home)})


def test_the_cli_describes_a_component(tmp_path: Path) -> None:
    result = inspect(ECHO, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "world: wasm-faas:function/function@0.1.0" in result.stdout
    assert "imports (0):" in result.stdout and HANDLE in result.stdout
    assert result.stdout.rstrip().endswith("verdict: will run here")


@pytest.mark.parametrize(("text", "why"), [
    ('(component (import "wasi:http/outgoing-handler@0.2.0" (instance)))',
     ["MISSING wasi:http/outgoing-handler@0.2.0 instance", "world: not wasm-faas:function@0.1.0",
      "verdict: will NOT run here: imports this host does not provide: wasi:http/outgoing-handler@0.2.0"]),
    ("(component)", ["verdict: will NOT run here: exports no wasm-faas:function/handler@0.1.0#handle"]),
])
def test_the_cli_says_why_a_component_will_not_run(tmp_path: Path, text: str, why: list[str]) -> None:
    path = tmp_path / "nope.wat"
    path.write_text(text)
    result = inspect(path, tmp_path)
    assert result.returncode == 1
    for line in why:
        assert line in result.stdout, result.stdout

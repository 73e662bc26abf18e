"""`python -m host inspect FILE.wasm`: the first thing a user runs on a module built elsewhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import EXAMPLES, REPO


def inspect(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "host", "inspect", str(path)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def test_a_module_that_runs() -> None:
    result = inspect(EXAMPLES / "function_1.wasm")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "proxy-wasm ABI: 0.2.1" in out
    assert "ok      env.proxy_invoke_service (i32, i32, i32, i32, i32, i32, i32, i32) -> i32" in out
    assert "proxy_on_request_body (i32, i32, i32) -> i32" in out
    assert "allocator: proxy_on_memory_allocate" in out and "start function: _initialize" in out
    assert out.rstrip().endswith("verdict: will run here")


def test_a_module_that_does_not(tmp_path: Path) -> None:
    module = tmp_path / "needs_more.wat"
    module.write_text('(module (import "env" "proxy_teleport" (func (param i32) (result i32)))'
                      ' (import "env" "proxy_log" (func (param i64))) (memory (export "memory") 1))')
    result = inspect(module)
    assert result.returncode == 1
    assert "MISSING env.proxy_teleport (i32) -> i32" in result.stdout
    assert "MISSING env.proxy_log (i64) -> ()" in result.stdout  # exists, but with another signature
    assert "proxy-wasm ABI: no marker (treated as 0.2.1)" in result.stdout
    assert "verdict: will NOT run here" in result.stdout and "function id: the file stem: needs_more" in result.stdout


def test_not_a_module(tmp_path: Path) -> None:
    junk = tmp_path / "junk.wasm"
    junk.write_bytes(b"\x7fELF....")
    result = inspect(junk)
    assert result.returncode == 1 and "not a valid WebAssembly module" in result.stdout
    assert inspect(tmp_path / "missing.wasm").returncode == 2

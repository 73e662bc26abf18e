"""Shared by the density tests: many distinct tiny functions, each answering its own id, and an App
started in-process (no listener, no watcher) whose deployments and dispatcher the tests drive."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import wasmtime

from abi import HttpRequest
from host.app import App
from host.config import validate_config

ID_WIDTH = 5
TEMPLATE_ID = "fn-" + "0" * ID_WIDTH
# proxy_get_id reports the id (buffer 8, call data); each request answers it as the body (buffer 1).
_WAT = f"""(module
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "{TEMPLATE_ID}")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_get_id")
    (drop (call $set (i32.const 8) (i32.const 0) (i32.const 0) (i32.const 1024) (i32.const {len(TEMPLATE_ID)}))))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 4096))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $set (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 1024) (i32.const {len(TEMPLATE_ID)})))
    (i32.const 0)))"""
_TEMPLATE: bytes | None = None


def function_id(index: int) -> str:
    return f"fn-{index:0{ID_WIDTH}d}"


def write_functions(folder: Path, first: int, count: int) -> list[Path]:
    """Distinct modules `fn-<first>` .. (the id patched into one compiled template: same length)."""
    global _TEMPLATE
    if _TEMPLATE is None:
        _TEMPLATE = bytes(wasmtime.wat2wasm(_WAT))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(first, first + count):
        path = folder / f"{function_id(index)}.wasm"
        path.write_bytes(_TEMPLATE.replace(TEMPLATE_ID.encode(), function_id(index).encode()))
        paths.append(path)
    return paths


def request() -> HttpRequest:
    return HttpRequest.build("GET", "/", [], authority="localhost")


@contextlib.asynccontextmanager
async def running_app(tmp_path: Path, **function_defaults: Any) -> AsyncIterator[App]:
    """An App over `tmp_path/functions` (empty at start: tests deploy into it)."""
    folder = tmp_path / "functions"
    folder.mkdir(exist_ok=True)
    config = validate_config({
        "functions_dirs": [str(folder)], "function_defaults": function_defaults,
        "server": {"watch": False, "cache_dir": str(tmp_path / "cache"), "grpc": "", "dapr_http": ""}})
    app = App(config)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def answer(app: App, function: str) -> tuple[int, bytes]:
    version = app.dispatcher.find(function)
    response = app.dispatcher.try_now(version, request()) or await app.dispatcher.call(version, request())
    return response.status, response.body

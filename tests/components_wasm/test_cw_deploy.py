"""Deploying components through the same deployer, cache, watcher and admin API as modules: the
header decides the kind; a component that cannot run is refused with the reason while the host keeps
serving; a reload under load (component -> component -> module -> component) loses no request; a
restart deploys from the compiled cache."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import wasmtime

from abi.engine import WasmEngine
from host.functions.cache import ModuleCache
from host.functions.components import is_component
from tests.components_wasm.cw_support import BUILD_TIMEOUT, C_HELLO, Components, components, config_for, folder_of

pytestmark = BUILD_TIMEOUT
__all__ = ["components"]

GUESTS = Path(__file__).resolve().parent / "guests"
ECHO = GUESTS / "cw_echo.wat"

MODULE_WAT = r"""
(module
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "module")
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 4096))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $set (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 16) (i32.const 6)))
    (i32.const 0)))
"""

# Components that must be refused, each with the words the reason must hold.
REFUSED = {
    "empty": ("(component)", "exports no wasm-faas:function/handler@0.1.0#handle"),
    "wants_http": ('(component (import "wasi:http/outgoing-handler@0.2.0" (instance)))',
                   "imports this host does not provide: wasi:http/outgoing-handler@0.2.0"),
    "wrong_shape": ("""(component
  (core module $m (func (export "f") (param i32) (result i32) local.get 0))
  (core instance $i (instantiate $m))
  (func $f (param "x" u32) (result u32) (canon lift (core func $i "f")))
  (instance $h (export "handle" (func $f)))
  (export "wasm-faas:function/handler@0.1.0" (instance $h)))""",
                    "wasm-faas:function/handler@0.1.0#handle is func(u32) -> u32, the world declares func(record"),
}


def echo_component() -> bytes:
    return bytes(wasmtime.wat2wasm(ECHO.read_text()))


def write_by_rename(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def test_the_header_tells_components_from_modules(components: Components) -> None:
    assert is_component(components.probe.read_bytes()[:8])
    assert is_component(echo_component())
    assert not is_component(C_HELLO.read_bytes())
    assert not is_component(bytes(wasmtime.wat2wasm(MODULE_WAT)))
    assert not is_component(b"\0asm") and not is_component(b"\x7fELF\x02\x01\x01\x00")


def test_compiled_components_are_cached_by_content(tmp_path: Path) -> None:
    engine = WasmEngine()
    wasm = echo_component()
    first = ModuleCache(engine, tmp_path)
    first.load_component(wasm)
    first.load_component(wasm)
    assert first.stats() == {"compiled": 1, "disk_hits": 0, "memory_hits": 1}
    assert [p.name.endswith(".component.cwasm") for p in tmp_path.iterdir()] == [True]
    restarted = ModuleCache(engine, tmp_path)
    restarted.load_component(wasm)
    assert restarted.stats() == {"compiled": 0, "disk_hits": 1, "memory_hits": 0}
    with pytest.raises(wasmtime.WasmtimeError):
        restarted.load_component(wasm[:-3])


async def test_a_component_deploys_from_a_wat_file_and_is_listed(serve, tmp_path: Path) -> None:
    folder = folder_of(tmp_path, ECHO, names={ECHO: "echo.wat"})
    client = await serve(config_for(tmp_path, folder))
    status, _, body = await client.call("echo", "/", method="POST", data=b"ping")
    assert (status, body) == (200, b"ping")
    status, listing = await client.admin_get("/functions")
    assert status == 200
    [echo] = [f for f in listing["functions"] if f["id"] == "echo"]
    assert echo["abi_version"] == "wasm-faas:function@0.1.0 (component)"
    assert echo["execution"]["inline_eligible"] is False  # components always run in guest threads


@pytest.mark.parametrize("name", sorted(REFUSED))
async def test_a_component_that_cannot_run_is_refused_with_the_reason(serve, tmp_path: Path, name: str) -> None:
    text, reason = REFUSED[name]
    folder = folder_of(tmp_path, C_HELLO)
    (folder / f"{name}.wat").write_text(text)
    client = await serve(config_for(tmp_path, folder))
    assert (await client.call("hello"))[0] == 200  # the rest of the host serves
    status, readiness = await client.admin_get("/actuator/health/readiness")
    assert status == 503
    failure = readiness["details"]["failed"][name]
    assert reason in failure, failure
    assert failure.startswith(f"{name}.wat: ")


async def test_a_component_cannot_be_a_filter_nor_have_filters(serve, tmp_path: Path) -> None:
    (tmp_path / "echo.wat").write_text(ECHO.read_text())
    functions = {"guarded": {"path": str(tmp_path / "echo.wat"), "filters": [{"path": str(C_HELLO)}]},
                 "filtered": {"path": str(C_HELLO), "filters": [{"path": str(tmp_path / "echo.wat")}]}}
    client = await serve(config_for(tmp_path, None, functions=functions))
    _, readiness = await client.admin_get("/actuator/health/readiness")
    failed = sorted(readiness["details"]["failed"].values())
    assert failed == ["echo.wat: filters in front of a component function are not supported",
                      "filter of filtered: echo.wat: a component cannot be a filter (filters are proxy-wasm modules)"]


async def test_reloading_under_load_between_kinds_loses_no_request(serve, tmp_path: Path,
                                                                  components: Components) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    target = folder / "flip.wasm"
    target.write_bytes(components.probe.read_bytes())  # a Python component, id = the file stem
    client = await serve(config_for(tmp_path, folder, function_defaults={"instance_num": 2},
                                    server={"watch_debounce_ms": 50}))
    record = client.server.app.deployments.records[target.resolve()]
    answers: list[tuple[int, bytes]] = []
    stop = asyncio.Event()

    async def keep_calling() -> None:
        while not stop.is_set():
            status, _, body = await client.call("flip", "/")
            answers.append((status, body))

    callers = [asyncio.create_task(keep_calling()) for _ in range(4)]
    versions = [echo_component(), bytes(wasmtime.wat2wasm(MODULE_WAT)), components.probe.read_bytes()] * 2
    expected = {(200, b"probe"), (200, b"hello from wat"), (200, b"module")}
    seen_per_version = []
    for data in versions:
        before, count = record.reloads, len(answers)
        write_by_rename(target, data)

        await _until(lambda before=before, count=count: record.reloads > before and len(answers) > count + 10)
        seen_per_version.append({body for _, body in answers[count:]})
    stop.set()
    await asyncio.gather(*callers)
    assert [a for a in answers if a not in expected] == []
    assert {body for _, body in answers} == {body for _, body in expected}
    assert record.reloads == len(versions) and record.last_outcome == "deployed"
    assert all(seen for seen in seen_per_version)


async def test_a_restart_deploys_components_from_the_compiled_cache(serve, tmp_path: Path,
                                                                    components: Components) -> None:
    folder = folder_of(tmp_path, components.probe, components.example("function_1"))
    client = await serve(config_for(tmp_path, folder))
    _, listing = await client.admin_get("/functions")
    assert listing["module_cache"]["compiled"] == 0  # both came from disk (built and compiled once)
    assert listing["module_cache"]["disk_hits"] >= 2
    assert (await client.call("cw_probe", "/"))[2] == b"probe"


async def _until(condition, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_the_admin_api_installs_and_removes_a_component(serve, tmp_path: Path) -> None:
    folder = folder_of(tmp_path, C_HELLO)
    client = await serve(config_for(tmp_path, folder, server={"admin_token": "secret", "watch_debounce_ms": 50}))
    auth = {"Authorization": "Bearer secret"}
    async with client.session.put(f"{client.admin}/functions/echo", data=echo_component(), headers=auth) as answer:
        assert answer.status == 201, await answer.text()
        [version] = (await answer.json())["versions"]
    assert version["abi_version"] == "wasm-faas:function@0.1.0 (component)"
    assert (await client.call("echo", "/", method="POST", data=b"installed"))[2] == b"installed"
    async with client.session.delete(f"{client.admin}/functions/echo", headers=auth) as answer:
        assert answer.status == 200, await answer.text()
    assert (await client.call("echo"))[0] == 404
    assert not (folder / "echo.wasm").exists()

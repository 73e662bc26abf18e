"""Deploying by dropping files: overwrite under load, half-written and corrupt files, delete and
re-create, per-function settings files, and a restart that reuses the compiled-module cache."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import wasmtime

from tests.conftest import EXAMPLES, functions_dir, make_config

VERSION_WAT = r"""
(module
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "$TEXT")
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 4096))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $set (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 16) (i32.const $LEN)))
    (i32.const 0)))
"""


def version_module(text: str) -> bytes:
    return wasmtime.wat2wasm(VERSION_WAT.replace("$TEXT", text).replace("$LEN", str(len(text))))


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def write_in_place(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)


def write_by_rename(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


async def test_overwriting_under_load_drops_no_request(serve, tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    versions = [version_module("version-one"), version_module("version-two")]
    module = folder / "flip.wasm"
    module.write_bytes(versions[0])
    client = await serve(make_config(tmp_path, folder, function_defaults={"instance_num": 2},
                                     server={"watch_debounce_ms": 50}))
    answers: list[tuple[int, bytes]] = []
    stop = asyncio.Event()

    async def keep_calling() -> None:
        while not stop.is_set():
            status, _, body = await client.call("flip")
            answers.append((status, body))

    clients = [asyncio.create_task(keep_calling()) for _ in range(4)]
    record = client.server.app.deployments.records[module.resolve()]
    for i in range(20):
        before = record.reloads
        (write_in_place if i % 2 else write_by_rename)(module, versions[(i + 1) % 2])

        async def reloaded() -> bool:
            return record.reloads > before
        await wait_for(reloaded)
    stop.set()
    await asyncio.gather(*clients)
    assert len(answers) > 100
    bad = [a for a in answers if a not in ((200, b"version-one"), (200, b"version-two"))]
    assert bad == []
    assert {body for _, body in answers} == {b"version-one", b"version-two"}
    assert record.reloads == 20 and record.last_outcome == "deployed"


async def test_half_written_file_is_not_loaded_until_complete(serve, tmp_path: Path) -> None:
    folder = functions_dir(tmp_path)
    client = await serve(make_config(tmp_path, folder, server={"watch_debounce_ms": 300}))
    data = (EXAMPLES / "hello.wasm").read_bytes()
    target = folder / "hello.wasm"
    chunk = len(data) // 5 + 1
    with open(target, "wb") as handle:  # a slow writer that keeps the file open between chunks
        for start in range(0, len(data), chunk):
            handle.write(data[start:start + chunk])
            handle.flush()
            await asyncio.sleep(0.1)
            assert (await client.call("hello"))[0] == 404
            assert client.server.app.deployments.records.get(target.resolve()) is None  # not even attempted

    async def served() -> bool:
        return (await client.call("hello"))[0] == 200
    await wait_for(served)
    assert client.server.app.deployments.records[target.resolve()].last_outcome == "deployed"


async def test_corrupt_file_is_rejected_and_the_old_version_keeps_answering(serve, tmp_path: Path, caplog) -> None:
    folder = functions_dir(tmp_path, EXAMPLES / "hello.wasm")
    client = await serve(make_config(tmp_path, folder, server={"watch_debounce_ms": 50}))
    target = folder / "hello.wasm"
    record = client.server.app.deployments.records[target.resolve()]
    good = target.read_bytes()
    write_by_rename(target, good[: len(good) // 2])  # truncated: compiles to nothing

    async def rejected() -> bool:
        return record.last_outcome == "rejected"
    await wait_for(rejected)
    status, _, body = await client.call("hello")
    assert status == 200 and body.startswith(b"hello method=GET")
    status, info = await client.admin_get("/functions/hello")
    reload = info["versions"][0]["last_reload"]
    assert reload["outcome"] == "rejected" and "invalid module" in reload["error"]
    assert "hello.wasm" in caplog.text and "rejected" in caplog.text
    write_by_rename(target, b"\x7fELF not wasm")

    async def rejected_again() -> bool:
        return "bad magic" in (record.last_error or "")
    await wait_for(rejected_again)
    assert (await client.call("hello"))[0] == 200


async def test_delete_then_recreate(serve, tmp_path: Path, c_guests: Path) -> None:
    folder = functions_dir(tmp_path, c_guests / "slow.wasm")
    client = await serve(make_config(tmp_path, folder, server={"watch_debounce_ms": 50}))
    in_flight = asyncio.create_task(client.call("slow", headers={"x-sleep-ms": "400"}))
    await asyncio.sleep(0.1)
    (folder / "slow.wasm").unlink()

    async def gone() -> bool:
        return (await client.call("slow", headers={"x-sleep-ms": "0"}))[0] == 404
    await wait_for(gone)
    assert await in_flight == (200, in_flight.result()[1], b"slept 400\n")  # finished on the old version
    shutil.copy(c_guests / "slow.wasm", folder / "slow.wasm")

    async def back() -> bool:
        return (await client.call("slow", headers={"x-sleep-ms": "0"}))[0] == 200
    await wait_for(back)


async def test_settings_file_beside_the_module(serve, tmp_path: Path) -> None:
    folder = functions_dir(tmp_path, EXAMPLES / "hello.wasm")
    (folder / "hello.toml").write_text("instance_num = 3\n")
    client = await serve(make_config(tmp_path, folder, server={"watch_debounce_ms": 50}))
    app = client.server.app
    assert app.router.pick("hello").pool.size == 3
    (folder / "hello.toml").write_text("instance_num = 1\n")

    async def resized() -> bool:
        return app.router.pick("hello").pool.size == 1
    await wait_for(resized)
    (folder / "hello.toml").write_text('instance_num = "one"\n')

    async def refused() -> bool:
        return "instance_num" in (app.deployments.records[(folder / "hello.wasm").resolve()].last_error or "")
    await wait_for(refused)
    assert (await client.call("hello"))[0] == 200


async def test_restart_with_a_warm_cache_does_not_compile(serve, tmp_path: Path) -> None:
    config = make_config(tmp_path, EXAMPLES)
    first = await serve(config)
    modules = len(list(EXAMPLES.glob("*.wasm")))
    assert first.server.app.cache.compiled == modules
    second = await serve(config)
    cache = second.server.app.cache
    assert cache.compiled == 0 and cache.disk_hits == modules
    assert (await second.call("id_1", "/?name=book1"))[2] == b"There are 100 inventories for book1."

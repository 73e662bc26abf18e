"""The functions-folder watcher (host/functions/watcher.py) against a real host on port 0 and real
files: a file closed after writing, or renamed into the folder, is loaded at once — not after the
quiet period (the debounce here is a minute, longer than any wait in these tests) — with its final
bytes and exactly once; a slow writer that keeps the file open is never loaded half-written, however
long it pauses; a reader holding the file open does not hold back a writer's close."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import wasmtime

from tests.conftest import make_config

# A function answering with its own text: the body tells which bytes were loaded.
TEXT_WAT = r"""
(module
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "$TEXT")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 4096))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $set (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 16) (i32.const $LEN)))
    (i32.const 0)))
"""

NO_QUIET_LOAD = {"watch_debounce_ms": 60_000}  # a load seen in these tests came from a close or a rename
SHORT_QUIET = {"watch_debounce_ms": 50}


def module(text: str) -> bytes:
    return wasmtime.wat2wasm(TEXT_WAT.replace("$TEXT", text).replace("$LEN", str(len(text))))


def module_with_id(text: str) -> bytes:
    """Like module(), reporting `text` as its function id (proxy_get_id) whatever its file is called."""
    get_id = (f'(func (export "proxy_get_id") (drop (call $set (i32.const 8) (i32.const 0) (i32.const {len(text)}) '
              f'(i32.const 16) (i32.const {len(text)}))))')
    return wasmtime.wat2wasm(TEXT_WAT.replace("$TEXT", text).replace("$LEN", str(len(text)))
                             .replace('(func (export "proxy_abi_version_0_2_1"))',
                                      '(func (export "proxy_abi_version_0_2_1")) ' + get_id))


async def answer(client, function_id: str) -> tuple[int, bytes]:
    status, _, body = await client.call(function_id)
    return status, body


async def wait_answer(client, function_id: str, body: bytes, timeout: float = 5.0) -> None:
    last: list[tuple[int, bytes]] = []

    async def poll() -> bool:
        last[:] = [await answer(client, function_id)]
        return last[0] == (200, body)

    deadline = asyncio.get_running_loop().time() + timeout
    while not await poll():
        assert asyncio.get_running_loop().time() < deadline, f"wanted 200 {body!r}, last answer {last}"
        await asyncio.sleep(0.005)


def record_of(client, path: Path):
    return client.server.app.deployments.records.get(path.parent.resolve() / path.name)


async def quiet_for(seconds: float) -> None:
    """Let any late event (and a short debounce) run its course before counting reloads."""
    await asyncio.sleep(seconds)


async def test_truncate_write_close_loads_at_once_with_the_final_bytes_and_once(serve, tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    target = folder / "edit.wasm"
    target.write_bytes(module("first"))
    client = await serve(make_config(tmp_path, folder, server=NO_QUIET_LOAD))
    assert await answer(client, "edit") == (200, b"first")
    record = record_of(client, target)
    data = module("second, a longer text")
    with open(target, "wb") as handle:  # truncate, write in pieces, close: an editor saving in place
        for start in range(0, len(data), 16):
            handle.write(data[start:start + 16])
            handle.flush()
    await wait_answer(client, "edit", b"second, a longer text")
    await quiet_for(0.3)
    assert record_of(client, target) is record and record.reloads == 1
    assert record.last_outcome == "deployed"


async def test_slow_writer_is_not_loaded_until_it_closes(serve, tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    target = folder / "slow.wasm"
    client = await serve(make_config(tmp_path, folder, server=SHORT_QUIET))
    data = module("written slowly")
    pieces = [data[start:start + len(data) // 4 + 1] for start in range(0, len(data), len(data) // 4 + 1)]
    with open(target, "wb") as handle:
        for piece in pieces:
            handle.write(piece)
            handle.flush()
            await asyncio.sleep(0.2)  # four times the quiet period: the file is quiet, but still open
            assert record_of(client, target) is None, "loaded while the writer still had it open"
            assert (await answer(client, "slow"))[0] == 404
    await wait_answer(client, "slow", b"written slowly")
    record = record_of(client, target)
    await quiet_for(0.3)
    assert record.reloads == 0 and record.last_outcome == "deployed" and record.last_error is None


async def test_rename_into_place_loads_once(serve, tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    target = folder / "moved.wasm"
    target.write_bytes(module("before"))
    client = await serve(make_config(tmp_path, folder, server=NO_QUIET_LOAD))
    record = record_of(client, target)
    partial = folder / "moved.wasm.partial"  # not a module name: ignored until renamed
    partial.write_bytes(module("after the rename"))
    await quiet_for(0.1)
    assert await answer(client, "moved") == (200, b"before")
    os.replace(partial, target)
    await wait_answer(client, "moved", b"after the rename")
    await quiet_for(0.3)
    assert record_of(client, target) is record and record.reloads == 1


async def test_rename_from_outside_the_folder_loads_at_once(serve, tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    outside = tmp_path / "staging"
    outside.mkdir()
    client = await serve(make_config(tmp_path, folder, server=NO_QUIET_LOAD))
    staged = outside / "arrived.wasm"
    staged.write_bytes(module("from elsewhere"))
    os.replace(staged, folder / "arrived.wasm")  # inotify: IN_MOVED_TO with no IN_MOVED_FROM in the folder
    await wait_answer(client, "arrived", b"from elsewhere")
    record = record_of(client, folder / "arrived.wasm")
    await quiet_for(0.3)
    assert record.reloads == 0

    os.replace(folder / "arrived.wasm", outside / "arrived.wasm")  # renamed away: removed

    async def gone() -> bool:
        return (await answer(client, "arrived"))[0] == 404
    deadline = asyncio.get_running_loop().time() + 5
    while not await gone():
        assert asyncio.get_running_loop().time() < deadline, "still served after being moved out"
        await asyncio.sleep(0.02)
    assert record_of(client, folder / "arrived.wasm") is None


async def test_a_symbolic_link_created_in_the_folder_loads_at_once(serve, tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    client = await serve(make_config(tmp_path, folder, server=NO_QUIET_LOAD))
    (folder / "linked.bin").write_bytes(module("through a link"))  # not a module name itself
    (folder / "linked.wasm").symlink_to("linked.bin")
    await wait_answer(client, "linked", b"through a link")


async def test_a_reader_holding_the_file_does_not_hold_back_a_writers_close(serve, tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    target = folder / "read.wasm"
    target.write_bytes(module("old"))
    client = await serve(make_config(tmp_path, folder, server=SHORT_QUIET))
    record = record_of(client, target)
    with open(target, "rb") as reader:
        reader.read(4)
        with open(target, "r+b") as writer:  # rewrite without truncating first, then close
            writer.write(module("new"))
            writer.truncate()
        await wait_answer(client, "read", b"new")
    await quiet_for(0.3)
    assert record.reloads == 1


async def test_an_editor_moving_the_old_file_aside_ends_serving_the_new_bytes(serve, tmp_path: Path) -> None:
    """An editor that moves the old file aside and writes the new one: the function ends up serving
    the new bytes from the same name (whether or not it was briefly removed in between)."""
    folder = tmp_path / "functions"
    folder.mkdir()
    target = folder / "vim.wasm"
    target.write_bytes(module("original"))
    client = await serve(make_config(tmp_path, folder, server=SHORT_QUIET))
    os.replace(target, folder / "vim.wasm~")
    with open(target, "wb") as handle:
        handle.write(module("saved"))
    await wait_answer(client, "vim", b"saved")
    await quiet_for(0.3)
    assert await answer(client, "vim") == (200, b"saved")
    assert [r.path.name for r in client.server.app.deployments.records.values()] == ["vim.wasm"]


async def test_renaming_a_module_to_another_module_name_keeps_its_function(serve, tmp_path: Path) -> None:
    """`mv a.wasm b.wasm`: the old name gives its function id up before the new name claims it, so
    the new file is not refused as a duplicate (server.duplicate_ids = "refuse", the default)."""
    folder = tmp_path / "functions"
    folder.mkdir()
    (folder / "first.wasm").write_bytes(module_with_id("renamed"))
    client = await serve(make_config(tmp_path, folder, server=NO_QUIET_LOAD))
    (folder / "first.wasm").rename(folder / "second.wasm")
    await quiet_for(0.3)
    records = client.server.app.deployments.records
    assert [record.path.name for record in records.values()] == ["second.wasm"]
    record = records[folder.resolve() / "second.wasm"]
    assert record.last_outcome == "deployed", record.last_error
    assert await answer(client, "renamed") == (200, b"renamed")

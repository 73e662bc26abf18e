"""What functions share so that each costs little (issue 16): one compiled module for identical bytes
(also long after it left the in-memory LRU, and when many deploys load it at once), two memory
mappings per module loaded from the disk cache, and one export-signature table per module that
its later instances (a scale from zero) reuse."""

from __future__ import annotations

import asyncio
import gc
import threading
from pathlib import Path

import pytest
import wasmtime

from abi.engine import WasmEngine, available_backends
from abi.engine._maps import count_maps
from host.functions import cache as cache_module
from host.functions.cache import ModuleCache
from tests.density.density_support import answer, running_app

_ADD = """(module
  (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
  (func (export "zero") (result i32) (i32.const {marker})))"""


def _wasm(marker: int) -> bytes:
    return bytes(wasmtime.wat2wasm(_ADD.format(marker=marker)))


@pytest.fixture(scope="module")
def engine() -> WasmEngine:
    return WasmEngine()


def test_identical_bytes_share_the_module_in_use_after_it_left_the_lru(engine: WasmEngine, tmp_path: Path) -> None:
    cache = ModuleCache(engine, tmp_path)
    wasm = _wasm(0)
    first = cache.load(wasm)
    for marker in range(1, cache_module.MEMORY_ENTRIES + 10):  # pushes `first` out of the LRU
        cache.load(_wasm(marker))
    assert cache.load(wasm) is first  # still alive (a pool would hold it): the same compiled code
    assert cache.stats()["disk_hits"] == 0
    del first
    gc.collect()
    for marker in range(100, 100 + cache_module.MEMORY_ENTRIES + 10):
        cache.load(_wasm(marker))
    gc.collect()
    cache.load(wasm)  # nothing holds it any more: read back from the disk cache
    assert cache.stats()["disk_hits"] == 1


def test_concurrent_loads_of_one_new_module_compile_it_once(engine: WasmEngine, tmp_path: Path) -> None:
    cache = ModuleCache(engine, tmp_path)
    wasm = _wasm(7)
    loaded: list[wasmtime.Module] = []
    start = threading.Barrier(8)

    def load() -> None:
        start.wait()
        loaded.append(cache.load(wasm))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loaded) == 8 and all(module is loaded[0] for module in loaded)
    assert cache.stats()["compiled"] == 1 and cache.stats()["memory_hits"] == 7


def test_a_failed_load_fails_every_waiter_and_a_later_load_tries_again(engine: WasmEngine, tmp_path: Path) -> None:
    cache = ModuleCache(engine, tmp_path)
    with pytest.raises(wasmtime.WasmtimeError):
        cache.load(b"\0asm\x01\0\0\0garbage")
    with pytest.raises(wasmtime.WasmtimeError):  # not stuck waiting for the first attempt
        cache.load(b"\0asm\x01\0\0\0garbage")


def test_a_module_from_the_disk_cache_holds_two_memory_mappings(engine: WasmEngine, tmp_path: Path) -> None:
    modules = [_wasm(1000 + i) for i in range(60)]
    writer = ModuleCache(engine, tmp_path)
    for wasm in modules:
        writer.load(wasm)
    del writer
    gc.collect()
    reader = ModuleCache(engine, tmp_path)
    before = count_maps()
    assert before is not None
    held = [reader.load(wasm) for wasm in modules]
    after = count_maps()
    assert after is not None and reader.stats()["disk_hits"] == 60
    # Code (executable) and its read-only data; a file mapping of the artifact would be a third.
    assert (after - before) / len(held) <= 2.2


@pytest.mark.parametrize("backend", available_backends())
def test_later_instances_of_a_module_reuse_its_export_signatures(backend: str) -> None:
    engine = WasmEngine(backend)
    linker = engine.linker([])
    module = engine.compile(_wasm(42))
    first = engine.instantiate(linker, module, None)
    add = first.func("add")
    assert add is not None and add(2, 3) == 5
    assert first.func("proxy_on_request_body") is None and not first.has_export("proxy_on_request_body")
    table = linker.export_signatures(module)
    assert table["add"] is not None and table["proxy_on_request_body"] is None
    second = engine.instantiate(linker, module, None)
    assert second._signatures is table
    again = second.func("add")
    zero = second.func("zero")
    assert again is not None and again(40, 2) == 42 and zero is not None and zero() == 42
    assert second.func("proxy_on_request_body") is None and second.has_export("add")


# Without proxy_get_id: each copy is the function named by its file stem; all answer "same".
_SAME = """(module
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "same")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 4096))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $set (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 1024) (i32.const 4)))
    (i32.const 0)))"""


async def test_a_folder_of_identical_modules_compiles_and_maps_one(tmp_path: Path) -> None:
    async with running_app(tmp_path) as app:
        folder = tmp_path / "functions"
        data = bytes(wasmtime.wat2wasm(_SAME))
        copies = [folder / f"copy-{index}.wasm" for index in range(200)]  # fixed costs (threads) thinned out
        for copy in copies:
            copy.write_bytes(data)
        gc.collect()
        before = count_maps()
        await asyncio.gather(*(app.deployments.deploy(copy) for copy in copies))  # at once, as at start-up
        after = count_maps()
        assert app.cache.stats()["compiled"] == 1 and app.cache.stats()["memory_hits"] == 199
        assert sorted(app.router.ids()) == sorted(copy.stem for copy in copies)
        assert len({id(v.pool) for v in app.router.versions()}) == 200
        assert before is not None and after is not None
        assert (after - before) / 200 <= 3  # each holds its instance (2 mappings), not a module as well
        assert await answer(app, "copy-7") == (200, b"same")

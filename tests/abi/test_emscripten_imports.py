"""Modules built by the official C++ SDK's recipe (`em++ -sSTANDALONE_WASM -sALLOW_MEMORY_GROWTH=1
--no-entry -sEXPORTED_FUNCTIONS=_malloc`) run here: beside proxy-wasm's imports they need only the
two `env` functions the reference host stubs (pthread_equal, emscripten_notify_memory_growth) and
WASI. emscripten is not installed here, so the guest is a hand-written module with the same shape:
a WASI reactor (`_initialize`), `malloc` as its only allocator, growable memory whose growth it
announces, and the standalone runtime's usual WASI imports.
"""

from __future__ import annotations

import logging
from pathlib import Path

import wasmtime

from abi import WasmEngine, all_host_functions
from tests.conftest import ENGINE_BACKENDS, functions_dir, make_config

PAGE = 65536
GROWN_AT = 2 * PAGE + 16  # inside the page proxy_on_request_headers adds (memory starts with 2)

EMSCRIPTEN_STYLE = f"""(module
  (import "env" "emscripten_notify_memory_growth" (func $notify (param i32)))
  (import "env" "pthread_equal" (func $pthread_equal (param i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_seek" (func $fd_seek (param i32 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fd_fdstat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 4096))
  (global $started (mut i32) (i32.const 0))
  (data (i32.const 64) "hello from emscripten\\n")
  (data (i32.const 96) "\\40\\00\\00\\00\\16\\00\\00\\00")  ;; an iovec: 22 bytes at 64
  (data (i32.const 128) "configured: ")
  ;; emscripten's sbrk: bump allocation, growing memory (and announcing it) when needed
  (func $malloc (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $p) (local.get $n)) (i32.const 15)) (i32.const -16)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const {PAGE})))
      (then
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then (unreachable)))
        (call $notify (i32.const 0))))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "_initialize")
    ;; what the standalone runtime does at start-up: environment, clock, stdio
    (if (call $environ_sizes_get (i32.const 0) (i32.const 4)) (then (unreachable)))
    (if (call $environ_get (i32.const 8) (i32.const 12)) (then (unreachable)))
    (if (call $clock_time_get (i32.const 0) (i64.const 1000) (i32.const 16)) (then (unreachable)))
    (if (call $fd_fdstat_get (i32.const 1) (i32.const 32)) (then (unreachable)))
    (global.set $started (i32.const 1)))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (global.get $started))
  (func (export "proxy_on_configure") (param $ctx i32) (param $size i32) (result i32)
    ;; the SDK copies the plugin configuration through malloc, then logs it
    (if (call $get_buffer (i32.const 7) (i32.const 0) (local.get $size) (i32.const 40) (i32.const 44))
      (then (return (i32.const 0))))
    (drop (call $log (i32.const 2) (i32.load (i32.const 40)) (i32.load (i32.const 44))))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (drop (call $fd_write (i32.const 1) (i32.const 96) (i32.const 1) (i32.const 48)))
    ;; grow the heap past the initial two pages, then answer from the new page
    (global.set $heap (i32.mul (memory.size) (i32.const {PAGE})))
    (drop (call $malloc (i32.const 64)))
    (i32.store8 (i32.const {GROWN_AT}) (i32.add (i32.const 48) (call $pthread_equal (i32.const 5) (i32.const 5))))
    (i32.store8 (i32.const {GROWN_AT + 1}) (i32.add (i32.const 48) (call $pthread_equal (i32.const 5) (i32.const 6))))
    (drop (call $set_buffer (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 128) (i32.const 12)))
    (drop (call $set_buffer (i32.const 1) (i32.const -1) (i32.const 0) (i32.load (i32.const 40))
                            (i32.load (i32.const 44))))
    (drop (call $set_buffer (i32.const 1) (i32.const -1) (i32.const 0) (i32.const {GROWN_AT}) (i32.const 2)))
    (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32))
  (func (export "unused_exit") (call $proc_exit (i32.const 0)) (drop (call $fd_close (i32.const 1)))
    (drop (call $fd_seek (i32.const 1) (i64.const 0) (i32.const 0) (i32.const 0)))))
"""


def test_the_host_provides_exactly_the_reference_hosts_emscripten_stubs() -> None:
    """proxy-wasm-cpp-host registers these two non-proxy `env` functions (src/wasm.cc); so does this host."""
    extra = {f.name for f in all_host_functions() if f.module == "env" and not f.name.startswith("proxy_")}
    assert extra == {"pthread_equal", "emscripten_notify_memory_growth"}
    engine = WasmEngine(ENGINE_BACKENDS[0])
    module = engine.compile(wasmtime.wat2wasm(EMSCRIPTEN_STYLE))
    linker = engine.linker(all_host_functions())
    assert linker.missing_imports(module) == []
    assert linker.only_pure_imports(module)  # nothing here blocks or reaches outside the instance


async def test_an_emscripten_style_module_deploys_and_serves(serve, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="wasm.guest")
    folder = functions_dir(tmp_path)
    (folder / "emcc.wat").write_text(EMSCRIPTEN_STYLE)
    (folder / "emcc.toml").write_text('plugin_config = "cpp-sdk"\n')
    client = await serve(make_config(tmp_path, folder, function_defaults={"instance_num": 1}))
    _, listing = await client.admin_get("/functions")
    assert listing.get("failed", {}) == {}, listing
    for _ in range(2):  # the second request grows memory again: the host keeps up with it
        status, _, body = await client.call("emcc")
        assert (status, body) == (200, b"configured: cpp-sdk10")  # pthread_equal: 5 == 5, 5 != 6
    assert "[emcc] cpp-sdk" in caplog.text  # proxy_on_configure read its configuration through malloc
    assert "[emcc] hello from emscripten" in caplog.text  # stdout reaches the log

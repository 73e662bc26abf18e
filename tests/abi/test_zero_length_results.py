"""An empty result is handed back as address 0 and length 0, without calling the guest's allocator.

The Go and TinyGo SDK allocators panic on a request for 0 bytes, so a host that allocates for an
empty plugin configuration, VM configuration, shared value, header value or body traps every such
module at start-up or in its first request. The guests here have exactly that allocator (it traps on
size 0). Before each read the guest fills the out-pointers with garbage, then records the status and
the (address, length) the host wrote: every empty read must be (Ok, 0, 0). Each group of reads has a
non-empty control through the same allocator, so the allocator works and is reached otherwise.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import wasmtime
from aiohttp import web

from abi import GuestTrap, HostServices, PluginSettings, ProxyWasmVM, WasmEngine, all_host_functions
from tests.conftest import ENGINE_BACKENDS, functions_dir, make_config
from tests.guest_wat import RET, RET_PTR, RET_SIZE, U32_A, U32_B, Results, WatGuest, serialize_map, write_guest

OK = 0
EMPTY = (OK, 0, 0)
GARBAGE_PTR, GARBAGE_SIZE = 0xDEAD, 77

# $prime fills the out-pointers with garbage; $emit_raw records the status and what the host wrote.
RAW_HELPERS = f"""  (func $prime
    (i32.store (i32.const {RET_PTR}) (i32.const {GARBAGE_PTR}))
    (i32.store (i32.const {RET_SIZE}) (i32.const {GARBAGE_SIZE})))
  (func $emit_raw (param $status i32)
    (call $emit (local.get $status))
    (call $emit (i32.load (i32.const {RET_PTR})))
    (call $emit (i32.load (i32.const {RET_SIZE}))))"""


def go_style_guest() -> WatGuest:
    g = WatGuest(zero_alloc_traps=True)
    g.extra.append(RAW_HELPERS)
    return g


def raw(call: str) -> str:
    return f"(call $prime) (call $emit_raw {call})"


def raw_records(r: Results, count: int) -> list[tuple[int, int, int]]:
    return [(r.u32(), r.u32(), r.u32()) for _ in range(count)]


def start_up_reader() -> tuple[str, int, int]:
    """Reads the (empty) VM configuration in proxy_on_vm_start and the (empty) plugin configuration in
    proxy_on_configure, both as the SDKs do (max_size = the size the host announced) and with a large
    max_size, plus ABI 0.1.0's proxy_get_configuration; then, per request, empty values of every kind."""
    g = go_style_guest()
    queue_name = f"zl-{uuid.uuid4().hex}"
    shared_key = f"zl-{uuid.uuid4().hex}"
    vm_start = f"""
    {raw(g.call("proxy_get_buffer_bytes", 6, 0, "(local.get $size)", RET))}
    {raw(g.call("proxy_get_buffer_bytes", 6, 0, 1000, RET))}
    (i32.const 1)"""
    configure = f"""
    {raw(g.call("proxy_get_buffer_bytes", 7, 0, "(local.get $size)", RET))}
    {raw(g.call("proxy_get_buffer_bytes", 7, 0, 1000, RET))}
    {raw(g.call("proxy_get_configuration", RET))}
    (i32.const 1)"""
    start_up_reads = 5
    request = f"""
    {raw(g.call("proxy_get_header_map_value", 0, g.s("x-empty"), RET))}
    {raw(g.call("proxy_get_buffer_bytes", 0, 0, 1000, RET))}
    {raw(g.call("proxy_get_buffer_bytes", 1, 0, 1000, RET))}
    {raw(g.call("proxy_get_buffer_bytes", 8, 0, 1000, RET))}
    {raw(g.call("proxy_get_property", g.s("request" + chr(0) + "query"), RET))}
    {raw(g.call("proxy_get_property", g.s("plugin_root_id"), RET))}
    (drop {g.call("proxy_set_property", g.s("zl.empty"), (0, 0))})
    {raw(g.call("proxy_get_property", g.s("zl.empty"), RET))}
    (drop {g.call("proxy_set_shared_data", g.s(shared_key), (0, 0), 0)})
    {raw(g.call("proxy_get_shared_data", g.s(shared_key), RET, U32_A))}
    (drop {g.call("proxy_register_shared_queue", g.s(queue_name), U32_B)})
    (drop {g.call("proxy_enqueue_shared_queue", f"(i32.load (i32.const {U32_B}))", (0, 0))})
    {raw(g.call("proxy_dequeue_shared_queue", f"(i32.load (i32.const {U32_B}))", RET))}
    {raw(g.call("proxy_get_status", U32_A, RET))}
    {raw(g.call("proxy_call_foreign_function", g.s("base64_encode"), (0, 0), RET))}
    {raw(g.call("proxy_get_state", g.s("state_demo"), g.s("no-such-key"), RET))}
    (i32.store (i32.const {U32_A}) (i32.const {GARBAGE_PTR})) (i32.store (i32.const {U32_B}) (i32.const {GARBAGE_SIZE}))
    {raw(g.call("proxy_get_state_with_etag", g.s("state_demo"), g.s("no-such-key"), RET, U32_A, U32_B))}
    (call $emit (i32.load (i32.const {U32_A}))) (call $emit (i32.load (i32.const {U32_B})))
    {raw(g.call("proxy_invoke_service", g.s("silent"), g.s("/quiet"), (0, 0), RET))}
    (call $emit_ret {g.call("proxy_get_header_map_value", 0, g.s("x-full"), RET)})
    (call $flush)
    (i32.const 0)"""
    request_reads = 14  # raw records; proxy_get_state_with_etag's etag pair comes after the 13th
    wat = g.module(proxy_on_vm_start=vm_start, proxy_on_configure=configure, proxy_on_request_headers=request)
    return wat, start_up_reads, request_reads


def runtime_configuration_reader() -> str:
    """The runtime's 6-argument proxy_get_configuration (the same import name as ABI 0.1.0's)."""
    g = go_style_guest()
    request = f"""
    {raw(g.call("proxy_get_configuration#runtime", g.s("cfg"), g.s("empty"), RET))}
    (call $emit_ret {g.call("proxy_get_configuration#runtime", g.s("cfg"), g.s("full"), RET)})
    (call $flush)
    (i32.const 0)"""
    return g.module(proxy_on_request_headers=request)


def http_caller() -> str:
    """An http call whose answer has an empty body: buffer 4 and proxy_get_status read empty."""
    g = go_style_guest()
    headers = serialize_map([(":method", "GET"), (":path", "/empty"), (":authority", "upstream")])
    request = f"""
    (drop {g.call("proxy_http_call", g.s("quiet"), g.s(headers), (0, 0), g.s(serialize_map([])), 2000, U32_A)})
    (i32.const 1)"""
    response = f"""
    {raw(g.call("proxy_get_buffer_bytes", 4, 0, "(local.get $body)", RET))}
    {raw(g.call("proxy_get_buffer_bytes", 4, 0, 1000, RET))}
    {raw(g.call("proxy_get_status", U32_A, RET))}
    (call $emit_ret {g.call("proxy_get_header_map_value", 6, g.s(":status"), RET)})
    (call $flush)
    (drop {g.call("proxy_continue_stream", 0)})"""
    return g.module(proxy_on_request_headers=request, proxy_on_http_call_response=response)


async def _quiet_upstream() -> tuple[web.AppRunner, int]:
    async def empty(request: web.Request) -> web.Response:
        return web.Response(body=b"")

    app = web.Application()
    app.router.add_get("/empty", empty)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


@pytest.mark.parametrize("backend", ENGINE_BACKENDS)
async def test_empty_results_never_reach_the_allocator(serve, tmp_path: Path, backend: str) -> None:
    wat, start_up_reads, request_reads = start_up_reader()
    folder = functions_dir(tmp_path)
    write_guest(folder, "goalloc", wat)
    write_guest(folder, "runtime_reader", runtime_configuration_reader())
    write_guest(folder, "http_caller", http_caller())
    write_guest(folder, "silent", WatGuest().module(proxy_on_request_headers="(i32.const 0)"))
    store_file = tmp_path / "cfg.toml"
    store_file.write_text('empty = ""\nfull = "v"\n')
    runner, port = await _quiet_upstream()
    try:
        config = make_config(tmp_path, folder, function_defaults={"instance_num": 1},
                             configuration={"cfg": {"type": "file", "path": str(store_file)}},
                             upstreams={"quiet": f"http://127.0.0.1:{port}"})
        client = await serve(config, engine_backend=backend)

        # Start-up read empty configurations without trapping: the function deployed and answers.
        status, _, body = await client.call("goalloc", "/", headers={"x-empty": "", "x-full": "abc"})
        assert status == 200, body
        r = Results(body)
        assert raw_records(r, start_up_reads) == [EMPTY] * start_up_reads
        assert raw_records(r, 13) == [EMPTY] * 13
        assert (r.u32(), r.u32()) == (0, 0)  # proxy_get_state_with_etag: the etag is (0, 0) too
        assert raw_records(r, request_reads - 13) == [EMPTY] * (request_reads - 13)
        assert r.ret() == (OK, b"abc")  # the control: a non-empty value goes through the allocator
        assert r.done()
        # A second request on the same instance: nothing trapped meanwhile.
        status, _, body = await client.call("goalloc", "/", headers={"x-empty": "", "x-full": "abc"})
        r = Results(body)
        assert status == 200 and raw_records(r, request_reads - 1)[0] == EMPTY

        status, _, body = await client.call("runtime_reader")
        assert status == 200, body
        r = Results(body)
        assert raw_records(r, 1) == [EMPTY]
        assert r.ret() == (OK, b"v") and r.done()

        status, _, body = await client.call("http_caller")
        assert status == 200, body
        r = Results(body)
        assert raw_records(r, 3) == [EMPTY] * 3
        assert r.ret() == (OK, b"200") and r.done()  # the call did succeed, with an empty body
    finally:
        await runner.cleanup()


def test_the_guest_allocator_really_traps_on_zero() -> None:
    """The control for everything above: had the host asked this allocator for 0 bytes, the guest
    would have trapped (and the requests above answered 500)."""
    engine = WasmEngine(ENGINE_BACKENDS[0])
    module = engine.compile(wasmtime.wat2wasm(go_style_guest().module()))
    vm = ProxyWasmVM(engine, engine.linker(all_host_functions()), module, PluginSettings(name="goalloc"),
                     HostServices())
    vm.start()
    assert vm.allocate(b"abc") > 0
    with pytest.raises(GuestTrap):
        vm.allocate(b"")


def test_no_import_allocates_around_return_bytes() -> None:
    """Every byte-returning import goes through ProxyWasmVM.return_bytes (which skips the allocator
    for an empty result): none calls the allocator itself."""
    imports = Path(__file__).resolve().parents[2] / "abi" / "imports"
    offenders = [path.name for path in imports.glob("*.py") if "allocate(" in path.read_text()]
    assert offenders == []

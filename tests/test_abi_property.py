"""Property: whatever pointers, lengths and enum values a guest passes to any host import, the host
answers with a status code (or errno) and never crashes, on both engine back-ends."""

from __future__ import annotations

import pytest
import wasmtime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abi import HostServices, HttpRequest, PluginSettings, ProxyWasmVM, WasmEngine, all_host_functions
from abi.engine import I32
from abi.vm import StreamState
from tests.conftest import ENGINE_BACKENDS

# proc_exit ends the call by design (a trap carrying the exit code), so it has no status to check;
# poll_oneoff sleeps and interrupts the guest at its deadline by design (tests/abi/test_wasi_poll_oneoff.py
# fuzzes it with a deadline armed).
FUNCTIONS = [f for f in all_host_functions()
             if f.module != "wasi_unstable" and f.name not in ("proc_exit", "poll_oneoff")]
# A name provided with several signatures (proxy_get_configuration) cannot be imported twice by one
# module: the n-th signature of each name goes into module n.
_SEEN: dict[tuple[str, str], int] = {}
GROUPS = []
for _host in FUNCTIONS:
    GROUPS.append(_SEEN.get((_host.module, _host.name), 0))
    _SEEN[(_host.module, _host.name)] = GROUPS[-1] + 1

EDGES_I32 = [0, 1, 2, 3, 7, 8, 9, 12, 16, 255, 4096, 65532, 65535, 65536, 65537, 0x7FFFFFFF, 0x80000000,
             0xFFFFFFF0, 0xFFFFFFFF]
I32_VALUES = st.one_of(st.sampled_from(EDGES_I32), st.integers(0, 0xFFFFFFFF))
I64_VALUES = st.one_of(st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63)]), st.integers(-(2**63), 2**63 - 1))


def _forwarders(group: int) -> str:
    """A module importing the host functions of `group` and exporting `call_<i>` that forwards to each."""
    imports, exports = [], []
    for i, host in enumerate(FUNCTIONS):
        if GROUPS[i] != group:
            continue
        params = " ".join(host.params)
        result = f"(result {host.results[0]})" if host.results else ""
        imports.append(f'(import "{host.module}" "{host.name}" (func $f{i} (param {params}) {result}))')
        gets = " ".join(f"(local.get {n})" for n in range(len(host.params)))
        exports.append(f'(func (export "call_{i}") (param {params}) {result} (call $f{i} {gets}))')
    allocator = '''(global $heap (mut i32) (i32.const 1024))
      (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)
        (if (i32.gt_u (local.get $n) (i32.const 32768)) (then (return (i32.const 0))))
        (local.set $p (global.get $heap))
        (global.set $heap (i32.add (i32.and (global.get $heap) (i32.const 16383)) (i32.const 1024)))
        (local.get $p))'''
    return "(module " + "\n".join(imports) + '\n(memory (export "memory") 1)\n' + allocator + "\n" + \
        "\n".join(exports) + ")"


@pytest.fixture(scope="module", params=ENGINE_BACKENDS)
def vms(request) -> dict[int, ProxyWasmVM]:
    engine = WasmEngine(request.param)
    linker = engine.linker(all_host_functions())
    machines = {}
    for group in sorted(set(GROUPS)):
        module = engine.compile(wasmtime.wat2wasm(_forwarders(group)))
        machines[group] = ProxyWasmVM(engine, linker, module, PluginSettings(name="fuzz", plugin_config=b"{}"),
                                      HostServices())
        machines[group].start()
    return machines


def _stream() -> StreamState:
    request = HttpRequest.build("GET", "/p?q=1", [("x-a", "1")], b"body")
    return StreamState(context_id=2, request=request, request_headers=list(request.headers),
                       request_body=bytearray(b"body"), request_trailers=[])


@pytest.mark.parametrize("index", range(len(FUNCTIONS)), ids=[f"{f.module}.{f.name}" for f in FUNCTIONS])
def test_any_arguments_give_a_status(vms: dict[int, ProxyWasmVM], index: int) -> None:
    host = FUNCTIONS[index]
    vm = vms[GROUPS[index]]
    call = vm.guest.func(f"call_{index}")
    values = st.tuples(*(I32_VALUES if kind == I32 else I64_VALUES for kind in host.params))

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(args=values, in_request=st.booleans())
    def check(args: tuple[int, ...], in_request: bool) -> None:
        vm.stream = _stream() if in_request else None
        try:
            result = call(*args)
        finally:
            vm.stream = None
        if host.results:
            assert isinstance(result, int) and 0 <= result <= 0xFFFFFFFF
        else:
            assert result is None  # a void import (emscripten_notify_memory_growth): it returned

    check()
    assert not vm.broken

"""The compiled-module cache (host/functions/cache.py) against the real engine, and the execution
policy's promotion, demotion and GIL decisions (host/functions/policy.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime

from abi.engine import WasmEngine
from host.functions import policy as p
from host.functions.cache import ModuleCache
from host.functions.policy import ExecutionPolicy
from tests.guest_wat import WatGuest

FAST = p.FAST_REQUEST_NS // 2
SLOW = p.FAST_REQUEST_NS + 1


@pytest.fixture(scope="module")
def engine() -> WasmEngine:
    return WasmEngine()


def _wasm(marker: int) -> bytes:
    """A small valid module; `marker` changes its bytes (and so its content hash)."""
    text = WatGuest().module(proxy_on_request_headers=f"(i32.const {marker}) (drop) (i32.const 0)")
    return bytes(wasmtime.wat2wasm(text))


def _exports(module: wasmtime.Module) -> set[str]:
    return {export.name for export in module.exports}


def test_the_same_bytes_compile_once_then_hit_memory(engine: WasmEngine, tmp_path: Path) -> None:
    cache = ModuleCache(engine, tmp_path)
    wasm = _wasm(1)
    first = cache.load(wasm)
    assert cache.stats() == {"compiled": 1, "disk_hits": 0, "memory_hits": 0}
    assert cache.load(wasm) is first
    assert cache.stats() == {"compiled": 1, "disk_hits": 0, "memory_hits": 1}
    cache.load(_wasm(2))  # other bytes: another compile
    assert cache.stats()["compiled"] == 2
    assert len(list(tmp_path.glob("*.cwasm"))) == 2
    cache.forget(wasm)  # out of memory, still on disk
    cache.load(wasm)
    assert cache.stats() == {"compiled": 2, "disk_hits": 1, "memory_hits": 1}


def test_a_new_cache_on_the_same_folder_loads_from_disk(engine: WasmEngine, tmp_path: Path) -> None:
    wasm = _wasm(3)
    compiled = ModuleCache(engine, tmp_path).load(wasm)
    restarted = ModuleCache(engine, tmp_path)
    loaded = restarted.load(wasm)
    assert restarted.stats() == {"compiled": 0, "disk_hits": 1, "memory_hits": 0}
    assert _exports(loaded) == _exports(compiled) and "proxy_on_request_headers" in _exports(loaded)


def test_a_corrupt_artifact_is_recompiled_not_fatal(engine: WasmEngine, tmp_path: Path) -> None:
    wasm = _wasm(4)
    cache = ModuleCache(engine, tmp_path)
    cache.load(wasm)
    (artifact,) = tmp_path.glob("*.cwasm")
    assert artifact.name == f"{cache.key(wasm)}.cwasm"
    artifact.write_bytes(b"\x7fELF not really a compiled module" * 8)
    fresh = ModuleCache(engine, tmp_path)
    module = fresh.load(wasm)
    assert fresh.stats() == {"compiled": 1, "disk_hits": 0, "memory_hits": 0}
    assert "proxy_on_request_headers" in _exports(module)
    again = ModuleCache(engine, tmp_path)  # the recompiled artifact replaced the damaged one
    again.load(wasm)
    assert again.stats() == {"compiled": 0, "disk_hits": 1, "memory_hits": 0}


def test_artifacts_are_keyed_by_engine_settings(engine: WasmEngine, tmp_path: Path) -> None:
    wasm = _wasm(5)
    ModuleCache(engine, tmp_path).load(wasm)
    metered = ModuleCache(WasmEngine(fuel_metering=True), tmp_path)
    metered.load(wasm)  # compiled for another engine configuration: not the same artifact
    assert metered.stats()["compiled"] == 1 and len(list(tmp_path.glob("*.cwasm"))) == 2


def test_invalid_bytes_raise_a_wasmtime_error(engine: WasmEngine, tmp_path: Path) -> None:
    cache = ModuleCache(engine, tmp_path)
    with pytest.raises(wasmtime.WasmtimeError):
        cache.load(b"\0asm\x01\0\0\0garbage")
    assert cache.stats()["compiled"] == 0 and not list(tmp_path.glob("*.cwasm"))


# -- the execution policy ------------------------------------------------------------------------------
def _observe(policy: ExecutionPolicy, cpu_ns: int, times: int) -> None:
    for _ in range(times):
        policy.observe(cpu_ns)


def test_promotion_after_promote_after_fast_requests() -> None:
    policy = ExecutionPolicy(eligible=True)
    _observe(policy, FAST, p.PROMOTE_AFTER - 1)
    assert not policy.inline
    policy.observe(FAST)
    assert policy.inline


def test_an_ineligible_function_is_never_promoted() -> None:
    policy = ExecutionPolicy(eligible=False)
    _observe(policy, FAST, 4 * p.PROMOTE_AFTER)
    assert not policy.inline


def test_a_slow_request_halves_the_streak() -> None:
    policy = ExecutionPolicy(eligible=True)
    _observe(policy, FAST, 20)
    policy.observe(SLOW)  # 20 -> 10
    _observe(policy, FAST, p.PROMOTE_AFTER - 11)
    assert not policy.inline
    policy.observe(FAST)
    assert policy.inline


def test_demotion_multiplies_the_requests_needed() -> None:
    policy = ExecutionPolicy(eligible=True)
    _observe(policy, FAST, p.PROMOTE_AFTER)
    policy.demote()
    assert not policy.inline and policy.demotions == 1
    _observe(policy, FAST, 4 * p.PROMOTE_AFTER - 1)
    assert not policy.inline
    policy.observe(FAST)
    assert policy.inline
    policy.demote()
    _observe(policy, FAST, 16 * p.PROMOTE_AFTER - 1)
    assert not policy.inline and policy.demotions == 2
    policy.observe(FAST)
    assert policy.inline


def test_repeated_slow_inline_runs_demote_but_one_does_not() -> None:
    policy = ExecutionPolicy(eligible=True)
    _observe(policy, FAST, p.PROMOTE_AFTER)
    slow_inline = p.SLOW_INLINE_NS + 1
    for _ in range(3 * p.SLOW_INLINE_LIMIT):  # slow, fast, slow, fast...: a GC pause now and then
        policy.observe(slow_inline)
        policy.observe(FAST)
    assert policy.inline and policy.demotions == 0
    _observe(policy, slow_inline, p.SLOW_INLINE_LIMIT - 1)
    assert policy.inline
    policy.observe(slow_inline)
    assert not policy.inline and policy.demotions == 1


@pytest.mark.parametrize("eligible", [True, False])
def test_cheap_requests_keep_the_gil_and_a_heavy_one_gives_it_back(eligible: bool) -> None:
    policy = ExecutionPolicy(eligible)
    cheap = p.CHEAP_REQUEST_NS
    _observe(policy, cheap, p.PROMOTE_AFTER - 1)
    assert not policy.cheap
    policy.observe(cheap)
    assert policy.cheap  # decided for impure functions too
    policy.observe(p.HEAVY_REQUEST_NS + 1)
    assert not policy.cheap
    _observe(policy, cheap, p.PROMOTE_AFTER - 1)  # the streak started again from zero
    assert not policy.cheap


def test_a_middling_request_halves_the_cheap_streak_and_an_overrun_resets_it() -> None:
    policy = ExecutionPolicy(eligible=False)
    _observe(policy, 0, 20)
    policy.observe(p.CHEAP_REQUEST_NS + 1)  # between cheap and heavy: 20 -> 10, cheapness kept as is
    _observe(policy, 0, p.PROMOTE_AFTER - 11)
    assert not policy.cheap
    policy.observe(0)
    assert policy.cheap
    policy.observe(p.HEAVY_REQUEST_NS)  # not above the heavy limit: still cheap
    assert policy.cheap
    policy.observe_overrun()
    assert not policy.cheap
    _observe(policy, 0, p.PROMOTE_AFTER - 1)
    assert not policy.cheap

"""Inline execution of proven-fast pure functions, and the replay in a guest thread when one overruns."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from abi import all_host_functions
from host.functions.policy import PROMOTE_AFTER
from tests.conftest import EXAMPLES, functions_dir, make_config


async def test_fast_pure_function_is_promoted_and_an_overrun_is_replayed(serve, tmp_path: Path,
                                                                        c_guests: Path) -> None:
    client = await serve(make_config(tmp_path, functions_dir(tmp_path, c_guests / "slow.wasm"),
                                     function_defaults={"instance_num": 1}))
    version = client.server.app.router.pick("slow")
    assert version.policy.eligible  # slow.c only uses headers, buffers and the clock
    for _ in range(4 * PROMOTE_AFTER):
        status, _, body = await client.call("slow", headers={"x-sleep-ms": "0"})
        assert (status, body) == (200, b"slept 0\n")
        if version.policy.inline:
            break
    assert version.policy.inline

    # 60 ms of guest work inline would stall the loop: it is interrupted after 10-20 ms and the
    # request is replayed in a guest thread, invisibly to the client.
    started = time.perf_counter()
    status, _, body = await client.call("slow", headers={"x-sleep-ms": "60"})
    assert (status, body) == (200, b"slept 60\n")
    assert time.perf_counter() - started < 1.0
    assert not version.policy.inline and version.policy.demotions == 1
    assert version.stats.errors == 0


async def test_while_inline_a_long_request_does_not_stall_other_functions(serve, tmp_path: Path,
                                                                          c_guests: Path) -> None:
    folder = functions_dir(tmp_path, c_guests / "slow.wasm", EXAMPLES / "hello.wasm")
    client = await serve(make_config(tmp_path, folder, function_defaults={"instance_num": 2}))
    version = client.server.app.router.pick("slow")
    for _ in range(4 * PROMOTE_AFTER):
        await client.call("slow", headers={"x-sleep-ms": "0"})
        if version.policy.inline:
            break
    assert version.policy.inline
    slow = asyncio.create_task(client.call("slow", headers={"x-sleep-ms": "700"}))
    await asyncio.sleep(0.15)
    started = time.perf_counter()
    status, _, _ = await client.call("hello")
    assert status == 200 and time.perf_counter() - started < 0.3
    assert (await slow)[2] == b"slept 700\n"


def test_modules_with_blocking_or_effectful_imports_never_run_inline() -> None:
    # Purity is recorded on each import's registration (abi/imports/_registry.py).
    pure = {f"{f.module}.{f.name}" for f in all_host_functions() if f.pure}
    impure = {f"{f.module}.{f.name}" for f in all_host_functions() if not f.pure}
    assert {"env.proxy_get_header_map_value", "wasi_snapshot_preview1.fd_write"} <= pure
    for blocking in ("env.proxy_get_state", "env.proxy_set_state", "env.proxy_invoke_service", "env.proxy_http_call",
                     "env.proxy_publish_event", "env.proxy_try_lock", "env.proxy_get_next_id",
                     "env.proxy_set_shared_data", "env.proxy_define_metric"):
        assert blocking in impure and blocking not in pure, blocking


async def test_functions_that_write_stay_in_guest_threads(serve, tmp_path: Path) -> None:
    # The demo chain only reads (tests/functions/test_fn_inline_reads.py); orders also writes
    # state, takes locks and publishes: replaying it would repeat those, so it never runs inline.
    client = await serve(make_config(tmp_path, EXAMPLES))
    orders = client.server.app.router.pick("orders").policy
    assert not orders.eligible and not orders.inline
    assert client.server.app.router.pick("id_1").policy.eligible

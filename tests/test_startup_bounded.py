"""Start-up code is bounded (issue 15, item 8): a module whose start function, `_initialize`,
`_start`, `proxy_on_vm_start` or `proxy_on_configure` never returns is interrupted at its deadline
(the function's `timeout_ms`) and rejected with the reason in `GET /functions/{id}` — at boot (the
host starts and serves the others) and by hot reload (the old version keeps serving) — and the
file, once fixed, deploys."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, functions_dir, make_config
from tests.guest_wat import WatGuest, write_guest

FOREVER = "(loop $forever (br $forever))"
# The module's own start function (run while it is instantiated) counts down from 3e9 instead of
# looping forever: seconds of work, far past the deadline, so that an engine which does not bound
# instantiation fails this test (the module would deploy) instead of hanging it.
START_SECTION = """  (func $start (local $i i64)
    (local.set $i (i64.const 3000000000))
    (loop $spin (local.set $i (i64.sub (local.get $i) (i64.const 1)))
      (br_if $spin (i64.ne (local.get $i) (i64.const 0)))))
  (start $start)"""
# The module's start function apart: it runs inside instantiation, which the engine must bound itself.
GROUPS = {"callbacks": ("_initialize", "_start", "proxy_on_vm_start", "proxy_on_configure"),
          "start-function": ("start",)}
DEADLINE_MS = 300


def guest(text: str, loops_in: str | None = None) -> str:
    """Answers `text`; its start-up stage `loops_in` ("start" or a callback of GROUPS) never returns."""
    g = WatGuest()
    answer = f"(drop {g.call('proxy_set_buffer_bytes', 1, 0, 0, g.s(text))})\n    (i32.const 0)"
    callbacks = {"proxy_on_request_headers": answer}
    if loops_in == "start":
        g.extra.append(START_SECTION)
    elif loops_in == "_initialize":
        callbacks["_initialize"] = FOREVER
    elif loops_in == "_start":
        g.extra.append(f'  (func (export "_start") {FOREVER})')
    elif loops_in is not None:
        callbacks[loops_in] = f"{FOREVER}\n    (i32.const 1)"
    return g.module(**callbacks)


def name_of(stage: str) -> str:
    return "loop" + stage.replace("proxy_on", "").replace("_", "-").rstrip("-")


def expected_reason(stage: str) -> str:
    deadline = f"did not return within the {DEADLINE_MS / 1000:g}s deadline (timeout_ms) and was interrupted"
    return f"the start function {deadline}" if stage == "start" else deadline


async def rejection(client, name: str) -> dict:
    status, info = await client.admin_get(f"/functions/{name}")
    assert status == 200, (name, info)
    (version,) = info["versions"]
    return version


async def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def _config(tmp_path: Path, folder: Path):
    return make_config(tmp_path, folder, function_defaults={"instance_num": 1, "timeout_ms": DEADLINE_MS},
                       server={"watch_debounce_ms": 50})


@pytest.mark.parametrize("group", GROUPS)
async def test_looping_start_up_at_boot_is_rejected_and_the_host_serves(serve, tmp_path: Path, group: str) -> None:
    stages = GROUPS[group]
    folder = functions_dir(tmp_path, EXAMPLES / "hello.wasm")
    for stage in stages:
        write_guest(folder, name_of(stage), guest("never", loops_in=stage))
    started = time.monotonic()
    client = await serve(_config(tmp_path, folder))
    boot = time.monotonic() - started
    assert boot < 3.0, f"boot took {boot:.1f}s: start-up code was not cut at its {DEADLINE_MS} ms deadline"
    status, _, body = await client.call("hello")
    assert (status, body) == (200, b"hello method=GET path=/ greeting=-\n")
    status, readiness = await client.admin_get("/actuator/health/readiness")
    assert status == 503 and readiness["details"]["functions"] == ["hello"]
    for stage in stages:
        name = name_of(stage)
        version = await rejection(client, name)
        assert version["last_reload"]["outcome"] == "rejected", (stage, version)
        assert expected_reason(stage) in version["last_reload"]["error"], (stage, version)
        assert expected_reason(stage) in readiness["details"]["failed"][name]
        assert (await client.call(name))[0] == 404
    # Fixed in place: each deploys and serves.
    for stage in stages:
        write_guest(folder, name_of(stage), guest(f"fixed {stage}"))
    for stage in stages:
        async def fixed(stage: str = stage) -> bool:
            return (await client.call(name_of(stage)))[2] == f"fixed {stage}".encode()
        await wait_until(fixed)
    assert (await client.admin_get("/actuator/health/readiness"))[0] == 200


@pytest.mark.parametrize("group", GROUPS)
async def test_looping_start_up_by_hot_reload_keeps_the_old_version(serve, tmp_path: Path, group: str) -> None:
    stages = GROUPS[group]
    folder = functions_dir(tmp_path, EXAMPLES / "hello.wasm")
    for stage in stages:
        write_guest(folder, name_of(stage), guest(f"v1 {stage}"))
    client = await serve(_config(tmp_path, folder))
    for stage in stages:
        assert (await client.call(name_of(stage)))[2] == f"v1 {stage}".encode()
    records = client.server.app.deployments.records
    for stage in stages:
        write_guest(folder, name_of(stage), guest("never", loops_in=stage))
    served = 0

    async def all_rejected() -> bool:
        nonlocal served
        for stage in stages:  # meanwhile the old versions answer, without waiting for the reloads
            status, _, body = await client.call(name_of(stage))
            assert (status, body) == (200, f"v1 {stage}".encode()), f"the looping {stage} reload replaced v1"
            served += 1
        return all(records[(folder / f"{name_of(stage)}.wat").resolve()].last_outcome == "rejected"
                   for stage in stages)
    await wait_until(all_rejected)
    assert served >= len(stages)
    for stage in stages:
        version = await rejection(client, name_of(stage))
        assert version["sha256"] and version["last_reload"]["outcome"] == "rejected"
        assert expected_reason(stage) in version["last_reload"]["error"], (stage, version)
    assert (await client.call("hello"))[0] == 200
    for stage in stages:
        write_guest(folder, name_of(stage), guest(f"v2 {stage}"))
    for stage in stages:
        async def replaced(stage: str = stage) -> bool:
            return (await client.call(name_of(stage)))[2] == f"v2 {stage}".encode()
        await wait_until(replaced)

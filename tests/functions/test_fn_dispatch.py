"""The one call path (host/functions/dispatch.py) through a real App and WAT guests: not-found,
inline runs and their replay, traps and deadlines, nested calls (depth limit, cycles), the
instance given back on every outcome, and a call that follows a reload to the new version."""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path

import pytest

from abi.codes import Status
from host.config import HostConfig
from host.functions.dispatch import (
    CallCycle,
    Dispatcher,
    FunctionNotFound,
    GuestFailed,
    RequestTimedOut,
)
from host.functions.policy import PROMOTE_AFTER
from host.functions.version import FunctionVersion
from tests.conftest import make_config
from tests.functions import fn_support as guests
from tests.functions.fn_support import request, running_app, wait_for
from tests.guest_wat import Results


def _config(tmp_path: Path, folder: Path, **server: object) -> HostConfig:
    return make_config(tmp_path, folder, server=server, function_defaults={"instance_num": 1})


def _u32(body: bytes) -> int:
    return Results(body).u32()


def _settled(version: FunctionVersion) -> bool:
    stats = version.pool.stats()
    return stats["busy"] == 0 and stats["instances"] == stats["size"]


async def _given_back(version: FunctionVersion) -> None:
    """A queued job's answer reaches the caller just before the pool's guest thread releases the
    instance (or runs the next job on it), so "given back" is checked as "given back promptly"."""
    await wait_for(lambda: version.pool.stats()["busy"] == 0, timeout=2, what="the instance given back")


async def _promote(dispatcher: Dispatcher, version: FunctionVersion) -> None:
    """Fast requests until the policy runs the function inline (a slow one only halves the streak)."""
    for _ in range(20 * PROMOTE_AFTER):  # enough for a second promotion (4x as many) with slow ones mixed in
        await dispatcher.call(version, request())
        if version.policy.inline:
            await _given_back(version)
            return
    raise AssertionError("a fast pure function was never promoted")


async def test_an_unknown_function_is_not_found(tmp_path: Path) -> None:
    async with running_app(_config(tmp_path, tmp_path / "functions")) as app:
        with pytest.raises(FunctionNotFound) as caught:
            app.dispatcher.find("nope")
        assert caught.value.status == 404 and caught.value.function_id == "nope"
        with pytest.raises(FunctionNotFound):
            await asyncio.to_thread(app.dispatcher.call_blocking, "nope", request())


async def test_try_now_answers_only_inline_functions_with_an_idle_instance(tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    guests.answering(folder, "fast", 42)
    async with running_app(_config(tmp_path, folder)) as app:
        dispatcher = app.dispatcher
        version = dispatcher.find("fast")
        assert version.policy.eligible and not version.policy.inline
        assert dispatcher.try_now(version, request()) is None  # not inline yet: the caller awaits `call`
        await _promote(dispatcher, version)
        response = dispatcher.try_now(version, request())
        assert response is not None and (response.status, _u32(response.body)) == (200, 42)
        assert version.pool.stats()["busy"] == 0
        held = version.pool.try_acquire()  # no idle instance: not now
        assert dispatcher.try_now(version, request()) is None
        version.pool.release(held)
        assert version.stats.errors == 0 and _settled(version)


async def test_an_inline_overrun_is_replayed_in_a_guest_thread(tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    guests.spinning_on_header(folder, "spiky", spin_ms=60)
    async with running_app(_config(tmp_path, folder)) as app:
        dispatcher = app.dispatcher
        version = dispatcher.find("spiky")
        spike = request([("x-spin", "1")])
        # Through try_now: the overrun is cut at the inline deadline, the policy demoted, and the
        # caller replays the request with `call` (in a guest thread, with the function's deadline).
        await _promote(dispatcher, version)
        assert dispatcher.try_now(version, spike) is None  # uncut, it would have answered 200
        assert not version.policy.inline and version.policy.demotions == 1
        response = await dispatcher.call(version, spike)
        assert (response.status, _u32(response.body)) == (200, 1)
        # Through `call` while inline: the replay happens inside the one call.
        await _promote(dispatcher, version)
        response = await dispatcher.call(version, spike)
        assert (response.status, _u32(response.body)) == (200, 1)
        assert not version.policy.inline and version.policy.demotions == 2
        assert version.stats.errors == 0
        await wait_for(lambda: _settled(version), what="interrupted instances replaced")
        assert version.pool.stats()["replaced"] == 2  # each interrupted instance was discarded


async def test_a_trap_is_500_a_deadline_504_and_the_instance_is_given_back(tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    guests.answering(folder, "fine")
    guests.trapping(folder, "trap")
    guests.spinning(folder, "spin")
    (folder / "spin.toml").write_text("timeout_ms = 150\n")
    async with running_app(_config(tmp_path, folder)) as app:
        dispatcher = app.dispatcher
        fine = dispatcher.find("fine")
        assert (await dispatcher.call(fine, request())).status == 200
        await _given_back(fine)
        assert fine.pool.stats()["replaced"] == 0
        for name, status, words in (("trap", 500, "trapped"), ("spin", 504, "0.15s deadline")):
            version = dispatcher.find(name)
            with pytest.raises(GuestFailed, match=words) as caught:
                await dispatcher.call(version, request())
            assert caught.value.status == status and caught.value.function_id == name
            await wait_for(functools.partial(_settled, version), what=f"{name} replaced")
            assert version.pool.stats()["replaced"] == 1
            assert (version.stats.requests, version.stats.errors) == (1, 1)
        # The same from a guest thread (a nested call's path).
        with pytest.raises(GuestFailed) as caught:
            await asyncio.to_thread(dispatcher.call_blocking, "trap", request())
        assert caught.value.status == 500 and dispatcher.find("trap").pool.stats()["busy"] == 0


async def test_a_request_past_the_request_timeout_is_504_and_its_instance_comes_back(tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    guests.spinning(folder, "spin")
    (folder / "spin.toml").write_text("timeout_ms = 300\n")
    async with running_app(_config(tmp_path, folder, request_timeout_ms=80)) as app:
        version = app.dispatcher.find("spin")
        started = time.monotonic()
        with pytest.raises(RequestTimedOut) as caught:
            await app.dispatcher.call(version, request())
        assert caught.value.status == 504 and time.monotonic() - started < 0.25
        # The guest is still bounded by its own deadline; then its instance is given back.
        await wait_for(lambda: _settled(version), timeout=3, what="the instance back after the guest deadline")



async def test_a_timed_out_request_with_filters_keeps_its_instances_until_the_guest_stops(tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    guests.spinning_on_header(folder, "fronted", spin_ms=5000)
    guests.passthrough(tmp_path / "filters", "pass")
    passthrough = tmp_path / "filters" / "pass.wat"
    config = make_config(tmp_path, folder, server={"request_timeout_ms": 100}, function_defaults={"instance_num": 1},
                         functions={"fronted": {"timeout_ms": 300, "filters": [{"path": str(passthrough)}]}})
    async with running_app(config) as app:
        version = app.dispatcher.find("fronted")
        with pytest.raises(RequestTimedOut):
            await app.dispatcher.call(version, request([("x-spin", "1")]))
        busy_while_running = (version.pool.stats()["busy"], version.filter_pools[0].stats()["busy"])
        await asyncio.sleep(0.6)  # past the guest's own 300 ms deadline: its thread is done with the instance
        assert busy_while_running == (1, 1), "instances handed back while the guest still ran on them"
        response = await app.dispatcher.call(version, request())
        assert (response.status, _u32(response.body)) == (200, 1)

async def test_nested_calls_stop_at_the_depth_limit(tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    guests.invoking(folder, "deep", "deep")
    (folder / "deep.toml").write_text("instance_num = 6\n")
    async with running_app(_config(tmp_path, folder, max_invoke_depth=3)) as app:
        response = await asyncio.to_thread(app.dispatcher.call_blocking, "deep", request())
        levels, body = 0, response.body
        while True:
            status, body = Results(body).ret()
            if status != Status.OK:
                break
            levels += 1
        # The outer call plus two nested ones hold 3 instances; the third nested call is refused.
        assert (levels, status, body) == (2, Status.INTERNAL_FAILURE, b"")
        assert app.dispatcher.find("deep").pool.stats()["busy"] == 0


async def test_a_self_call_cycle_fails_at_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "functions"
    guests.invoking(folder, "loop", "loop")  # one instance, calling itself: could only wait forever
    async with running_app(_config(tmp_path, folder, invoke_timeout_ms=3000)) as app:
        version = app.dispatcher.find("loop")
        started = time.monotonic()
        response = await app.dispatcher.call(version, request())
        assert time.monotonic() - started < 1.0  # not after the 3 s invoke timeout
        assert Results(response.body).ret() == (Status.INTERNAL_FAILURE, b"")
        assert "held by the calling chain" in caplog.text
        await _given_back(version)
        # Straight into call_blocking, from a thread whose chain holds the only instance.
        held = version.pool.try_acquire()

        def nested() -> None:
            from host.functions.dispatch import CHAIN
            CHAIN.held.append(id(held))
            try:
                app.dispatcher.call_blocking("loop", request())
            finally:
                CHAIN.held.pop()

        with pytest.raises(CallCycle) as caught:
            await asyncio.to_thread(nested)
        assert caught.value.status == 508
        version.pool.release(held)


async def test_a_call_waiting_across_a_reload_is_answered_by_the_new_version(tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    guests.answering(folder, "moving", 1)
    async with running_app(_config(tmp_path, folder)) as app:
        old = app.dispatcher.find("moving")
        held = old.pool.try_acquire()  # the only instance: the call below waits for it
        waiting = asyncio.ensure_future(app.dispatcher.call(old, request()))
        await wait_for(lambda: old.pool.stats()["waiting"] == 1)
        guests.answering(folder, "moving", 2)
        await app.deployments.deploy(folder / "moving.wat")  # closes the old pool: PoolClosed
        response = await asyncio.wait_for(waiting, 5)
        assert (response.status, _u32(response.body)) == (200, 2)
        new = app.dispatcher.find("moving")
        assert new is not old
        await _given_back(new)
        old.pool.release(held)  # retired on release
        await wait_for(lambda: old.pool.stats()["instances"] == 0, what="the old instance retired")

        # Removed while waiting: not found, rather than waiting out the timeout.
        held = new.pool.try_acquire()
        waiting = asyncio.ensure_future(app.dispatcher.call(new, request()))
        await wait_for(lambda: new.pool.stats()["waiting"] == 1)
        await app.deployments.remove(folder / "moving.wat")
        with pytest.raises(FunctionNotFound, match="removed"):
            await asyncio.wait_for(waiting, 5)
        new.pool.release(held)


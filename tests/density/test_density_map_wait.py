"""At the memory-map limit (lowered here), a request whose instance start the budget refuses waits for
the next reclaim (retiring idle instances, collecting them) instead of failing at once: more functions
than fit with an instance each all answer their first request. Only when no room comes within the
request's acquire timeout is it answered 503, naming vm.max_map_count, as a refusal was before."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from abi.engine import INSTANCE_MAPS
from abi.engine import _maps as maps
from host.app import App
from host.functions import pool as pool_module
from host.functions.dispatch import FunctionUnavailable
from tests.density.density_support import answer, function_id, running_app, write_functions

COUNT = 40
ROOM = 8  # instances that fit at once: COUNT first requests need several reclaims
# Mappings the process makes meanwhile besides instances (a thread's stack, a malloc arena): room
# left for them, so that the test is about instances, not about this process's other mappings.
SLACK_MAPS = 24


@pytest.fixture
def slow_reclaims(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Reclaims at most every 0.3 s, each collecting (whatever the collection costs on this machine):
    requests come far faster than reclaims, as at 10,000 functions where a collection takes 0.5 s."""
    monkeypatch.setattr(maps, "RECLAIM_INTERVAL_S", 0.3)
    monkeypatch.setattr(pool_module, "COLLECTION_SHARE", 0)
    yield


async def _at_zero_with_room_for(app: App, instances: int) -> int:
    """Every function scaled to zero now (their deploy instances retired and collected), then a limit
    leaving room for `instances` more instances; returns the limit."""
    for version in app.router.versions():
        version.pool.retire_idle_now()
    gc.collect()
    budget = app.engine.maps
    budget.configure()  # a fresh count
    in_use = budget.state()["in_use"]
    assert isinstance(in_use, int)
    limit = in_use + instances * INSTANCE_MAPS + (SLACK_MAPS if instances else 0)
    budget.configure(limit=limit, reserve=0, instance_margin=0)
    return limit


async def _deployed(app: App, tmp_path: Path, count: int) -> None:
    for path in write_functions(tmp_path / "functions", 0, count):
        await app.deployments.deploy(path)
    assert len(app.router.ids()) == count
    # A burst first, with no limit: the guest threads a burst needs are started now and stay (each
    # holds mappings of its own, which would otherwise take the room the test leaves for instances).
    await asyncio.gather(*(answer(app, function_id(i)) for i in range(count)))


async def test_first_requests_past_the_limit_wait_for_a_reclaim_and_all_answer(
        tmp_path: Path, slow_reclaims: None) -> None:
    # Idle instances stay a minute: only the reclaim (at the limit) retires them.
    async with running_app(tmp_path, idle_timeout_ms=60_000) as app:
        await _deployed(app, tmp_path, COUNT)
        await _at_zero_with_room_for(app, ROOM)
        budget = app.engine.maps
        answers = [await answer(app, function_id(i)) for i in range(COUNT // 2)]  # one after another
        # and the rest at once, as a burst of requests to functions at zero
        answers += await asyncio.gather(*(answer(app, function_id(i)) for i in range(COUNT // 2, COUNT)))
        assert answers == [(200, function_id(i).encode()) for i in range(COUNT)]
        state = budget.state()
        # The budget did refuse starts (that used to answer 503), and reclaims made room for them.
        assert isinstance(state["refused"], int) and state["refused"] >= 1
        assert isinstance(state["reclaims"], int) and state["reclaims"] >= 2
        assert "vm.max_map_count" in str(state["last_refusal"])
        status, details = app.readiness()  # the refusals are reported
        assert details["limits"]["memory_maps"]["refused"] == state["refused"]
        budget.configure(limit=None, reserve=None)


async def test_a_request_is_refused_naming_the_limit_when_no_room_comes_within_its_timeout(
        tmp_path: Path, slow_reclaims: None) -> None:
    async with running_app(tmp_path, idle_timeout_ms=60_000) as app:
        await _deployed(app, tmp_path, 3)
        await _at_zero_with_room_for(app, 0)
        budget = app.engine.maps
        # Far past any count: no reclaim can help (a relative limit could be met after a collection
        # frees what earlier tests in this process left behind).
        budget.configure(limit=1, reserve=0, instance_margin=0)
        app.dispatcher.acquire_timeout_s = 0.4
        started = time.monotonic()
        with pytest.raises(FunctionUnavailable) as refused:
            await answer(app, function_id(1))
        waited = time.monotonic() - started
        assert refused.value.status == 503 and "vm.max_map_count" in str(refused.value)
        assert "cannot start an instance" in str(refused.value)
        assert 0.35 <= waited < 3  # it waited its timeout (not longer)
        status, details = app.readiness()
        limits = details["limits"]["memory_maps"]
        # Retried meanwhile when the machine allows (retries on a timer: tests/density/test_density_pool.py).
        assert limits["refused"] >= 1 and "vm.max_map_count" in limits["last_refusal"]
        pool = app.dispatcher.find(function_id(1)).pool
        assert pool.down_reason is None and pool.stats()["waiting"] == 0  # not down: room again, it starts
        budget.configure(limit=None, reserve=None)
        assert await answer(app, function_id(1)) == (200, function_id(1).encode())

"""The elastic InstancePool on its own: scale from zero, growth to the maximum under load, retirement of
idle instances after the idle timeout, and failures to start that are transient (a process limit)
or not. Fake instances (the pool only touches `broken` and `close()`); the background runner is the
host's real GuestThreads."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from abi.engine import ResourceLimitError
from abi.engine import _maps as maps
from host.functions.pool import InstancePool, PoolDown, PoolWouldDeadlock
from host.functions.threads import GuestThreads
from tests.functions.fn_wait import wait_for

_serial = itertools.count(1)


class FakeInstance:
    def __init__(self) -> None:
        self.serial = next(_serial)
        self.broken = False
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.broken = True


@pytest.fixture
def threads() -> Iterator[GuestThreads]:
    runner = GuestThreads(name="density-pool-test")
    yield runner
    runner.shutdown()


def elastic(threads: GuestThreads, *, low: int = 0, high: int = 3, idle_s: float = 60.0,
            factory: Callable[[], FakeInstance] = FakeInstance) -> tuple[InstancePool, list[FakeInstance]]:
    made: list[FakeInstance] = []

    def new() -> FakeInstance:
        instance = factory()
        made.append(instance)
        return instance

    pool = InstancePool("fake", new, high, threads, 16, min_size=low, idle_timeout_s=idle_s)  # type: ignore[arg-type]
    pool.fill()
    return pool, made


async def test_a_pool_at_zero_starts_an_instance_for_its_first_request(threads: GuestThreads) -> None:
    pool, made = elastic(threads)
    assert made == [] and pool.stats()["instances"] == 0 and pool.try_acquire() is None
    vm = await asyncio.wait_for(pool.acquire(5), 5)
    assert vm is made[0] and pool.stats()["busy"] == 1
    pool.release(vm)
    assert pool.stats()["idle"] == 1 and pool.scaling()["started_on_demand"] == 1
    assert await pool.acquire(5) is vm  # reused, not another start
    pool.release(vm)
    assert len(made) == 1


async def test_busy_pools_grow_to_their_maximum_and_no_further(threads: GuestThreads) -> None:
    pool, made = elastic(threads, high=3)
    waiters = [asyncio.ensure_future(pool.acquire(5)) for _ in range(5)]
    await wait_for(lambda: sum(w.done() for w in waiters) == 3, what="three instances started")
    await asyncio.sleep(0.05)  # nothing more is started for the two still waiting
    assert len(made) == 3 and pool.stats()["instances"] == 3 and pool.stats()["waiting"] == 2
    held = [w.result() for w in waiters if w.done()]
    for vm in held:
        pool.release(vm)
    rest = await asyncio.wait_for(asyncio.gather(*(w for w in waiters if w not in held)), 5)
    assert {id(vm) for vm in rest} <= {id(vm) for vm in made}
    for vm in rest:
        pool.release(vm)
    assert pool.stats()["instances"] == 3 and pool.scaling()["starting"] == 0


async def test_a_queued_job_runs_on_the_instance_its_own_start_made(threads: GuestThreads) -> None:
    pool, made = elastic(threads)
    ran_in: list[int] = []

    def work(vm: FakeInstance) -> int:
        ran_in.append(threading.get_ident())
        return vm.serial

    serial = await asyncio.wait_for(pool.submit(work, 5), 5)  # type: ignore[arg-type]
    assert serial == made[0].serial and ran_in[0] != threading.get_ident()
    await wait_for(lambda: pool.stats()["idle"] == 1, what="the instance back idle")


async def test_idle_instances_beyond_the_minimum_retire_after_the_idle_timeout(threads: GuestThreads) -> None:
    pool, made = elastic(threads, low=1, high=3, idle_s=0.15)
    assert len(made) == 1  # the minimum, started by fill()
    held = [await pool.acquire(5) for _ in range(3)]
    assert len(made) == 3
    released_at = time.monotonic()
    for vm in held:
        pool.release(vm)
    await wait_for(lambda: sum(vm.closed for vm in made) == 2, timeout=5, what="the surplus retired")
    assert time.monotonic() - released_at >= 0.15  # not before the timeout
    assert pool.stats()["instances"] == 1 and pool.scaling()["retired_idle"] == 2
    (kept,) = [vm for vm in made if not vm.closed]
    await asyncio.sleep(0.3)
    assert not kept.closed and pool.stats()["instances"] == 1  # the minimum stays


async def test_the_last_released_instance_is_reused_first_so_the_others_age_out(threads: GuestThreads) -> None:
    pool, made = elastic(threads, high=2, idle_s=0.3)
    a, b = await pool.acquire(5), await pool.acquire(5)
    pool.release(a)
    pool.release(b)
    for _ in range(20):  # a light load: one request at a time, every 25 ms, for 0.5 s
        vm = await pool.acquire(5)
        assert vm is b
        pool.release(vm)
        await asyncio.sleep(0.025)
    await wait_for(lambda: a.closed, what="the instance left idle retired")
    assert not b.closed and pool.stats()["instances"] == 1


async def test_an_idle_timeout_of_zero_retires_an_instance_when_it_is_released(threads: GuestThreads) -> None:
    pool, made = elastic(threads, idle_s=0)
    for _ in range(3):
        vm = await pool.acquire(5)
        pool.release(vm)
        await wait_for(lambda v=vm: v.closed, what="the instance retired on release")  # type: ignore[misc]
    assert len(made) == 3 and pool.stats()["instances"] == 0


def _refusing_factory(refusing: list[bool], calls: list[float]) -> Callable[[], FakeInstance]:
    def factory() -> FakeInstance:
        calls.append(time.monotonic())
        if refusing[0]:
            raise ResourceLimitError("memory-map limit reached: vm.max_map_count is 100", "vm.max_map_count")
        return FakeInstance()
    return factory


async def test_a_start_refused_by_the_map_limit_waits_for_room_and_is_retried(threads: GuestThreads) -> None:
    refusing, calls = [True], []
    pool, _ = elastic(threads, factory=_refusing_factory(refusing, calls))
    waiter = asyncio.ensure_future(pool.acquire(5))
    await wait_for(lambda: len(calls) >= 2, what="the refused start retried")
    assert not waiter.done() and pool.down_reason is None  # still waiting; nothing wrong with the function
    refusing[0] = False  # room again (a reclaim freed mappings)
    vm = await asyncio.wait_for(waiter, 2)
    assert pool.scaling()["started_on_demand"] == 1
    pool.release(vm)
    gaps = [later - earlier for earlier, later in itertools.pairwise(calls)]
    assert min(gaps) >= maps.RECLAIM_INTERVAL_S * 0.8  # retried on a timer, not in a loop


async def test_a_start_refused_by_the_map_limit_until_the_timeout_answers_the_limit(threads: GuestThreads) -> None:
    refusing, calls = [True], []
    pool, _ = elastic(threads, factory=_refusing_factory(refusing, calls))
    started = time.monotonic()
    with pytest.raises(PoolDown, match="vm.max_map_count") as refused:
        await asyncio.wait_for(pool.acquire(0.35), 2)
    assert time.monotonic() - started >= 0.3 and "within 0.3" in str(refused.value)  # after the wait, not at once
    assert len(calls) <= 0.35 / maps.RECLAIM_INTERVAL_S + 2  # one retry per reclaim interval at most
    with pytest.raises(PoolDown, match="vm.max_map_count"):  # a nested call (guest thread) alike
        await asyncio.to_thread(pool.acquire_blocking, 0.2)
    job = pool.submit(lambda vm: None, 0.2)  # type: ignore[arg-type,return-value]
    with pytest.raises(PoolDown, match="vm.max_map_count"):  # and a request queued for a guest thread
        await asyncio.wait_for(job, 2)
    assert pool.down_reason is None and pool.stats()["waiting"] == 0
    await asyncio.sleep(maps.RECLAIM_INTERVAL_S * 3)
    settled = len(calls)
    await asyncio.sleep(maps.RECLAIM_INTERVAL_S * 3)
    assert len(calls) == settled  # nobody waits: no more retries
    refusing[0] = False
    vm = await asyncio.wait_for(pool.acquire(5), 2)  # the next request tries again, and gets one
    pool.release(vm)


async def test_a_start_up_failure_marks_the_pool_down_and_refuses_at_once(threads: GuestThreads) -> None:
    def factory() -> FakeInstance:
        raise RuntimeError("proxy_on_vm_start returned false")

    pool, _ = elastic(threads, factory=factory)
    with pytest.raises(PoolDown, match="proxy_on_vm_start returned false"):
        await asyncio.wait_for(pool.acquire(5), 2)
    assert "proxy_on_vm_start returned false" in (pool.down_reason or "")
    started = time.monotonic()
    with pytest.raises(PoolDown):
        await pool.acquire(5)  # refused at once, no new attempt right away
    assert time.monotonic() - started < 0.5


async def test_a_call_chain_holding_the_only_instance_waits_for_a_new_one_while_the_pool_can_grow(
        threads: GuestThreads) -> None:
    pool, _ = elastic(threads, high=2)
    mine = await pool.acquire(5)
    other = await asyncio.wait_for(asyncio.to_thread(pool.acquire_blocking, 5, [id(mine)]), 5)
    assert other is not mine  # a second instance, not a PoolWouldDeadlock
    with pytest.raises(PoolWouldDeadlock):  # at the maximum, held by the chain: waiting cannot help
        await asyncio.to_thread(pool.acquire_blocking, 5, [id(mine), id(other)])
    pool.release(mine)
    pool.release(other)

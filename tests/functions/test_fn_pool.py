"""InstancePool on its own. The pool only touches an instance's `broken` flag and `close()`, so these
tests use small fake instances; the background runner is the host's real GuestThreads."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from host.functions.pool import (
    InstancePool,
    PoolClosed,
    PoolDown,
    PoolQueueFull,
    PoolTimeout,
    PoolWouldDeadlock,
)
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
        self.broken = True  # as ProxyWasmVM.close does


@pytest.fixture
def threads() -> Iterator[GuestThreads]:
    runner = GuestThreads(name="pool-test")
    yield runner
    runner.shutdown()


def make_pool(threads: GuestThreads, size: int = 1, max_queue: int = 16,
              factory: Callable[[], FakeInstance] = FakeInstance) -> tuple[InstancePool, list[FakeInstance]]:
    made: list[FakeInstance] = []

    def new() -> FakeInstance:
        instance = factory()
        made.append(instance)
        return instance

    pool = InstancePool("fake", new, size, threads, max_queue)  # type: ignore[arg-type]
    pool.fill()
    return pool, made


async def in_thread(fn: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


async def test_one_fifo_across_loop_waiters_blocking_waiters_and_jobs(threads: GuestThreads) -> None:
    pool, _ = make_pool(threads)
    held = pool.try_acquire()
    assert held is not None and pool.try_acquire() is None
    order: list[tuple[str, int]] = []
    job_threads: list[int] = []

    async def loop_waiter(tag: str) -> None:
        vm = await pool.acquire(5)
        order.append((tag, vm.serial))
        pool.release(vm)

    def blocking_waiter() -> None:
        vm = pool.acquire_blocking(5)
        order.append(("blocking", vm.serial))
        pool.release(vm)

    def job(tag: str) -> Callable[[FakeInstance], str]:
        def work(vm: FakeInstance) -> str:
            order.append((tag, vm.serial))
            job_threads.append(threading.get_ident())
            return tag
        return work

    first = asyncio.create_task(loop_waiter("loop-1"))
    await wait_for(lambda: pool.stats()["waiting"] == 1)
    thread = await in_thread(blocking_waiter)
    await wait_for(lambda: pool.stats()["waiting"] == 2)
    jobs = [pool.submit(job("job-1"), 5), pool.submit(job("job-2"), 5)]  # type: ignore[arg-type]
    last = asyncio.create_task(loop_waiter("loop-2"))
    await wait_for(lambda: pool.stats()["waiting"] == 5)
    pool.release(held)
    await asyncio.wait_for(asyncio.gather(first, last, *jobs), 5)
    thread.join(5)
    assert [tag for tag, _ in order] == ["loop-1", "blocking", "job-1", "job-2", "loop-2"]
    assert {serial for _, serial in order} == {held.serial}  # one instance, handed on
    assert job_threads[0] == job_threads[1]  # the next queued job ran on the freed instance in place
    assert [await j for j in jobs] == ["job-1", "job-2"]
    assert pool.stats() == {"size": 1, "instances": 1, "busy": 0, "idle": 1, "waiting": 0, "replaced": 0,
                            "max_queue": 16}


async def test_try_acquire_on_a_retired_pool_is_none_and_waiting_tells_why(threads: GuestThreads) -> None:
    pool, made = make_pool(threads, size=2)
    pool.close()
    assert pool.try_acquire() is None
    with pytest.raises(PoolClosed):
        await pool.acquire(1)
    with pytest.raises(PoolClosed):
        pool.acquire_blocking(1)
    assert all(vm.closed for vm in made) and pool.stats()["instances"] == 0


async def test_the_queue_is_bounded_and_waiters_time_out(threads: GuestThreads) -> None:
    pool, _ = make_pool(threads, max_queue=2)
    held = pool.try_acquire()
    queued = [pool.submit(lambda vm: "ran", 5), asyncio.ensure_future(pool.acquire(5))]
    await wait_for(lambda: pool.stats()["waiting"] == 2)
    with pytest.raises(PoolQueueFull):
        pool.submit(lambda vm: "never", 5)
    with pytest.raises(PoolQueueFull):
        await pool.acquire(5)
    with pytest.raises(PoolQueueFull):
        pool.acquire_blocking(5)
    pool.release(held)
    assert await queued[0] == "ran"
    pool.release(await queued[1])

    held = pool.try_acquire()
    started = time.monotonic()
    with pytest.raises(PoolTimeout):
        await pool.acquire(0.05)
    with pytest.raises(PoolTimeout):
        await pool.submit(lambda vm: "late", 0.05)
    with pytest.raises(PoolTimeout):
        await asyncio.to_thread(pool.acquire_blocking, 0.05)
    assert time.monotonic() - started < 2
    assert pool.stats()["waiting"] == 0  # the waiters that gave up are gone
    pool.release(held)


async def test_waiting_for_an_instance_the_caller_chain_holds_fails_at_once(threads: GuestThreads) -> None:
    pool, _ = make_pool(threads, size=2)
    mine, other = pool.try_acquire(), pool.try_acquire()
    started = time.monotonic()
    with pytest.raises(PoolWouldDeadlock):
        await asyncio.to_thread(pool.acquire_blocking, 5, [id(mine), id(other)])
    assert time.monotonic() - started < 1  # not after the 5 s timeout
    # Someone else holds one of them: waiting can help, so it waits (and gets it when released).
    waiting = asyncio.ensure_future(asyncio.to_thread(pool.acquire_blocking, 5, [id(mine)]))
    await wait_for(lambda: pool.stats()["waiting"] == 1)
    pool.release(other)
    assert await waiting is other
    pool.release(mine)
    pool.release(other)


async def test_a_broken_instance_is_replaced(threads: GuestThreads) -> None:
    pool, made = make_pool(threads)
    vm = pool.try_acquire()
    vm.broken = True
    pool.release(vm)
    await wait_for(lambda: pool.stats()["idle"] == 1, what="a replacement")
    assert pool.stats()["replaced"] == 1 and pool.stats()["instances"] == 1 and len(made) == 2
    assert pool.try_acquire() is made[1]


async def test_a_failing_factory_marks_the_pool_down_and_fails_its_waiters(threads: GuestThreads) -> None:
    calls = itertools.count()

    def factory() -> FakeInstance:
        if next(calls) > 0:
            raise RuntimeError("start-up trapped")
        return FakeInstance()

    pool, _ = make_pool(threads, factory=factory)
    vm = pool.try_acquire()
    loop_waiter = asyncio.ensure_future(pool.acquire(5))
    blocking_waiter = asyncio.ensure_future(asyncio.to_thread(pool.acquire_blocking, 5))
    await wait_for(lambda: pool.stats()["waiting"] == 2)
    vm.broken = True
    pool.release(vm)
    for waiter in (loop_waiter, blocking_waiter):
        with pytest.raises(PoolDown, match="start-up trapped"):
            await asyncio.wait_for(waiter, 2)
    assert "start-up trapped" in (pool.down_reason or "")
    with pytest.raises(PoolDown):  # refused at once, not after the timeout
        await pool.acquire(5)
    assert pool.stats()["instances"] == 0 and pool.stats()["replaced"] == 1


async def test_resize_up_and_down(threads: GuestThreads) -> None:
    pool, made = make_pool(threads)
    pool.resize(3)
    await wait_for(lambda: pool.stats()["instances"] == 3, what="the pool to grow")
    a, b = pool.try_acquire(), pool.try_acquire()
    pool.resize(1)  # the idle one goes now; the busy ones as they are released
    idle = next(vm for vm in made if vm not in (a, b))
    await wait_for(lambda: idle.closed, what="the idle surplus closed")
    assert pool.stats() == {**pool.stats(), "size": 1, "instances": 2, "busy": 2, "idle": 0}
    pool.release(a)
    await wait_for(lambda: a.closed, what="a released surplus instance retired")
    pool.release(b)
    assert not b.closed and pool.stats()["instances"] == 1 and pool.stats()["idle"] == 1
    assert len(made) == 3 and pool.stats()["replaced"] == 0


async def test_close_fails_waiters_and_retires_idle_now_busy_on_release(threads: GuestThreads) -> None:
    pool, made = make_pool(threads, size=2)
    busy = pool.try_acquire()
    idle = next(vm for vm in made if vm is not busy)
    pool.close()
    assert idle.closed and not busy.closed  # the idle one retired at once, in this thread
    pool.release(busy)
    await wait_for(lambda: busy.closed, what="the busy instance retired on release")
    assert pool.stats()["instances"] == 0 and pool.stats()["busy"] == 0

    pool, made = make_pool(threads, size=1)
    held = pool.try_acquire()
    waiters = [asyncio.ensure_future(pool.acquire(5)), pool.submit(lambda vm: "never", 5),
               asyncio.ensure_future(asyncio.to_thread(pool.acquire_blocking, 5))]
    await wait_for(lambda: pool.stats()["waiting"] == 3)
    pool.close()
    for waiter in waiters:
        with pytest.raises(PoolClosed):
            await asyncio.wait_for(waiter, 2)
    assert pool.stats()["waiting"] == 0
    pool.release(held)
    await wait_for(lambda: held.closed, what="the held instance retired on release")

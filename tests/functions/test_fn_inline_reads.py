"""Functions that only read (state reads, invoking such a function) run inline on the event loop once
proven fast, their reads bounded by the inline budget (host/loop_budget.py); a read that would wait
longer, or a callee that cannot run inline, abandons the run and replays it in a guest thread."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from abi import all_host_functions
from host.functions.policy import INLINE_DEADLINE_S, PROMOTE_AFTER
from tests.conftest import EXAMPLES, functions_dir, make_config
from tests.functions.delay_proxy import DelayingProxy
from tests.services import POSTGRES_DSN, REDIS_ADDRESS, require_postgres, unique_prefix
from tests.services import redis_keys as services_redis_keys


@pytest.fixture
def redis_keys() -> Iterator[tuple[redis.Redis, str]]:
    with services_redis_keys("inline") as keys:
        yield keys


async def _until_inline(client, *function_ids: str) -> None:
    versions = [client.server.app.router.pick(function_id) for function_id in function_ids]
    for _ in range(16 * PROMOTE_AFTER):  # (a slow request halves the streak: room for a loaded machine)
        status, _, body = await client.call("id_1", "/?name=book1")
        assert (status, body) == (200, b"There are 100 inventories for book1.")
        if all(version.policy.inline for version in versions):
            return
    raise AssertionError(f"not inline: {[(v.function_id, v.policy.inline, v.policy.demotions) for v in versions]}")


def test_reads_are_marked_and_writes_are_not() -> None:
    reads = {f.name for f in all_host_functions() if f.reads}
    assert {"proxy_get_state", "proxy_get_state_with_etag", "proxy_invoke_service"} <= reads
    for effect in ("proxy_set_state", "proxy_delete_state", "proxy_publish_event", "proxy_try_lock",
                   "proxy_get_next_id", "proxy_http_call", "proxy_set_shared_data"):
        assert effect not in reads, effect


@pytest.mark.redis
async def test_demo_chain_runs_inline_reading_redis(serve, tmp_path: Path, redis_keys) -> None:
    r, prefix = redis_keys
    r.set(f"{prefix}||book1", "100")
    config = make_config(tmp_path, EXAMPLES, state={"state_demo": {"type": "redis", "address": "127.0.0.1:6379",
                                                                   "key_prefix": prefix}})
    client = await serve(config)
    id_1, id_2 = (client.server.app.router.pick(name) for name in ("id_1", "id_2"))
    assert id_1.policy.eligible and id_1.policy.blocking and id_2.policy.eligible and id_2.policy.blocking
    await _until_inline(client, "id_1", "id_2")
    # Inline now: each answer reads Redis afresh on the loop (no replay, no error).
    for value in ("7", "8", "9"):
        r.set(f"{prefix}||book1", value)
        status, _, body = await client.call("id_1", "/?name=book1")
        assert (status, body) == (200, f"There are {value} inventories for book1.".encode())
    assert id_1.policy.inline and id_2.policy.inline
    assert (id_1.policy.demotions, id_2.policy.demotions) == (0, 0)
    assert id_1.stats.errors == id_2.stats.errors == 0
    _, listing = await client.admin_get("/functions/id_2")
    assert listing["versions"][0]["execution"]["inline"] is True


@pytest.mark.redis
async def test_a_slow_read_is_replayed_in_a_guest_thread(serve, tmp_path: Path, redis_keys) -> None:
    r, prefix = redis_keys
    r.set(f"{prefix}||book1", "100")
    proxy = DelayingProxy(REDIS_ADDRESS, tmp_path / "proxy-delay")
    try:
        config = make_config(tmp_path, functions_dir(tmp_path, *EXAMPLES.glob("*.wasm")),
                             state={"state_demo": {"type": "redis", "address": f"127.0.0.1:{proxy.port}",
                                                   "key_prefix": prefix}})
        client = await serve(config)
        id_1, id_2 = (client.server.app.router.pick(name) for name in ("id_1", "id_2"))
        await _until_inline(client, "id_1", "id_2")

        # Redis now answers after 200 ms: waiting for it inline would stall every request on this
        # loop. The read gives up when the inline budget (INLINE_DEADLINE_S) is spent, the run is
        # replayed in a guest thread (where the read waits), the answer is the same, and both
        # functions leave the loop.
        proxy.delay(0.2)
        slow = asyncio.create_task(client.call("id_1", "/?name=book1"))
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        status, _, _ = await client.call("hello")
        hello_s = time.perf_counter() - started
        assert status == 200
        assert hello_s < 0.15, f"the loop was held for {hello_s * 1000:.0f} ms"
        status, _, body = await slow
        assert (status, body) == (200, b"There are 100 inventories for book1.")
        assert not id_2.policy.inline and id_2.policy.demotions == 1
        assert not id_1.policy.inline and id_1.policy.demotions == 1
        assert id_1.stats.errors == id_2.stats.errors == 0
        assert INLINE_DEADLINE_S < 0.05
    finally:
        proxy.close()


@pytest.mark.redis
async def test_redis_down_while_inline_answers_as_in_a_thread(serve, tmp_path: Path, redis_keys) -> None:
    r, prefix = redis_keys
    r.set(f"{prefix}||book1", "100")
    proxy = DelayingProxy(REDIS_ADDRESS, tmp_path / "proxy-delay")
    store = {"type": "redis", "address": f"127.0.0.1:{proxy.port}", "key_prefix": prefix, "timeout_ms": 300}
    config = make_config(tmp_path, EXAMPLES, state={"state_demo": store})
    client = await serve(config)
    await _until_inline(client, "id_1", "id_2")
    proxy.close()  # connections reset, nothing listens: the inline read fails, the replay reports it
    status, _, body = await client.call("id_1", "/?name=book1")
    assert status == 502 and body == b"invoke id_2 failed: status 10\n", (status, body)  # as from a thread
    assert not client.server.app.router.pick("id_2").policy.inline


async def test_a_store_that_cannot_bound_its_wait_keeps_the_chain_in_threads(serve, tmp_path: Path) -> None:
    require_postgres()
    table = unique_prefix("inline").replace("-", "_")
    config = make_config(tmp_path, EXAMPLES, state={"state_demo": {"type": "postgresql", "table": table,
                                                                   "connection_string": POSTGRES_DSN}})
    try:
        client = await serve(config)
        id_1, id_2 = (client.server.app.router.pick(name) for name in ("id_1", "id_2"))
        for _ in range(3):
            status, _, body = await client.call("id_1", "/?name=book1")
            assert (status, body) == (200, b"There are  inventories for book1.")  # not in this table
        # As if both had been promoted (their CPU time decides that, and it varies with the machine):
        # the PostgreSQL store refuses to wait on the loop, the run is replayed in threads, the answer
        # is the same, and both functions leave the loop.
        id_1.policy.inline = id_2.policy.inline = True
        status, _, body = await client.call("id_1", "/?name=book1")
        assert (status, body) == (200, b"There are  inventories for book1.")
        assert not id_2.policy.inline and id_2.policy.demotions == 1
        assert not id_1.policy.inline and id_1.policy.demotions == 1
        assert id_1.stats.errors == id_2.stats.errors == 0
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
            connection.execute(f'DROP TABLE IF EXISTS "{table}"')

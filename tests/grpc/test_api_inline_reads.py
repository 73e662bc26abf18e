"""The runtime API's reads (GetState, GetBulkState) on the event loop: tried there first within the
inline budget (host/loop_budget.py), made again in a thread when they cannot finish in it, and a
store whose reads are slow or refused goes to the threads for a while (InlineGate)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
import redis

import host.api as api_module
from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2 as pb
from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2_grpc
from host.loop_budget import InlineGate, run_within
from tests.functions.delay_proxy import DelayingProxy
from tests.grpc.api_support import api_config
from tests.services import POSTGRES_DSN, REDIS_ADDRESS, redis_keys, require_postgres, unique_prefix

TIMEOUT = 5.0


@pytest.fixture
def inline_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """One entry per read tried on the loop: whether it finished there."""
    tried: list[bool] = []

    def counted(budget_s: float, call: Callable[[], Any]) -> Any:
        try:
            result = run_within(budget_s, call)
        except Exception:
            tried.append(False)
            raise
        tried.append(True)
        return result

    monkeypatch.setattr(api_module, "run_within", counted)
    return tried


@pytest.fixture
def redis_prefix() -> Iterator[tuple[redis.Redis, str]]:
    with redis_keys("api-inline") as keys:
        yield keys


def _redis_store(prefix: str, address: str = REDIS_ADDRESS) -> dict[str, Any]:
    return {"store": {"type": "redis", "address": address, "key_prefix": prefix}}


async def _reads(client: Any, count: int, key: str = "k") -> list[bytes]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{client.server.grpc_port}") as channel:
        stub = runtime_pb2_grpc.RuntimeStub(channel)
        answers = []
        for _ in range(count):
            got = await stub.GetState(pb.GetStateRequest(store_name="store", key=key), timeout=TIMEOUT)
            answers.append(got.data)
        bulk = await stub.GetBulkState(pb.GetBulkStateRequest(store_name="store", keys=[key, "missing"]),
                                       timeout=TIMEOUT)
        assert [(item.key, item.data) for item in bulk.items] == [(key, answers[-1]), ("missing", b"")]
        return answers


async def test_redis_reads_answer_on_the_loop(serve, tmp_path: Path, redis_prefix, inline_calls) -> None:
    r, prefix = redis_prefix
    r.set(f"{prefix}||k", "v1")
    client = await serve(api_config(tmp_path, with_functions=False, state=_redis_store(prefix)))
    assert await _reads(client, 30) == [b"v1"] * 30
    # The first read finds no connected idle connection (it is made in a thread, which connects one);
    # from then on the reads finish on the loop (a slow one now and then sends a few to the threads).
    assert inline_calls.count(True) >= 15, inline_calls
    r.set(f"{prefix}||k", "v2")
    assert await _reads(client, 3) == [b"v2"] * 3  # read afresh each time


async def test_a_slow_redis_read_is_made_in_a_thread_and_closes_the_gate(serve, tmp_path: Path, redis_prefix,
                                                                       inline_calls) -> None:
    r, prefix = redis_prefix
    r.set(f"{prefix}||k", "v1")
    proxy = DelayingProxy(REDIS_ADDRESS, tmp_path / "delay")
    try:
        client = await serve(api_config(tmp_path, with_functions=False,
                                        state=_redis_store(prefix, f"127.0.0.1:{proxy.port}")))
        assert await _reads(client, 5) == [b"v1"] * 5
        proxy.delay(0.05)  # 50 ms a reply: past the 10 ms budget
        inline_calls.clear()
        assert await _reads(client, 6) == [b"v1"] * 6  # the same answers, from the API's threads
        assert inline_calls[0] is False  # tried on the loop, given up within the budget
        assert len(inline_calls) < 6  # then the gate stays closed for a while
    finally:
        proxy.close()


async def test_a_store_that_cannot_bound_its_wait_is_read_in_threads(serve, tmp_path: Path,
                                                                    inline_calls) -> None:
    require_postgres()
    table = unique_prefix("api_inline").replace("-", "_")
    store = {"store": {"type": "postgresql", "connection_string": POSTGRES_DSN, "table": table}}
    try:
        client = await serve(api_config(tmp_path, with_functions=False, state=store))
        assert await _reads(client, 40) == [b""] * 40
        # Refused on the loop at once; tried again ever more rarely (1, 2, 4, ... calls apart).
        assert inline_calls and not any(inline_calls)
        assert len(inline_calls) <= 8, inline_calls
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
            connection.execute(f'DROP TABLE IF EXISTS "{table}"')


def test_the_gate_backs_off_and_recovers() -> None:
    gate = InlineGate()
    assert gate.open()
    gate.failed()  # closed for the next call
    assert [gate.open() for _ in range(2)] == [False, True]
    gate.failed()  # now for two
    assert [gate.open() for _ in range(3)] == [False, False, True]
    gate.took(InlineGate.SLOW_S * 10)  # too slow counts as a failure: four
    assert [gate.open() for _ in range(5)] == [False] * 4 + [True]
    for _ in range(5):
        gate.took(0.0)  # quick calls bring the penalty back down
    gate.failed()
    assert [gate.open() for _ in range(2)] == [False, True]

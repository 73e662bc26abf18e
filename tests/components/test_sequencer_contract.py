"""The sequencer contract every backend keeps (Layotto's GetNextId/GetSegment), run against the
in-process counters and the real Redis: ids strictly increase per key under threads and, on Redis,
stay unique across processes; `bigger_than` seeds; segments; the WEAK-mode cache; and counters
stored where and as Layotto stores them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest
import redis

from host.components.base import ComponentContext
from host.components.errors import ComponentError, InvalidRequest, NotSupported
from host.components.sequencer import BACKENDS, Sequencer, WeakIds, sequencer_key
from host.components.sequencer import memory as memory_sequencer
from host.components.sequencer import redis as redis_sequencer
from tests.services import REDIS_ADDRESS, require_redis, unique_prefix

REPO = Path(__file__).resolve().parents[2]
PROC = Path(__file__).resolve().parent / "sequencer_proc.py"
MakeSequencer = Callable[..., Any]


@pytest.fixture
def token() -> str:
    """A unique prefix in every key a redis test makes, so cleanup finds them all."""
    return unique_prefix("seq")


@pytest.fixture
def admin(token: str) -> Iterator[redis.Redis]:
    """redis-py on the test server; deletes every key the test made."""
    require_redis()
    host, _, port = REDIS_ADDRESS.rpartition(":")
    client = redis.Redis(host=host, port=int(port), decode_responses=True)
    yield client
    stale = list(client.scan_iter(match=f"*{token}*", count=1000))
    if stale:
        client.delete(*stale)
    client.close()


@pytest.fixture(params=["memory", "redis"])
def make_sequencer(request: pytest.FixtureRequest) -> Iterator[MakeSequencer]:
    """Builds sequencers of the parametrised backend; redis ones use a unique literal key prefix."""
    made: list[Any] = []

    if request.param == "redis":
        request.getfixturevalue("admin")
        token: str = request.getfixturevalue("token")

        def make(**fields: Any) -> Any:
            fields.setdefault("key_prefix", token)
            sequencer = redis_sequencer.Backend(
                redis_sequencer.Config(type="redis", address=REDIS_ADDRESS, **fields), ComponentContext(name="seq"))
            made.append(sequencer)
            return sequencer
    else:
        def make(**fields: Any) -> Any:
            sequencer = memory_sequencer.Backend(memory_sequencer.Config(type="memory", **fields),
                                                 ComponentContext(name="seq"))
            made.append(sequencer)
            return sequencer

    yield make
    for sequencer in made:
        sequencer.close()


def _draw_on_threads(draw: Callable[[str], int], key: str, threads: int = 8, count: int = 200) -> list[list[int]]:
    ids: list[list[int]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def work(index: int) -> None:
        try:
            barrier.wait()
            for _ in range(count):
                ids[index].append(draw(key))
        except BaseException as error:
            errors.append(error)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(15)
    assert not errors
    return ids


def _strictly_increasing(ids: list[int]) -> bool:
    return all(a < b for a, b in zip(ids, ids[1:], strict=False))


def test_first_id_is_one_and_ids_increase_per_key(make_sequencer: MakeSequencer) -> None:
    sequencer: Sequencer = make_sequencer()
    assert [sequencer.next_id("orders") for _ in range(3)] == [1, 2, 3]
    assert sequencer.next_id("invoices") == 1  # keys are independent
    assert sequencer.next_id("orders") == 4


def test_strong_ids_under_threads_are_exactly_one_to_n(make_sequencer: MakeSequencer) -> None:
    sequencer: Sequencer = make_sequencer()
    ids = _draw_on_threads(sequencer.next_id, "threads")
    assert all(_strictly_increasing(per_thread) for per_thread in ids)
    assert sorted(i for per_thread in ids for i in per_thread) == list(range(1, 1601))


def test_bigger_than_seeds_a_fresh_key(make_sequencer: MakeSequencer) -> None:
    sequencer: Sequencer = make_sequencer(bigger_than={"seeded": 100, "zero": 0})
    assert sequencer.next_id("seeded") == 101
    assert sequencer.segment("seeded", 5) == (102, 106)
    assert sequencer.next_id("zero") == 1
    assert sequencer.next_id("unseeded") == 1


def test_segments_reserve_consecutive_ids(make_sequencer: MakeSequencer) -> None:
    sequencer: Sequencer = make_sequencer()
    assert sequencer.segment("seg", 10) == (1, 10)
    assert sequencer.next_id("seg") == 11
    assert sequencer.segment("seg", 1) == (12, 12)
    assert sequencer.segment("seg", 5) == (13, 17)


def test_segments_under_threads_tile_the_ids(make_sequencer: MakeSequencer) -> None:
    sequencer: Sequencer = make_sequencer()
    segments = _draw_on_threads(lambda key: sequencer.segment(key, 7)[0], "tiles", count=50)
    firsts = sorted(first for per_thread in segments for first in per_thread)
    assert firsts == list(range(1, 8 * 50 * 7, 7))  # disjoint, no gaps


@pytest.mark.parametrize("key", ["", "a||b"])
def test_invalid_keys_are_refused(make_sequencer: MakeSequencer, key: str) -> None:
    sequencer: Sequencer = make_sequencer()
    with pytest.raises(InvalidRequest):
        sequencer.next_id(key)
    with pytest.raises(InvalidRequest):
        sequencer.segment(key, 3)
    with pytest.raises(InvalidRequest):
        WeakIds(sequencer).next_id(key)


@pytest.mark.parametrize("size", [0, -1])
def test_a_segment_needs_a_positive_size(make_sequencer: MakeSequencer, size: int) -> None:
    with pytest.raises(InvalidRequest):
        make_sequencer().segment("seg", size)


def test_weak_ids_come_from_reserved_segments(make_sequencer: MakeSequencer) -> None:
    sequencer: Sequencer = make_sequencer()
    weak = WeakIds(sequencer, segment_size=100, refill_below=10)
    assert weak.next_id("weak") == 1
    assert sequencer.next_id("weak") == 101  # one whole segment was reserved
    ids = [weak.next_id("weak") for _ in range(89)]  # 2..90: 10 left, no refill yet
    assert sequencer.next_id("weak") == 102
    ids += [weak.next_id("weak") for _ in range(20)]  # 9 < 10 left after the 91st: the 92nd reserves more
    assert ids == list(range(2, 101)) + list(range(103, 113))
    assert sequencer.next_id("weak") == 203


def test_weak_ids_under_threads_are_unique_and_increasing(make_sequencer: MakeSequencer) -> None:
    sequencer: Sequencer = make_sequencer()
    weak = WeakIds(sequencer, segment_size=50, refill_below=10)
    ids = _draw_on_threads(weak.next_id, "weak-threads")
    assert all(_strictly_increasing(per_thread) for per_thread in ids)
    everything = [i for per_thread in ids for i in per_thread]
    assert len(set(everything)) == 1600
    # One process's segments are consecutive: nothing beyond the last reserved segment is skipped.
    assert sorted(everything) == list(range(1, 1601))


class _NoSegments:
    """A sequencer without GetSegment, as Layotto allows: WEAK mode asks it for every id."""

    def __init__(self) -> None:
        self.last = 0

    def next_id(self, key: str) -> int:
        self.last += 1
        return self.last

    def segment(self, key: str, size: int) -> tuple[int, int]:
        raise NotSupported("no segments")

    def health(self) -> tuple[bool, str]:
        return True, "stub"

    def close(self) -> None:
        pass


def test_weak_ids_fall_back_to_next_id_without_segments() -> None:
    weak = WeakIds(_NoSegments(), segment_size=10, refill_below=2)
    assert [weak.next_id("k") for _ in range(3)] == [1, 2, 3]


class _FailsAfterFirstSegment(_NoSegments):
    """Grants one segment, then its backend is gone."""

    def segment(self, key: str, size: int) -> tuple[int, int]:
        if self.last:
            raise ComponentError("backend down")
        self.last = size
        return 1, size


def test_weak_ids_serve_what_is_left_when_a_refill_fails() -> None:
    weak = WeakIds(_FailsAfterFirstSegment(), segment_size=5, refill_below=3)
    assert [weak.next_id("k") for _ in range(5)] == [1, 2, 3, 4, 5]  # refills failed while ids were left
    with pytest.raises(ComponentError, match="backend down"):
        weak.next_id("k")


@pytest.mark.parametrize("size, below", [(0, 0), (10, 11), (10, -1)])
def test_weak_ids_refuse_impossible_segment_settings(size: int, below: int) -> None:
    with pytest.raises(ValueError):
        WeakIds(_NoSegments(), segment_size=size, refill_below=below)


def test_key_layout_follows_layotto() -> None:
    context = ComponentContext(name="sequencer_demo", app_id="app1")
    assert sequencer_key("appid", context, "order") == "sequencer|||app1||order"
    assert sequencer_key("name", context, "order") == "sequencer|||sequencer_demo||order"
    assert sequencer_key("none", context, "order") == "sequencer|||order"
    assert sequencer_key("abc", context, "order") == "sequencer|||abc||order"


@pytest.mark.parametrize("fields", [{"key_prefix": "a||b"}, {"bigger_than": {"": 1}},
                                    {"bigger_than": {"a||b": 1}}, {"bigger_than": {"k": -1}}])
def test_bad_config_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        memory_sequencer.Config(type="in-memory", **fields)
    with pytest.raises(pydantic.ValidationError):
        redis_sequencer.Config(type="redis", **fields)


def test_backends_table_and_layotto_metadata() -> None:
    assert BACKENDS == {"memory": "host.components.sequencer.memory", "redis": "host.components.sequencer.redis"}
    fields = redis_sequencer.from_layotto({"redisHost": "10.0.0.1:6380", "keyPrefix": "name",
                                           "biggerThan": {"a": "5", "b": 7}})
    config = redis_sequencer.Config(type="redis", **fields)
    assert (config.address, config.key_prefix, config.bigger_than) == ("10.0.0.1:6380", "name", {"a": 5, "b": 7})
    assert memory_sequencer.from_layotto({"biggerThan": '{"a": "3"}'}) == {"bigger_than": {"a": 3}}
    assert memory_sequencer.from_layotto({}) == {}
    with pytest.raises(ValueError):
        memory_sequencer.from_layotto({"biggerThan": {"a": "many"}})


def _redis(token: str, context: ComponentContext | None = None, **fields: Any) -> redis_sequencer.Backend:
    fields.setdefault("key_prefix", token)
    return redis_sequencer.Backend(redis_sequencer.Config(type="redis", address=REDIS_ADDRESS, **fields),
                                   context or ComponentContext(name="seq"))


def test_redis_seeding_keeps_a_larger_current_value(admin: redis.Redis, token: str) -> None:
    first = _redis(token, bigger_than={"k": 100})
    assert [first.next_id("k") for _ in range(5)] == [101, 102, 103, 104, 105]
    second = _redis(token, bigger_than={"k": 50})  # another host starting later must not move it back
    assert second.next_id("k") == 106
    admin.set(f"sequencer|||{token}||low", "10")
    admin.set(f"sequencer|||{token}||high", "500")
    third = _redis(token, bigger_than={"low": 100, "high": 100})
    assert third.next_id("low") == 101
    assert third.next_id("high") == 501
    for sequencer in (first, second, third):
        sequencer.close()


@pytest.mark.parametrize("stored", ["abc", "1.5", ""])
def test_redis_seeding_a_non_numeric_value_fails_construction(admin: redis.Redis, token: str, stored: str) -> None:
    admin.set(f"sequencer|||{token}||bad", stored)
    with pytest.raises(ComponentError, match="bad"):
        _redis(token, bigger_than={"bad": 5})
    assert admin.get(f"sequencer|||{token}||bad") == stored


def test_redis_stores_counters_under_layottos_key(admin: redis.Redis, token: str) -> None:
    by_app = _redis(token, ComponentContext(name="seq", app_id=token), key_prefix="appid")
    by_name = _redis(token, ComponentContext(name=f"{token}-store"), key_prefix="name")
    try:
        assert [by_app.next_id("order") for _ in range(3)] == [1, 2, 3]
        assert by_name.segment("order", 20) == (1, 20)
        assert admin.get(f"sequencer|||{token}||order") == "3"
        assert admin.get(f"sequencer|||{token}-store||order") == "20"
        assert admin.type(f"sequencer|||{token}||order") == "string"
        admin.set(f"sequencer|||{token}||order", "41")  # Layotto advanced the shared counter
        assert by_app.next_id("order") == 42
    finally:
        by_app.close()
        by_name.close()


def _spawn(token: str, mode: str, key: str, threads: int, count: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(PROC), "--address", REDIS_ADDRESS, "--key-prefix", token,
         "--key", key, "--mode", mode, "--threads", str(threads), "--count", str(count)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)


def _across_processes(token: str, mode: str, key: str, draw: Callable[[str], int]) -> list[list[int]]:
    """Ids drawn at once by two helper processes (4 threads × 200 each) and 4 threads here (× 200)."""
    procs = [_spawn(token, mode, key, threads=4, count=200) for _ in range(2)]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", proc.stderr
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        ids = _draw_on_threads(draw, key, threads=4, count=200)
        for proc in procs:
            out, err = proc.communicate(timeout=15)
            assert proc.returncode == 0, err
            ids += json.loads(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert len(ids) == 12 and all(len(per_thread) == 200 for per_thread in ids)
    return ids


def test_redis_strong_ids_are_unique_across_processes(admin: redis.Redis, token: str) -> None:
    sequencer = _redis(token)
    try:
        ids = _across_processes(token, "strong", "procs", sequencer.next_id)
    finally:
        sequencer.close()
    assert all(_strictly_increasing(per_thread) for per_thread in ids)
    assert sorted(i for per_thread in ids for i in per_thread) == list(range(1, 2401))


def test_redis_weak_ids_are_unique_across_processes(admin: redis.Redis, token: str) -> None:
    sequencer = _redis(token)
    weak = WeakIds(sequencer, segment_size=50, refill_below=10)
    try:
        ids = _across_processes(token, "weak", "weak-procs", weak.next_id)
    finally:
        sequencer.close()
    assert all(_strictly_increasing(per_thread) for per_thread in ids)
    everything = [i for per_thread in ids for i in per_thread]
    assert len(set(everything)) == len(everything) == 2400
    # Each process reserved whole 50-id segments, so every id lies within the reserved range.
    counter = int(admin.get(f"sequencer|||{token}||weak-procs") or 0)
    assert max(everything) <= counter and counter % 50 == 0


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_redis_down_fails_quickly_with_component_error() -> None:
    config = redis_sequencer.Config(type="redis", address=f"127.0.0.1:{_closed_port()}", timeout_ms=200)
    started = time.monotonic()
    sequencer = redis_sequencer.Backend(config, ComponentContext(name="seq"))
    try:
        for call in (lambda: sequencer.next_id("k"), lambda: sequencer.segment("k", 5),
                     lambda: WeakIds(sequencer).next_id("k")):
            with pytest.raises(ComponentError) as raised:
                call()
            assert not isinstance(raised.value, InvalidRequest)
        healthy, detail = sequencer.health()
        assert not healthy and detail
    finally:
        sequencer.close()
    with pytest.raises(ComponentError):  # seeding needs the server at construction
        redis_sequencer.Backend(config.model_copy(update={"bigger_than": {"k": 5}}), ComponentContext(name="seq"))
    assert time.monotonic() - started < 3

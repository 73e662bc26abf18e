"""The lock contract every backend keeps (Layotto's TryLock/Unlock), run against the in-process
store and the real Redis: leases exclude other owners until unlocked or expired, unlock answers
tell the three outcomes apart, racing threads get exactly one winner, and Redis holds the lock
where and as Layotto would."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pydantic
import pytest
import redis

from host.components.base import ComponentContext
from host.components.errors import ComponentError, InvalidRequest
from host.components.lock import BACKENDS, LockStore, UnlockStatus, lock_key
from host.components.lock import memory as memory_lock
from host.components.lock import redis as redis_lock
from tests.services import REDIS_ADDRESS, require_redis, unique_prefix

MakeStore = Callable[..., Any]


@pytest.fixture
def token() -> str:
    """A unique prefix in every key a redis test makes, so cleanup finds them all."""
    return unique_prefix("lock")


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
def make_store(request: pytest.FixtureRequest) -> Iterator[MakeStore]:
    """Builds stores of the parametrised backend; redis ones use a unique literal key prefix."""
    made: list[Any] = []

    if request.param == "redis":
        request.getfixturevalue("admin")
        token: str = request.getfixturevalue("token")

        def make(context: ComponentContext | None = None, **fields: Any) -> Any:
            fields.setdefault("key_prefix", token)
            store = redis_lock.Backend(redis_lock.Config(type="redis", address=REDIS_ADDRESS, **fields),
                                       context or ComponentContext(name="locks"))
            made.append(store)
            return store
    else:
        def make(context: ComponentContext | None = None, **fields: Any) -> Any:
            store = memory_lock.Backend(memory_lock.Config(type="memory", **fields),
                                        context or ComponentContext(name="locks"))
            made.append(store)
            return store

    yield make
    for store in made:
        store.close()


def test_lock_then_unlock_frees_it_for_others(make_store: MakeStore) -> None:
    store: LockStore = make_store()
    assert store.try_lock("order-1", "alice", 10)
    assert store.unlock("order-1", "alice") is UnlockStatus.SUCCESS
    assert store.try_lock("order-1", "bob", 10)
    assert store.unlock("order-1", "bob") is UnlockStatus.SUCCESS


def test_a_held_lock_excludes_everyone_until_unlocked(make_store: MakeStore) -> None:
    store: LockStore = make_store()
    assert store.try_lock("order-2", "alice", 10)
    assert not store.try_lock("order-2", "bob", 10)
    assert not store.try_lock("order-2", "alice", 10)  # not reentrant, as in Layotto
    assert store.try_lock("order-3", "bob", 10)  # other resources are independent
    assert store.unlock("order-2", "alice") is UnlockStatus.SUCCESS
    assert store.try_lock("order-2", "bob", 10)


def test_a_lock_expires_after_its_lease(make_store: MakeStore) -> None:
    store: LockStore = make_store()
    assert store.try_lock("order-4", "alice", 1)
    assert not store.try_lock("order-4", "bob", 1)
    time.sleep(0.6)
    assert not store.try_lock("order-4", "bob", 1)  # still within the lease
    time.sleep(0.55)
    assert store.unlock("order-4", "alice") is UnlockStatus.LOCK_DOES_NOT_EXIST
    assert store.try_lock("order-4", "bob", 10)
    assert store.unlock("order-4", "bob") is UnlockStatus.SUCCESS


def test_unlock_by_another_owner_is_refused_and_keeps_the_lock(make_store: MakeStore) -> None:
    store: LockStore = make_store()
    assert store.try_lock("order-5", "alice", 10)
    assert store.unlock("order-5", "bob") is UnlockStatus.LOCK_BELONGS_TO_OTHERS
    assert not store.try_lock("order-5", "bob", 10)
    assert store.unlock("order-5", "alice") is UnlockStatus.SUCCESS


def test_unlock_of_a_free_lock_says_it_does_not_exist(make_store: MakeStore) -> None:
    store: LockStore = make_store()
    assert store.unlock("never-locked", "alice") is UnlockStatus.LOCK_DOES_NOT_EXIST
    assert store.try_lock("once", "alice", 10)
    assert store.unlock("once", "alice") is UnlockStatus.SUCCESS
    assert store.unlock("once", "alice") is UnlockStatus.LOCK_DOES_NOT_EXIST


@pytest.mark.parametrize("resource, owner, expire_s", [
    ("", "alice", 10), ("order", "", 10), ("order", "alice", 0), ("order", "alice", -5),
    ("a||b", "alice", 10),
])
def test_invalid_lock_requests_are_refused(make_store: MakeStore, resource: str, owner: str, expire_s: int) -> None:
    store: LockStore = make_store()
    with pytest.raises(InvalidRequest):
        store.try_lock(resource, owner, expire_s)
    if expire_s > 0:
        with pytest.raises(InvalidRequest):
            store.unlock(resource, owner)


def test_racing_threads_get_exactly_one_winner_per_resource(make_store: MakeStore) -> None:
    store: LockStore = make_store()
    threads, rounds = 16, 10
    barrier = threading.Barrier(threads)
    wins: list[list[int]] = [[] for _ in range(rounds)]
    errors: list[BaseException] = []

    def contend(index: int) -> None:
        try:
            for round_ in range(rounds):
                barrier.wait()
                if store.try_lock(f"race-{round_}", f"owner-{index}", 10):
                    wins[round_].append(index)
        except BaseException as error:
            errors.append(error)
            barrier.abort()

    workers = [threading.Thread(target=contend, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
    assert not errors
    assert [len(winners) for winners in wins] == [1] * rounds
    for round_, winners in enumerate(wins):  # the winner, and only it, holds the lock
        loser = (winners[0] + 1) % threads
        assert store.unlock(f"race-{round_}", f"owner-{loser}") is UnlockStatus.LOCK_BELONGS_TO_OTHERS
        assert store.unlock(f"race-{round_}", f"owner-{winners[0]}") is UnlockStatus.SUCCESS


def test_key_layout_follows_layotto() -> None:
    context = ComponentContext(name="lock_demo", app_id="app1")
    assert lock_key("appid", context, "res") == "lock|||app1||res"
    assert lock_key("", context, "res") == "lock|||app1||res"
    assert lock_key("name", context, "res") == "lock|||lock_demo||res"
    assert lock_key("none", context, "res") == "lock|||res"
    assert lock_key("abc", context, "res") == "lock|||abc||res"
    with pytest.raises(InvalidRequest):
        lock_key("appid", context, "a||b")


def test_a_key_prefix_holding_the_separator_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError):
        memory_lock.Config(type="memory", key_prefix="a||b")
    with pytest.raises(pydantic.ValidationError):
        redis_lock.Config(type="redis", key_prefix="a||b")


def test_backends_table_and_aliases() -> None:
    assert BACKENDS == {"memory": "host.components.lock.memory", "redis": "host.components.lock.redis"}
    assert memory_lock.Config(type="in-memory").key_prefix == "appid"
    assert memory_lock.from_layotto({"keyPrefix": "none"}) == {"key_prefix": "none"}
    fields = redis_lock.from_layotto({"redisHost": "10.0.0.1:6380", "redisPassword": "pw", "keyPrefix": "name"})
    config = redis_lock.Config(type="redis", **fields)
    assert (config.address, config.password, config.key_prefix) == ("10.0.0.1:6380", "pw", "name")


def test_redis_stores_the_owner_under_layottos_key_with_the_lease(admin: redis.Redis, token: str) -> None:
    # The default strategy (`appid`) with a unique app id, and `name` with a unique component name.
    by_app = redis_lock.Backend(redis_lock.Config(type="redis", address=REDIS_ADDRESS),
                                ComponentContext(name="locks", app_id=token))
    by_name = redis_lock.Backend(redis_lock.Config(type="redis", address=REDIS_ADDRESS, key_prefix="name"),
                                 ComponentContext(name=f"{token}-store"))
    try:
        assert by_app.try_lock("res", "owner-a", 7)
        assert by_name.try_lock("res", "owner-b", 3)
        assert admin.get(f"lock|||{token}||res") == "owner-a"
        assert admin.get(f"lock|||{token}-store||res") == "owner-b"
        assert 6000 < admin.pttl(f"lock|||{token}||res") <= 7000
        assert 2000 < admin.pttl(f"lock|||{token}-store||res") <= 3000
        # A lock Layotto took (same key, its owner) excludes this host's callers, and vice versa.
        admin.set(f"lock|||{token}||taken-by-layotto", "layotto-owner", px=10_000)
        assert not by_app.try_lock("taken-by-layotto", "owner-a", 5)
        assert by_app.unlock("taken-by-layotto", "layotto-owner") is UnlockStatus.SUCCESS
        assert admin.exists(f"lock|||{token}||taken-by-layotto") == 0
        assert by_app.unlock("res", "owner-a") is UnlockStatus.SUCCESS
        assert admin.exists(f"lock|||{token}||res") == 0
    finally:
        by_app.close()
        by_name.close()


def test_redis_unlock_of_a_key_holding_another_type_is_an_internal_error(admin: redis.Redis, token: str) -> None:
    store = redis_lock.Backend(redis_lock.Config(type="redis", address=REDIS_ADDRESS, key_prefix=token),
                               ComponentContext(name="locks"))
    try:
        admin.hset(f"lock|||{token}||odd", "field", "value")
        assert store.unlock("odd", "alice") is UnlockStatus.INTERNAL_ERROR
        assert not store.try_lock("odd", "alice", 5)  # the key exists: NX refuses it
    finally:
        store.close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_redis_down_fails_quickly_with_component_error() -> None:
    store = redis_lock.Backend(
        redis_lock.Config(type="redis", address=f"127.0.0.1:{_closed_port()}", timeout_ms=200),
        ComponentContext(name="locks"))
    try:
        started = time.monotonic()
        with pytest.raises(ComponentError) as raised:
            store.try_lock("res", "alice", 5)
        assert not isinstance(raised.value, InvalidRequest)
        with pytest.raises(ComponentError):
            store.unlock("res", "alice")
        healthy, detail = store.health()
        assert not healthy and detail
        assert time.monotonic() - started < 2
    finally:
        store.close()


def test_memory_health_and_sweep_of_expired_locks() -> None:
    store = memory_lock.Backend(memory_lock.Config(type="memory"), ComponentContext(name="locks"))
    assert store.health()[0]
    for index in range(memory_lock.Backend._SWEEP_MIN - 1):
        assert store.try_lock(f"short-{index}-{uuid.uuid4().hex}", "alice", 1)
    time.sleep(1.05)
    assert store.try_lock("live", "alice", 10)  # reaches the sweep threshold: expired ones go
    assert len(store._held) == 1
    assert not store.try_lock("live", "bob", 10)

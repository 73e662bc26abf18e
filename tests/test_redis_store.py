"""The redis state store's connections, against the real server at 127.0.0.1:6379: a connection the
server dropped is replaced without the caller noticing, an error reply is a ComponentError that
leaves the connection usable, and an exhausted pool makes a caller wait, then fail."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from host.components.base import ComponentContext
from host.components.errors import ComponentError
from host.components.state import StateItem, StateValue
from host.components.state import redis as redis_state
from tests.services import REDIS_ADDRESS, require_redis, unique_prefix

pytestmark = pytest.mark.redis


@pytest.fixture
def admin() -> Iterator[redis.Redis]:
    require_redis()
    host, _, port = REDIS_ADDRESS.rpartition(":")
    client = redis.Redis(host=host, port=int(port))
    client.token = unique_prefix("state-conn")  # type: ignore[attr-defined]
    yield client
    stale = list(client.scan_iter(match=f"*{client.token}*", count=1000))  # type: ignore[attr-defined]
    if stale:
        client.delete(*stale)
    client.close()


@pytest.fixture
def make_store() -> Iterator[Any]:
    made: list[redis_state.Backend] = []

    def make(**settings: Any) -> redis_state.Backend:
        made.append(redis_state.Backend(redis_state.Config(type="redis", address=REDIS_ADDRESS, **settings),
                                        ComponentContext(name="s")))
        return made[-1]

    yield make
    for store in made:
        store.close()


def test_an_error_reply_is_a_component_error_and_the_connection_stays_usable(admin: redis.Redis,
                                                                             make_store: Any) -> None:
    listed, fine = f"{admin.token}-list", f"{admin.token}-fine"  # type: ignore[attr-defined]
    admin.rpush(listed, "a")
    store = make_store(pool_size=1)
    store.set(StateItem(fine, b"ok"))
    with pytest.raises(ComponentError, match="WRONGTYPE"):
        store.get(listed)
    assert store.get(fine) == StateValue(b"ok", "1")  # the only pooled connection was given back


def test_a_connection_the_server_dropped_is_replaced_transparently(admin: redis.Redis, make_store: Any) -> None:
    k = f"{admin.token}-k"  # type: ignore[attr-defined]
    store = make_store(pool_size=1)
    store.set(StateItem(k, b"1"))
    name = f"victim-{admin.token}"  # type: ignore[attr-defined]
    store._client.command("CLIENT", "SETNAME", name)  # names the one pooled connection
    killed = [c for c in admin.client_list() if c.get("name") == name]
    assert killed, "the store's connection is not known to the server"
    admin.execute_command("CLIENT", "KILL", "ID", killed[0]["id"])
    assert store.get(k) == StateValue(b"1", "1")  # the dead connection was discarded, a fresh one used
    assert store.set(StateItem(k, b"2")) == "2"
    assert not [c for c in admin.client_list() if c.get("name") == name]


def test_a_caller_waits_for_a_connection_given_back_in_time(admin: redis.Redis, make_store: Any) -> None:
    store = make_store(pool_size=1, timeout_ms=2000)
    held = store._client._pool.acquire()
    timer = threading.Timer(0.1, store._client._pool.release, (held,))
    timer.start()
    started = time.monotonic()
    assert store.get(f"{admin.token}-missing") is None  # type: ignore[attr-defined]
    assert 0.05 < time.monotonic() - started < 1.5
    timer.join()


def test_an_exhausted_pool_fails_after_its_wait(admin: redis.Redis, make_store: Any) -> None:
    store = make_store(pool_size=1, timeout_ms=200)
    held = store._client._pool.acquire()
    assert held is not None
    started = time.monotonic()
    with pytest.raises(ComponentError, match="busy"):
        store.set(StateItem(f"{admin.token}-k", b"v"))  # type: ignore[attr-defined]
    assert 0.15 < time.monotonic() - started < 1.0
    store._client._pool.release(held)
    assert store.get(f"{admin.token}-k") is None  # type: ignore[attr-defined]  # served again, nothing written

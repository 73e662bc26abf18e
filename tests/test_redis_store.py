"""The Redis state store on its own, against the real server at 127.0.0.1:6379: replies, error
replies, a connection the server dropped, a pool that is exhausted."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis

from host.components.state.base import ComponentError
from host.components.state.redis_store import RedisStateStore
from host.config import RedisStoreConfig
from tests.test_demo import _redis_or_skip

pytestmark = pytest.mark.redis


@pytest.fixture
def admin() -> redis.Redis:
    return _redis_or_skip()


def _store(**settings) -> RedisStateStore:
    return RedisStateStore(RedisStoreConfig(type="redis", address="127.0.0.1:6379", **settings))


def test_get_answers_values_and_none(admin: redis.Redis) -> None:
    key = f"test-{uuid.uuid4()}"
    admin.set(key, b"\x00value\xff")
    store = _store()
    try:
        assert store.get(key) == b"\x00value\xff"
        assert store.get(key + "-missing") is None
        assert store.health() == (True, "redis 127.0.0.1:6379")
    finally:
        store.close()
        admin.delete(key)


def test_an_error_reply_is_a_component_error_and_the_connection_stays_usable(admin: redis.Redis) -> None:
    key = f"test-{uuid.uuid4()}"
    admin.rpush(key, "a")  # GET on a list: WRONGTYPE
    admin.set(key + "-s", "ok")
    store = _store(pool_size=1)
    try:
        with pytest.raises(ComponentError, match="WRONGTYPE"):
            store.get(key)
        assert store.get(key + "-s") == b"ok"  # the only pooled connection was given back
    finally:
        store.close()
        admin.delete(key, key + "-s")


def test_a_connection_the_server_dropped_is_replaced_transparently(admin: redis.Redis) -> None:
    key = f"test-{uuid.uuid4()}"
    admin.set(key, "1")
    store = _store(pool_size=1)
    try:
        assert store.get(key) == b"1"
        name = f"victim-{uuid.uuid4()}"
        connection = store._pool.acquire()
        connection.send_command("CLIENT", "SETNAME", name)
        assert connection.read_response() == b"OK"
        store._pool.release(connection)
        killed = [c for c in admin.client_list() if c.get("name") == name]
        assert killed, "the store's connection is not known to the server"
        admin.execute_command("CLIENT", "KILL", "ID", killed[0]["id"])
        assert store.get(key) == b"1"  # the dead connection was discarded, a fresh one used
    finally:
        store.close()
        admin.delete(key)


def test_a_caller_waits_for_a_connection_given_back_in_time(admin: redis.Redis) -> None:
    store = _store(pool_size=1, timeout_ms=2000)
    try:
        held = store._pool.acquire()
        timer = threading.Timer(0.1, store._pool.release, (held,))
        timer.start()
        started = time.monotonic()
        assert store.get(f"test-{uuid.uuid4()}") is None
        assert 0.05 < time.monotonic() - started < 1.5
        timer.join()
    finally:
        store.close()


def test_an_exhausted_pool_fails_after_its_wait(admin: redis.Redis) -> None:
    store = _store(pool_size=1, timeout_ms=200)
    try:
        held = store._pool.acquire()
        assert held is not None
        with pytest.raises(ComponentError, match="busy"):
            store.get("anything")
        store._pool.release(held)
        assert store.get(f"test-{uuid.uuid4()}") is None  # and served again once it is back
    finally:
        store.close()


def test_an_unreachable_server_is_a_component_error() -> None:
    store = RedisStateStore(RedisStoreConfig(type="redis", address="127.0.0.1:1", timeout_ms=300))
    try:
        with pytest.raises(ComponentError, match="127.0.0.1:1"):
            store.get("k")
        ok, why = store.health()
        assert not ok and "127.0.0.1:1" in why
    finally:
        store.close()

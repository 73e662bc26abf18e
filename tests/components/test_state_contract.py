"""The state contract every backend keeps (Dapr's semantics), run against the in-process store, the
real Redis and the real PostgreSQL: values and ETags, bulk calls, ETag conflicts, first-write,
invalid ETags and keys, transactions (and what each backend promises when one fails), TTLs, key
prefix strategies, and racing writers that lose no update. Then what is particular to each
backend: seeds, config and Layotto metadata, a server that is down, a dropped or stuck connection."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pydantic
import pytest
import redis

from host.components.base import ComponentContext
from host.components.errors import ComponentError, EtagInvalid, EtagMismatch, InvalidRequest
from host.components.state import (
    BACKENDS,
    BulkValue,
    Delete,
    DeleteItem,
    PrefixedStore,
    StateItem,
    StateStore,
    StateValue,
    Upsert,
)
from host.components.state import memory as memory_state
from host.components.state import postgresql as postgresql_state
from host.components.state import redis as redis_state
from tests.services import POSTGRES_DSN, REDIS_ADDRESS, require_postgres, require_redis, unique_prefix

# What a failing transaction leaves: memory and postgresql roll back; Redis's MULTI/EXEC does not.
ATOMIC = {"memory": True, "redis": False, "postgresql": True}


@dataclass
class Env:
    """One backend under test: `raw` stores keys as given; `store` is it behind a literal key prefix
    unique to the test (the test's keys in a shared Redis carry `token`, and are deleted after)."""

    backend: str
    token: str
    make_raw: Callable[[], Any]
    raw: Any = None
    store: StateStore = field(init=False)

    def __post_init__(self) -> None:
        self.raw = self.make_raw()
        self.store = PrefixedStore(self.raw, self.token, ComponentContext(name="statestore"))


@pytest.fixture
def admin() -> Iterator[redis.Redis]:
    require_redis()
    host, _, port = REDIS_ADDRESS.rpartition(":")
    client = redis.Redis(host=host, port=int(port))
    yield client
    client.close()


@pytest.fixture(params=["memory", "redis", "postgresql"])
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    token = unique_prefix("state")
    made: list[Any] = []

    if request.param == "memory":
        def make() -> Any:
            made.append(memory_state.Backend(memory_state.Config(type="memory"), ComponentContext(name="s")))
            return made[-1]

        def cleanup() -> None:
            pass
    elif request.param == "redis":
        admin: redis.Redis = request.getfixturevalue("admin")

        def make() -> Any:
            made.append(redis_state.Backend(redis_state.Config(type="redis", address=REDIS_ADDRESS),
                                            ComponentContext(name="s")))
            return made[-1]

        def cleanup() -> None:
            stale = list(admin.scan_iter(match=f"*{token}*", count=1000))
            if stale:
                admin.delete(*stale)
    else:
        require_postgres()
        table = token.replace("-", "_")

        def make() -> Any:
            made.append(postgresql_state.Backend(
                postgresql_state.Config(type="postgresql", connection_string=POSTGRES_DSN, table=table),
                ComponentContext(name="s")))
            return made[-1]

        def cleanup() -> None:
            with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
                connection.execute(f'DROP TABLE IF EXISTS "{table}"')

    try:
        yield Env(request.param, token, make)
    finally:
        for store in made:
            store.close()
        cleanup()


def test_set_get_delete(env: Env) -> None:
    store = env.store
    assert store.get("order") is None
    assert store.set(StateItem("order", b"\x00first\xff")) == "1"
    assert store.get("order") == StateValue(b"\x00first\xff", "1")
    assert store.set(StateItem("order", b"second")) == "2"
    assert store.get("order") == StateValue(b"second", "2")
    store.delete(DeleteItem("order"))
    assert store.get("order") is None
    store.delete(DeleteItem("order"))  # a missing key deletes fine
    store.delete(DeleteItem("never-written", etag="7"))  # with an ETag too (Dapr)
    assert store.health()[0]


def test_bulk_get_set_delete(env: Env) -> None:
    store = env.store
    assert store.bulk_get([]) == []
    store.bulk_set([StateItem("a", b"A"), StateItem("b", b"B"), StateItem("c", b"C")])
    store.set(StateItem("b", b"B2"))
    assert store.bulk_get(["c", "missing", "b", "a"]) == [
        BulkValue("c", b"C", "1"), BulkValue("missing", None, None), BulkValue("b", b"B2", "2"),
        BulkValue("a", b"A", "1")]
    store.bulk_delete([DeleteItem("a"), DeleteItem("b", etag="2"), DeleteItem("missing")])
    assert store.bulk_get(["a", "b", "c"]) == [
        BulkValue("a", None, None), BulkValue("b", None, None), BulkValue("c", b"C", "1")]


def test_a_bulk_set_applies_the_good_items_and_reports_the_conflict(env: Env) -> None:
    store = env.store
    store.set(StateItem("a", b"A"))
    store.set(StateItem("b", b"B"))
    with pytest.raises(EtagMismatch, match="1 item"):
        store.bulk_set([StateItem("a", b"A2"), StateItem("b", b"B2", etag="9"), StateItem("c", b"C")])
    assert [r.value for r in store.bulk_get(["a", "b", "c"])] == [b"A2", b"B", b"C"]
    with pytest.raises(EtagMismatch):
        store.bulk_delete([DeleteItem("a"), DeleteItem("b", etag="9"), DeleteItem("c")])
    assert [r.value for r in store.bulk_get(["a", "b", "c"])] == [None, b"B", None]


def test_etag_conflicts_on_set_and_delete(env: Env) -> None:
    store = env.store
    etag = store.set(StateItem("k", b"v1"))
    newer = store.set(StateItem("k", b"v2", etag=etag))
    assert newer != etag
    with pytest.raises(EtagMismatch):
        store.set(StateItem("k", b"stale", etag=etag))
    with pytest.raises(EtagMismatch):
        store.delete(DeleteItem("k", etag=etag))
    assert store.get("k") == StateValue(b"v2", newer)
    store.delete(DeleteItem("k", etag=newer))
    assert store.get("k") is None


def test_first_write_makes_later_writes_need_the_etag(env: Env) -> None:
    store = env.store
    etag = store.set(StateItem("fw", b"v1", concurrency="first-write"))
    with pytest.raises(EtagMismatch):
        store.set(StateItem("fw", b"no etag"))
    with pytest.raises(EtagMismatch):
        store.set(StateItem("fw", b"no etag", concurrency="first-write"))
    etag = store.set(StateItem("fw", b"v2", etag=etag))
    with pytest.raises(EtagMismatch):  # the flag stays with the key
        store.set(StateItem("fw", b"no etag"))
    assert store.get("fw") == StateValue(b"v2", etag)
    store.delete(DeleteItem("fw"))  # a delete without an ETag is not refused (Dapr)
    store.set(StateItem("fw", b"fresh"))
    store.set(StateItem("fw", b"last write wins"))  # a new key: no flag
    store.set(StateItem("lw", b"1"))
    assert store.set(StateItem("lw", b"2")) == "2"


def test_a_write_with_an_etag_to_a_missing_key_creates_it(env: Env) -> None:
    assert env.store.set(StateItem("new", b"v", etag="41")) == "1"
    assert env.store.get("new") == StateValue(b"v", "1")


@pytest.mark.parametrize("etag", ["abc", "-1", "1.5", " 1", "99999999999999999999"])
def test_an_etag_no_backend_issues_is_invalid(env: Env, etag: str) -> None:
    store = env.store
    with pytest.raises(EtagInvalid):
        store.set(StateItem("k", b"v", etag=etag))
    assert store.get("k") is None
    store.set(StateItem("k", b"v"))
    with pytest.raises(EtagInvalid):
        store.delete(DeleteItem("k", etag=etag))
    with pytest.raises(EtagInvalid):
        store.transact([Upsert(StateItem("other", b"x")), Delete(DeleteItem("k", etag=etag))])
    assert store.bulk_get(["k", "other"]) == [BulkValue("k", b"v", "1"), BulkValue("other", None, None)]


@pytest.mark.parametrize("key", ["", "app||key"])
def test_empty_and_illegal_keys_are_refused(env: Env, key: str) -> None:
    store = env.store
    calls: list[Callable[[], object]] = [
        lambda: store.get(key), lambda: store.bulk_get(["fine", key]), lambda: store.set(StateItem(key, b"v")),
        lambda: store.bulk_set([StateItem("fine", b"v"), StateItem(key, b"v")]),
        lambda: store.delete(DeleteItem(key)), lambda: store.bulk_delete([DeleteItem(key)]),
        lambda: store.transact([Upsert(StateItem("fine", b"v")), Delete(DeleteItem(key))])]
    for call in calls:
        with pytest.raises(InvalidRequest):
            call()
    assert store.get("fine") is None  # a batch with a bad key wrote nothing
    with pytest.raises(InvalidRequest):
        env.raw.set(StateItem("", b"v"))  # the backend itself refuses an empty key


def test_a_transaction_commits_every_operation(env: Env) -> None:
    store = env.store
    store.set(StateItem("gone", b"x"))
    etag = store.set(StateItem("kept", b"1"))
    store.transact([
        Upsert(StateItem("new", b"n")), Upsert(StateItem("kept", b"2", etag=etag)), Delete(DeleteItem("gone")),
        Upsert(StateItem("twice", b"a")), Upsert(StateItem("twice", b"b", etag="1"))])  # sees the one before
    assert store.bulk_get(["new", "kept", "gone", "twice"]) == [
        BulkValue("new", b"n", "1"), BulkValue("kept", b"2", "2"), BulkValue("gone", None, None),
        BulkValue("twice", b"b", "2")]
    store.transact([])


def test_a_failing_transaction_does_what_the_backend_promises(env: Env) -> None:
    store = env.store
    store.set(StateItem("guarded", b"old"))
    store.set(StateItem("guarded", b"current"))
    with pytest.raises(EtagMismatch):
        store.transact([Upsert(StateItem("before", b"b")), Upsert(StateItem("guarded", b"lost", etag="1")),
                        Delete(DeleteItem("guarded", etag="1")), Upsert(StateItem("after", b"a"))])
    assert store.get("guarded") == StateValue(b"current", "2")
    applied = [r.value is not None for r in store.bulk_get(["before", "after"])]
    assert applied == ([False, False] if ATOMIC[env.backend] else [True, True])


def test_ttl_expires_keys(env: Env) -> None:
    store = env.store
    store.set(StateItem("short", b"v", ttl_s=1))
    store.set(StateItem("kept-ttl", b"v", ttl_s=1))
    store.set(StateItem("kept-ttl", b"v2"))  # no ttl: the expiry it had stays (Dapr)
    store.set(StateItem("persisted", b"v", ttl_s=1))
    store.set(StateItem("persisted", b"v2", ttl_s=0))  # <= 0: persistent again
    store.set(StateItem("plain", b"v"))
    assert store.get("short") == StateValue(b"v", "1")
    deadline = time.monotonic() + 3
    while any(r.value is not None for r in store.bulk_get(["short", "kept-ttl"])):
        assert time.monotonic() < deadline, "keys with a 1 s TTL still there after 3 s"
        time.sleep(0.05)
    assert [r.value for r in store.bulk_get(["persisted", "plain"])] == [b"v2", b"v"]
    assert store.set(StateItem("short", b"again", etag="1")) == "1"  # an expired key starts afresh


@pytest.mark.parametrize("strategy, stored", [
    ("none", "{key}"), ("", "{key}"), ("appid", "{app}||{key}"), ("AppId", "{app}||{key}"),
    ("name", "{name}||{key}"), ("NAME", "{name}||{key}"), ("{token}-literal", "{token}-literal||{key}")])
def test_key_prefix_strategies(env: Env, strategy: str, stored: str) -> None:
    context = ComponentContext(name=f"{env.token}-store", app_id=f"{env.token}-app")
    names = {"app": context.app_id, "name": context.name, "token": env.token, "key": f"{env.token}-k"}
    store = PrefixedStore(env.raw, strategy.format(**names), context)
    key = names["key"]
    store.set(StateItem(key, b"v"))
    assert env.raw.get(stored.format(**names)) == StateValue(b"v", "1")
    assert store.bulk_get([key]) == [BulkValue(key, b"v", "1")]  # the prefix stripped off
    other = PrefixedStore(env.raw, f"{env.token}-other", context)
    assert other.get(key) is None
    store.transact([Delete(DeleteItem(key))])
    assert env.raw.get(stored.format(**names)) is None


def test_racing_writers_with_etag_retries_lose_no_increment(env: Env) -> None:
    store = env.store
    store.set(StateItem("counter", b"0"))
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def increment() -> None:
        try:
            start.wait()
            for _ in range(25):
                while True:
                    current = store.get("counter")
                    assert current is not None
                    try:
                        store.set(StateItem("counter", b"%d" % (int(current.value) + 1), etag=current.etag))
                        break
                    except EtagMismatch:
                        continue
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=increment) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    final = store.get("counter")
    assert final is not None and final.value == b"200" and final.etag == "201"


# --- what is particular to each backend -------------------------------------------------------


def test_backends_are_listed_and_configs_accept_their_names() -> None:
    assert set(BACKENDS) == {"memory", "redis", "postgresql"}
    assert memory_state.Config(type="in-memory").key_prefix == "none"
    assert postgresql_state.Config(type="postgres").table == "state"
    for bad in ({"table": "state; drop table x"}, {"table": "a.b.c"}, {"key_prefix": "a||b"},
                {"connection_string": "host='unterminated"}):
        with pytest.raises(pydantic.ValidationError):
            postgresql_state.Config(type="postgresql", **bad)
    with pytest.raises(pydantic.ValidationError):
        redis_state.Config(type="redis", address="no-port")


def test_layotto_metadata() -> None:
    assert redis_state.Config(type="redis", **redis_state.from_layotto(
        {"redisHost": "10.0.0.1:6380", "redisPassword": "pw", "keyPrefix": "appid", "poolSize": "4"})) == \
        redis_state.Config(type="redis", address="10.0.0.1:6380", password="pw", key_prefix="appid", pool_size=4)
    assert postgresql_state.from_layotto({
        "connectionString": "host=db user=u", "tableName": "mystate", "keyPrefix": "name", "timeout": "2s",
        "maxConns": "3", "cleanupIntervalInSeconds": "60"}) == {
        "connection_string": "host=db user=u", "table": "mystate", "key_prefix": "name", "timeout_ms": 2000,
        "pool_size": 3, "cleanup_interval_s": 60}
    assert postgresql_state.from_layotto({"timeoutInSeconds": "7", "cleanupInterval": "1m"}) == {
        "timeout_ms": 7000, "cleanup_interval_s": 60}
    assert memory_state.from_layotto({"keyPrefix": "lit"}) == {"key_prefix": "lit"}
    assert memory_state.from_layotto({}) == {}


def test_memory_seeds_read_with_etag_1_under_the_configured_prefix() -> None:
    config = memory_state.Config(type="memory", seed={"book1": "100"}, key_prefix="appid")
    context = ComponentContext(name="s", app_id="app1")
    backend = memory_state.Backend(config, context)
    assert backend.get("app1||book1") == StateValue(b"100", "1")
    assert PrefixedStore(backend, config.key_prefix, context).get("book1") == StateValue(b"100", "1")


@pytest.mark.parametrize("backend", ["redis", "postgresql"])
def test_a_down_backend_fails_fast_and_reports_unhealthy(backend: str) -> None:
    context = ComponentContext(name="s")
    store: Any
    if backend == "redis":
        store = redis_state.Backend(redis_state.Config(type="redis", address="127.0.0.1:1", timeout_ms=300), context)
    else:
        store = postgresql_state.Backend(postgresql_state.Config(
            type="postgresql", connection_string="host=127.0.0.1 port=1 dbname=test user=postgres",
            timeout_ms=300), context)
    try:
        for call in (lambda: store.get("k"), lambda: store.set(StateItem("k", b"v")),
                     lambda: store.transact([Upsert(StateItem("k", b"v"))])):
            started = time.monotonic()
            with pytest.raises(ComponentError, match="127.0.0.1:1.*refused"):
                call()
            assert time.monotonic() - started < 1.0
        started = time.monotonic()
        healthy, detail = store.health()
        assert not healthy and "127.0.0.1:1" in detail and time.monotonic() - started < 1.0
    finally:
        store.close()


@pytest.fixture
def pg_table() -> Iterator[str]:
    require_postgres()
    table = unique_prefix("state").replace("-", "_")
    yield table
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
        connection.execute(f'DROP TABLE IF EXISTS "{table}"')


def test_postgresql_replaces_a_connection_the_server_dropped(pg_table: str) -> None:
    store = postgresql_state.Backend(postgresql_state.Config(
        type="postgresql", connection_string=POSTGRES_DSN + " application_name=" + pg_table, table=pg_table),
        ComponentContext(name="s"))
    try:
        store.set(StateItem("k", b"v"))
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as admin:
            killed = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE application_name = %s", (pg_table,)).fetchall()
        assert killed and all(row[0] for row in killed)
        assert store.get("k") == StateValue(b"v", "1")
        assert store.health()[0]
    finally:
        store.close()


def test_postgresql_a_stuck_statement_times_out_as_a_component_error(pg_table: str) -> None:
    store = postgresql_state.Backend(postgresql_state.Config(
        type="postgresql", connection_string=POSTGRES_DSN, table=pg_table, timeout_ms=300),
        ComponentContext(name="s"))
    try:
        store.set(StateItem("locked", b"v"))
        with psycopg.connect(POSTGRES_DSN) as holder:  # a transaction holding the row lock
            holder.execute(f'SELECT 1 FROM "{pg_table}" WHERE key = %s FOR UPDATE', ("locked",))
            started = time.monotonic()
            with pytest.raises(ComponentError, match="statement timeout"):
                store.set(StateItem("locked", b"w"))
            assert time.monotonic() - started < 1.5
            holder.rollback()
        assert store.set(StateItem("locked", b"w")) == "2"  # and the pool serves again
    finally:
        store.close()

"""The redis state store keeps Dapr's layout, checked with redis-py on the real server: what a set
writes (a hash with `data`, `version` counting from 1, `first-write` when flagged, the TTL), that a
hash written the way a Dapr sidecar writes it reads back with its version as ETag and obeys its
flag, and that a plain string written by something else reads with ETag "" (Layotto's demo)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from host.components.base import ComponentContext
from host.components.errors import ComponentError, EtagMismatch
from host.components.state import BulkValue, Delete, DeleteItem, PrefixedStore, StateItem, StateValue, Upsert
from host.components.state import redis as redis_state
from tests.services import REDIS_ADDRESS, require_redis, unique_prefix


@pytest.fixture
def admin() -> Iterator[redis.Redis]:
    """redis-py on the test server; deletes every key the test made (all carry `admin.token`)."""
    require_redis()
    host, _, port = REDIS_ADDRESS.rpartition(":")
    client = redis.Redis(host=host, port=int(port))
    client.token = unique_prefix("state-layout")  # type: ignore[attr-defined]
    yield client
    stale = list(client.scan_iter(match=f"*{client.token}*", count=1000))  # type: ignore[attr-defined]
    if stale:
        client.delete(*stale)
    client.close()


@pytest.fixture
def store(admin: redis.Redis) -> Iterator[redis_state.Backend]:
    backend = redis_state.Backend(redis_state.Config(type="redis", address=REDIS_ADDRESS),
                                  ComponentContext(name="s"))
    yield backend
    backend.close()


def key(admin: redis.Redis, name: str) -> str:
    return f"{admin.token}-{name}"  # type: ignore[attr-defined]


def test_a_set_writes_a_hash_with_data_and_a_version_counting_from_1(
        admin: redis.Redis, store: redis_state.Backend) -> None:
    k = key(admin, "plain")
    store.set(StateItem(k, b"\x00one"))
    assert admin.type(k) == b"hash"
    assert admin.hgetall(k) == {b"data": b"\x00one", b"version": b"1"}
    store.set(StateItem(k, b"two", etag="1"))
    assert admin.hgetall(k) == {b"data": b"two", b"version": b"2"}
    assert admin.ttl(k) == -1


def test_first_write_concurrency_sets_the_first_write_field(admin: redis.Redis, store: redis_state.Backend) -> None:
    k = key(admin, "fw")
    store.set(StateItem(k, b"v", concurrency="first-write"))
    assert admin.hgetall(k) == {b"data": b"v", b"version": b"1", b"first-write": b"0"}


def test_ttl_is_the_keys_expiry_and_zero_removes_it(admin: redis.Redis, store: redis_state.Backend) -> None:
    k = key(admin, "ttl")
    store.set(StateItem(k, b"v", ttl_s=100))
    assert 95 <= admin.ttl(k) <= 100
    store.set(StateItem(k, b"v"))
    assert 95 <= admin.ttl(k) <= 100  # a write without a TTL keeps the expiry
    store.set(StateItem(k, b"v", ttl_s=0))
    assert admin.ttl(k) == -1


def test_a_hash_written_as_dapr_writes_it_reads_back_with_its_version(
        admin: redis.Redis, store: redis_state.Backend) -> None:
    k = key(admin, "dapr")
    admin.hset(k, mapping={"data": b'{"n":1}', "version": 7})
    assert store.get(k) == StateValue(b'{"n":1}', "7")
    assert store.bulk_get([k]) == [BulkValue(k, b'{"n":1}', "7")]
    with pytest.raises(EtagMismatch):
        store.set(StateItem(k, b"x", etag="6"))
    assert store.set(StateItem(k, b"x", etag="7")) == "8"
    assert admin.hget(k, "version") == b"8"

    flagged = key(admin, "dapr-fw")
    admin.hset(flagged, mapping={"data": b"v", "version": 3, "first-write": 0})
    with pytest.raises(EtagMismatch):
        store.set(StateItem(flagged, b"no etag"))
    store.delete(DeleteItem(flagged, etag="3"))
    assert admin.exists(flagged) == 0


def test_a_dapr_prefixed_key_is_where_a_dapr_sidecar_keeps_it(admin: redis.Redis, store: redis_state.Backend) -> None:
    app = key(admin, "app")
    PrefixedStore(store, "appid", ComponentContext(name="s", app_id=app)).set(StateItem("order", b"v"))
    assert admin.hgetall(f"{app}||order") == {b"data": b"v", b"version": b"1"}


def test_a_plain_string_reads_with_no_etag_and_is_replaced_by_a_write(
        admin: redis.Redis, store: redis_state.Backend) -> None:
    k = key(admin, "book1")
    admin.set(k, "100")  # Layotto's demo: redis-cli set book1 100
    assert store.get(k) == StateValue(b"100", "")
    assert store.bulk_get([k, key(admin, "none")]) == [BulkValue(k, b"100", ""),
                                                       BulkValue(key(admin, "none"), None, None)]
    assert store.set(StateItem(k, b"101")) == "1"  # replaced by a hash, as Dapr's script does
    assert admin.hgetall(k) == {b"data": b"101", b"version": b"1"}
    admin.set(k, "100")
    store.delete(DeleteItem(k, etag="5"))  # a non-hash is deleted whatever the ETag (Dapr)
    assert admin.exists(k) == 0


def test_a_key_of_another_type_is_an_error_of_that_key_only(admin: redis.Redis, store: redis_state.Backend) -> None:
    listed, fine = key(admin, "list"), key(admin, "fine")
    admin.rpush(listed, "a")
    store.set(StateItem(fine, b"v"))
    with pytest.raises(ComponentError, match="WRONGTYPE"):
        store.get(listed)
    results = store.bulk_get([listed, fine])
    assert results[0].value is None and "WRONGTYPE" in results[0].error
    assert results[1] == BulkValue(fine, b"v", "1")


def test_transactions_load_their_scripts_even_after_a_script_flush(
        admin: redis.Redis, store: redis_state.Backend) -> None:
    a, b = key(admin, "tx-a"), key(admin, "tx-b")
    admin.script_flush()  # EVALSHA inside MULTI cannot fall back to the source: it must be loaded there
    store.transact([Upsert(StateItem(a, b"1")), Upsert(StateItem(b, b"2", ttl_s=100))])
    assert admin.hgetall(a) == {b"data": b"1", b"version": b"1"}
    assert 95 <= admin.ttl(b) <= 100
    admin.script_flush()
    store.transact([Delete(DeleteItem(a, etag="1")), Upsert(StateItem(b, b"3", etag="1"))])
    assert admin.exists(a) == 0 and admin.hget(b, "version") == b"2"
    admin.script_flush()
    assert store.set(StateItem(a, b"again")) == "1"  # EVALSHA outside MULTI falls back to EVAL


def test_a_plain_string_read_again_follows_what_others_write_since(admin: redis.Redis,
                                                                    store: redis_state.Backend) -> None:
    # A key seen as a plain string is read with one GET next time; whatever replaces it must show.
    key = f"{admin.token}-book"  # type: ignore[attr-defined]
    admin.set(key, "100")
    assert store.get(key) == StateValue(b"100", "") and store.get(key) == StateValue(b"100", "")
    admin.delete(key)
    admin.hset(key, mapping={"data": b"7", "version": 3})  # a Dapr sidecar's write
    assert store.get(key) == StateValue(b"7", "3")
    admin.delete(key)
    assert store.get(key) is None
    admin.set(key, "5")
    assert store.get(key) == StateValue(b"5", "")
    admin.delete(key)
    assert store.get(key) is None  # deleted while remembered as a string

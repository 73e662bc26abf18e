"""The configuration contract every backend keeps (Layotto's and Dapr's configuration API), run
against a real file (TOML and JSON) and the real Redis: saved items come back with versions that
change on every save, group and label are part of an item's identity, and subscribers hear about
every change within 2 s, including changes other writers make behind the store's back (another
process replacing or rewriting the file; redis-py writing Dapr's `value||version` strings)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from host.components.base import ComponentContext
from host.components.configuration import BACKENDS, ConfigItem, ConfigurationStore
from host.components.configuration import file as file_config
from host.components.configuration import redis as redis_config
from host.components.configuration._file_format import Entry, dump, parse
from host.components.errors import ComponentError, InvalidRequest
from tests.services import REDIS_ADDRESS, require_redis, unique_prefix

NOTIFY = "notify-keyspace-events"
DEADLINE_S = 2.0


class Recorder:
    """An `on_change` that remembers every item it was called with, in order."""

    def __init__(self) -> None:
        self.items: list[ConfigItem] = []
        self.calls = 0
        self._changed = threading.Condition()

    def __call__(self, items: list[ConfigItem]) -> None:
        with self._changed:
            self.items.extend(items)
            self.calls += 1
            self._changed.notify_all()

    def wait_for(self, matches: Callable[[ConfigItem], bool], timeout_s: float = DEADLINE_S) -> ConfigItem:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                found = next((item for item in self.items if matches(item)), None)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no matching change within {timeout_s}s; saw {self.items}")
                self._changed.wait(remaining)

    def value_of(self, key: str, value: str) -> ConfigItem:
        return self.wait_for(lambda item: item.key == key and item.value == value)

    def deletion_of(self, key: str) -> ConfigItem:
        return self.wait_for(lambda item: item.key == key and item.metadata.get("deleted") == "true")


class Harness:
    """Builds stores of one backend and writes to that backend the way another program would."""

    def __init__(self, kind: str, tmp_path: Path, admin: redis.Redis | None):
        self.kind = kind
        self.tmp_path = tmp_path
        self.admin = admin
        self.prefix = unique_prefix("config") + ":"
        self.made: list[Any] = []
        self.path = tmp_path / f"config.{kind}"  # kind is "toml" or "json" for files

    def make(self, **fields: Any) -> Any:
        context = ComponentContext(name=f"config-{self.kind}", base_dir=self.tmp_path)
        if self.kind == "redis":
            fields.setdefault("key_prefix", self.prefix)
            store: Any = redis_config.Backend(redis_config.Config(type="redis", address=REDIS_ADDRESS,
                                                                  timeout_ms=1000, **fields), context)
        else:
            store = file_config.Backend(file_config.Config(type="file", path=self.path.name, **fields), context)
        self.made.append(store)
        return store

    def write_document(self, values: dict[str, str]) -> str:
        """The file's text for `values` written as a person would (plain strings), not by the store."""
        if self.kind == "json":
            return json.dumps(values)
        return "".join(f"{json.dumps(name)} = {json.dumps(value)}\n" for name, value in values.items())

    def external_set(self, key: str, value: str, version: str = "7") -> None:
        """Another writer: for a file, a separate process renames a new version over it (as deploy
        tools do); for redis, redis-py SETs Dapr's `value||version`."""
        if self.kind == "redis":
            assert self.admin is not None
            self.admin.set(self.prefix + key, f"{value}||{version}")
            return
        staged = self.tmp_path / "staged"
        staged.write_text(self.write_document({key: value}))
        subprocess.run(["mv", str(staged), str(self.path)], check=True)


@pytest.fixture
def admin() -> Iterator[redis.Redis]:
    """redis-py on the test server; puts notify-keyspace-events back as it found it."""
    require_redis()
    host, _, port = REDIS_ADDRESS.rpartition(":")
    client = redis.Redis(host=host, port=int(port), decode_responses=True)
    original = str(client.config_get(NOTIFY)[NOTIFY])
    yield client
    if client.config_get(NOTIFY)[NOTIFY] != original:
        client.config_set(NOTIFY, original)
    client.close()


def _harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    admin_client: redis.Redis | None = request.getfixturevalue("admin") if request.param == "redis" else None
    made = Harness(request.param, tmp_path, admin_client)
    yield made
    for store in made.made:
        store.close()
    if admin_client is not None:
        stale = list(admin_client.scan_iter(match=f"{made.prefix}*", count=1000))
        if stale:
            admin_client.delete(*stale)


@pytest.fixture(params=["toml", "json", "redis"], ids=["file.toml", "file.json", "redis"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """The contract suite's fixture: every backend."""
    yield from _harness(request, tmp_path)


@pytest.fixture(params=["toml", "json"], ids=["file.toml", "file.json"])
def file_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    yield from _harness(request, tmp_path)


@pytest.fixture(params=["redis"])
def redis_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    yield from _harness(request, tmp_path)


def by_key(items: list[ConfigItem]) -> dict[str, ConfigItem]:
    return {item.key: item for item in items}


# -- reading and writing ------------------------------------------------------------------------

def test_saved_items_come_back_with_versions_that_change_on_every_save(harness: Harness) -> None:
    store: ConfigurationStore = harness.make()
    store.save([ConfigItem("log.level", "debug"), ConfigItem("timeout", "30")])
    first = by_key(store.get(["log.level", "timeout"]))
    assert {key: item.value for key, item in first.items()} == {"log.level": "debug", "timeout": "30"}
    assert all(item.version for item in first.values())

    store.save([ConfigItem("log.level", "debug")])  # the same value again is still a new version
    second = by_key(store.get(["log.level", "timeout"]))
    assert second["log.level"].value == "debug"
    assert second["log.level"].version != first["log.level"].version
    assert second["timeout"].version == first["timeout"].version


def test_a_second_store_on_the_same_backend_reads_what_the_first_saved(harness: Harness) -> None:
    harness.make().save([ConfigItem("shared", "yes")])
    assert [(item.key, item.value) for item in harness.make().get(["shared"])] == [("shared", "yes")]


def test_get_without_keys_lists_every_item_of_the_group(harness: Harness) -> None:
    store = harness.make()
    store.save([ConfigItem("a", "1"), ConfigItem("b", "2"), ConfigItem("c", "3", group="payments")])
    assert {item.key: item.value for item in store.get([])} == {"a": "1", "b": "2"}
    assert {item.key: item.value for item in store.get([], group="payments")} == {"c": "3"}
    assert store.get([], group="nobody") == []


def test_a_missing_key_is_simply_absent(harness: Harness) -> None:
    store = harness.make()
    assert store.get(["nope"]) == []
    store.save([ConfigItem("here", "1")])
    assert [item.key for item in store.get(["nope", "here"])] == ["here"]


def test_delete_removes_items_and_ignores_missing_ones(harness: Harness) -> None:
    store = harness.make()
    store.save([ConfigItem("a", "1"), ConfigItem("b", "2")])
    store.delete(["a", "never-saved"])
    assert [item.key for item in store.get([])] == ["b"]
    store.delete([])  # nothing named, nothing deleted
    assert [item.key for item in store.get([])] == ["b"]


def test_group_and_label_are_part_of_an_items_identity(harness: Harness) -> None:
    store = harness.make()
    store.save([ConfigItem("db.url", "default"), ConfigItem("db.url", "prod", group="prod"),
                ConfigItem("db.url", "prod-v2", group="prod", label="v2"), ConfigItem("db.url", "v2", label="v2")])
    assert [i.value for i in store.get(["db.url"])] == ["default"]
    assert [i.value for i in store.get(["db.url"], group="  ")] == ["default"]  # blank = the default
    assert [(i.value, i.group, i.label) for i in store.get(["db.url"], group="prod")] == [("prod", "prod", "")]
    assert [i.value for i in store.get(["db.url"], group="prod", label="v2")] == ["prod-v2"]
    assert [i.value for i in store.get(["db.url"], label="v2")] == ["v2"]

    store.delete(["db.url"], group="prod")
    assert store.get(["db.url"], group="prod") == []
    assert [i.value for i in store.get(["db.url"], group="prod", label="v2")] == ["prod-v2"]
    assert [i.value for i in store.get(["db.url"])] == ["default"]


def test_names_the_identity_cannot_encode_are_refused(harness: Harness) -> None:
    store = harness.make()
    for bad in (lambda: store.save([ConfigItem("", "x")]), lambda: store.save([ConfigItem("a||b", "x")]),
                lambda: store.get(["k"], group="a|b"), lambda: store.delete(["k"], label="x|"),
                lambda: store.save([ConfigItem("k", "\udcff")])):
        with pytest.raises(InvalidRequest):
            bad()
    assert store.get([]) == []


# -- subscriptions ------------------------------------------------------------------------------

def test_a_subscriber_hears_the_stores_own_save(harness: Harness) -> None:
    store = harness.make()
    seen = Recorder()
    store.subscribe(["feature"], seen)
    store.save([ConfigItem("feature", "on")])
    item = seen.value_of("feature", "on")
    assert item.version == store.get(["feature"])[0].version


def test_a_subscriber_hears_a_change_another_writer_made(harness: Harness) -> None:
    store = harness.make()
    store.save([ConfigItem("limit", "10")])
    seen = Recorder()
    store.subscribe([], seen)
    harness.external_set("limit", "20")
    item = seen.value_of("limit", "20")
    assert [(i.value, i.version) for i in store.get(["limit"])] == [("20", item.version)]
    if harness.kind == "redis":
        assert item.version == "7"  # the version the other writer wrote


def test_a_subscriber_hears_a_deletion(harness: Harness) -> None:
    store = harness.make()
    store.save([ConfigItem("doomed", "x"), ConfigItem("kept", "y")])
    seen = Recorder()
    store.subscribe(["doomed", "kept"], seen)
    store.delete(["doomed"])
    assert seen.deletion_of("doomed").value == ""
    store.save([ConfigItem("kept", "z")])  # ordered after the deletion: nothing else about "kept" came
    seen.value_of("kept", "z")
    assert [item.key for item in seen.items] == ["doomed", "kept"]


def test_a_subscription_hears_only_its_keys_and_all_of_them_without_keys(harness: Harness) -> None:
    store = harness.make()
    some, every = Recorder(), Recorder()
    store.subscribe(["wanted"], some)
    store.subscribe([], every)
    store.save([ConfigItem("other", "1")])
    every.value_of("other", "1")
    store.save([ConfigItem("wanted", "2")])
    some.value_of("wanted", "2")
    every.value_of("wanted", "2")
    assert {item.key for item in some.items} == {"wanted"}


def test_a_closed_watch_hears_nothing_more(harness: Harness) -> None:
    store = harness.make()
    closed, open_ = Recorder(), Recorder()
    watch = store.subscribe([], closed)
    store.subscribe([], open_)
    store.save([ConfigItem("k", "1")])
    closed.value_of("k", "1")
    watch.close()
    store.save([ConfigItem("k", "2")])
    open_.value_of("k", "2")
    time.sleep(0.2)  # anything still in flight for the closed watch would have arrived by now
    assert [item.value for item in closed.items] == ["1"]


# -- the file backend ---------------------------------------------------------------------------

def test_an_editor_rewriting_the_file_in_place_is_noticed(file_harness: Harness) -> None:
    store = file_harness.make()
    seen = Recorder()
    store.subscribe([], seen)
    text = file_harness.write_document({"edited": "by hand"})
    subprocess.run(["sh", "-c", 'printf "%s" "$1" > "$2"', "sh", text, str(file_harness.path)], check=True)
    edited = seen.value_of("edited", "by hand")
    assert edited.version  # derived from the value: no version was written


def test_a_missing_file_is_an_empty_store_created_by_the_first_save(file_harness: Harness) -> None:
    store = file_harness.make()
    assert store.get([]) == [] and store.health()[0]
    assert not file_harness.path.exists()
    store.save([ConfigItem("first", "1", tags={"owner": "ops"})])
    assert file_harness.path.exists()
    assert [(i.value, dict(i.tags)) for i in store.get(["first"])] == [("1", {"owner": "ops"})]
    assert not [p for p in file_harness.tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp file left


def test_an_unparseable_file_fails_until_it_is_fixed(file_harness: Harness) -> None:
    store = file_harness.make()
    store.save([ConfigItem("a", "1")])
    seen = Recorder()
    store.subscribe([], seen)
    file_harness.path.write_text("{ this is not [valid")
    with pytest.raises(ComponentError):
        store.get(["a"])
    healthy, detail = store.health()
    assert not healthy and str(file_harness.path) in detail
    with pytest.raises(ComponentError):  # a save never overwrites a file somebody is editing
        store.save([ConfigItem("b", "2")])
    assert file_harness.path.read_text() == "{ this is not [valid"

    file_harness.path.write_text(file_harness.write_document({"a": "fixed"}))
    seen.value_of("a", "fixed")
    assert [i.value for i in store.get(["a"])] == ["fixed"]
    assert store.health()[0]


def test_hand_written_tables_numbers_and_grouped_names_are_read(file_harness: Harness) -> None:
    if file_harness.kind == "json":
        text = json.dumps({"retries": 3, "debug": True, "flag": {"value": "on", "version": "41",
                                                                  "tags": {"team": "core"}},
                           "prod||v2||db.url": "postgres://prod"})
    else:
        text = ('retries = 3\ndebug = true\nflag = { value = "on", version = "41", tags = { team = "core" } }\n'
                '"prod||v2||db.url" = "postgres://prod"\n')
    file_harness.path.write_text(text)
    store = file_harness.make()
    items = by_key(store.get([]))
    assert {k: i.value for k, i in items.items()} == {"retries": "3", "debug": "true", "flag": "on"}
    assert (items["flag"].version, dict(items["flag"].tags)) == ("41", {"team": "core"})
    assert [i.value for i in store.get(["db.url"], group="prod", label="v2")] == ["postgres://prod"]

    store.save([ConfigItem("flag", "off")])  # explicit numeric versions continue
    assert store.get(["flag"])[0].version == "42"
    store.save([ConfigItem("retries", "4")])  # items the save did not touch stay plain values
    reread = tomllib.loads(file_harness.path.read_text()) if file_harness.kind == "toml" else json.loads(
        file_harness.path.read_text())
    assert (reread["debug"], reread["prod||v2||db.url"]) == ("true", "postgres://prod")
    assert reread["retries"] == {"value": "4", "version": "1"}


def test_an_item_table_with_unknown_fields_is_reported(file_harness: Harness) -> None:
    file_harness.path.write_text(json.dumps({"k": {"valeu": "typo"}}) if file_harness.kind == "json"
                            else 'k = { valeu = "typo" }\n')
    store = file_harness.make()
    with pytest.raises(ComponentError, match="valeu"):
        store.get([])


text_strategy = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(text_strategy.filter(bool), st.tuples(text_strategy, st.none() | text_strategy,
                                                               st.dictionaries(text_strategy, text_strategy,
                                                                               max_size=2)),
                       max_size=4),
       st.sampled_from([".toml", ".json"]))
def test_the_file_writer_round_trips_any_text(raw: dict[str, Any], suffix: str) -> None:
    entries = {name: Entry(value, version, tags) for name, (value, version, tags) in raw.items()}
    text = dump(entries, suffix)
    assert parse(text, suffix) == entries
    if suffix == ".toml":
        tomllib.loads(text)  # standard TOML, not just what our own parser accepts


# -- the redis backend --------------------------------------------------------------------------

def test_redis_holds_items_in_daprs_layout(redis_harness: Harness) -> None:
    admin = redis_harness.admin
    assert admin is not None
    store = redis_harness.make()
    store.save([ConfigItem("orderId1", "101"), ConfigItem("orderId1", "102")])
    assert admin.get(redis_harness.prefix + "orderId1") == "102||2"
    store.save([ConfigItem("x", "1", group="g", label="l")])
    assert admin.get(redis_harness.prefix + "g||l||x") == "1||1"
    admin.set(redis_harness.prefix + "unversioned", "plain")  # Dapr reads this as value "plain", no version
    assert [(i.value, i.version) for i in store.get(["unversioned"])] == [("plain", "")]
    admin.set(redis_harness.prefix.rstrip(":") + "-outside", "1||1")  # not under the prefix: never listed
    try:
        assert {i.key for i in store.get([])} == {"orderId1", "unversioned"}
    finally:
        admin.delete(redis_harness.prefix.rstrip(":") + "-outside")
    with pytest.raises(InvalidRequest):
        store.save([ConfigItem("k", "a||b")])  # Dapr would read "a" with version "b"


def test_concurrent_savers_never_share_a_version(redis_harness: Harness) -> None:
    admin = redis_harness.admin
    assert admin is not None
    stores = [redis_harness.make(), redis_harness.make()]
    threads = [threading.Thread(target=lambda s=store: [s.save([ConfigItem("hot", "v")]) for _ in range(25)])
               for store in stores for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert admin.get(redis_harness.prefix + "hot") == "v||100"


def test_missing_keyspace_flags_are_added_and_existing_ones_kept(redis_harness: Harness) -> None:
    admin = redis_harness.admin
    assert admin is not None
    assert redis_config.missing_flags("") == "K$gxe"
    assert redis_config.missing_flags("AKE") == ""
    assert redis_config.missing_flags("Elx") == "K$ge"
    admin.config_set(NOTIFY, "El")  # the fixture restores the server's original value
    store = redis_harness.make()
    flags = str(admin.config_get(NOTIFY)[NOTIFY])
    assert set("ElK$gxe") <= set(flags) or {"A", "K", "E"} <= set(flags)
    assert store.health()[0]


def test_keyspace_flags_are_left_alone_when_disabled(redis_harness: Harness) -> None:
    admin = redis_harness.admin
    assert admin is not None
    admin.config_set(NOTIFY, "")
    store = redis_harness.make(enable_keyspace_events=False)
    assert admin.config_get(NOTIFY)[NOTIFY] == ""
    healthy, detail = store.health()
    assert healthy and "notify-keyspace-events" in detail


def test_the_listener_reconnects_after_its_connection_is_dropped(redis_harness: Harness) -> None:
    admin = redis_harness.admin
    assert admin is not None
    store = redis_harness.make()
    seen = Recorder()
    store.subscribe(["k"], seen)

    def listener_ids() -> list[str]:
        return [c["id"] for c in admin.client_list() if c.get("name") == store.listener_name]

    (first,) = listener_ids()
    admin.client_kill_filter(_id=first)
    deadline = time.monotonic() + 3
    while listener_ids() in ([], [first]):
        assert time.monotonic() < deadline, "the listener did not reconnect"
        time.sleep(0.05)
    time.sleep(0.05)  # it names itself before subscribing
    redis_harness.external_set("k", "after")
    seen.value_of("k", "after")


def test_an_unreachable_redis_fails_quickly() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    store = redis_config.Backend(redis_config.Config(type="redis", address=f"127.0.0.1:{port}", timeout_ms=300),
                                 ComponentContext(name="config-down"))
    try:
        with pytest.raises(ComponentError):
            store.get(["k"])
        with pytest.raises(ComponentError):
            store.save([ConfigItem("k", "v")])
        with pytest.raises(ComponentError):
            store.subscribe(["k"], Recorder())
        assert not store.health()[0]
    finally:
        store.close()
    assert time.monotonic() - started < 3


# -- wiring -------------------------------------------------------------------------------------

def test_backends_are_registered_and_take_layotto_metadata() -> None:
    assert BACKENDS == {"file": file_config.__name__, "redis": redis_config.__name__}
    fields = redis_config.from_layotto({"redisHost": "10.0.0.5:6380", "keyPrefix": "cfg:", "redisDB": "2"})
    config = redis_config.Config(type="redis", **fields)
    assert (config.address, config.key_prefix, config.db) == ("10.0.0.5:6380", "cfg:", 2)
    config_file = file_config.Config(type="file", **file_config.from_layotto({"path": "c.json",
                                                                             "pollInterval": "2s"}))
    assert (config_file.path, config_file.poll_ms) == ("c.json", 2000)
    with pytest.raises(ValueError):
        file_config.Config(type="file", path="config.yaml")


def test_polling_notices_changes_without_file_system_events(tmp_path: Path) -> None:
    """poll_ms finds a change no file system event announced (network mounts): the store's
    watchdog observer is stopped, so only the periodic check is left to notice the rename."""
    path = tmp_path / "c.toml"
    path.write_text('k = "1"\n')
    store = file_config.Backend(file_config.Config(type="file", path=str(path), poll_ms=50),
                                ComponentContext(name="poll", base_dir=tmp_path))
    try:
        seen = Recorder()
        store.subscribe([], seen)
        store._observer.stop()  # type: ignore[union-attr]  # events off: only polling is left
        store._observer.join()  # type: ignore[union-attr]
        staged = tmp_path / "staged"
        staged.write_text('k = "2"\n')
        os.replace(staged, path)
        seen.value_of("k", "2")
    finally:
        store.close()

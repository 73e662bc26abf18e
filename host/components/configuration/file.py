"""Configuration kept in one TOML or JSON file that people edit by hand and deploy tools replace:
the simplest store to run, and one whose changes made outside the host (an editor saving, `mv` of
a new version over it) reach subscribers like the host's own saves do.

The format follows the suffix (`.toml` or `.json`). The document maps each stored name to either a
plain value or an item table:

    timeout = "30"                      # a plain value (numbers and booleans are read as strings)
    "log.level" = { value = "debug", version = "7", tags = { owner = "ops" } }
    "prod||v2||db.url" = "postgres://db/prod"   # group "prod", label "v2", key "db.url"

An item table has `value` and optionally `version`, `tags` and `metadata` (tables of strings);
nothing else. The stored name is the key for the default group and label, `group||label||key`
otherwise (`_identity.py`). An item without a `version` has a short hash of its value as version,
so hand edits change it; a save by this store writes an explicit version, the previous one plus 1
(1 when the previous was not a number), so every save changes it even when the value does not.

A missing file is an empty store, created by the first save. Saves and deletes rewrite the whole
file atomically (a temporary file in the same folder renamed over it; comments are not kept) under
a lock shared with the readers of this process; other processes writing at the same time are not
excluded, the last rename wins. A file that cannot be read or parsed makes get, save, delete and
health fail with the reason until it is fixed; it is never overwritten meanwhile.

Changes are noticed through watchdog (inotify on Linux) on the file's folder, started by the first
subscriber, and, cheaply, by every get comparing the file's inode, size and times with those last
read. `poll_ms` adds a periodic check for file systems whose changes inotify does not see (network
mounts); polling every 250 ms is the fallback when the folder cannot be watched.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from host.components._redis import parse_duration_ms
from host.components.base import BackendConfig, ComponentContext
from host.components.configuration._file_format import Entry, dump, parse
from host.components.configuration._identity import check_text, identity_of, parse_name, storage_name
from host.components.configuration._watch import WatchHub
from host.components.configuration.base import ConfigItem, ConfigWatch, deleted_item
from host.components.errors import ComponentError

if TYPE_CHECKING:  # watchdog (~6 ms to import) once a store is first watched (subscribe)
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers.api import BaseObserver

_FALLBACK_POLL_S = 0.25
_FORMATS = (".toml", ".json")


class Config(BackendConfig):
    type: Literal["file"]
    path: str  # relative to the host's base directory
    poll_ms: int = Field(default=0, ge=0)  # 0: rely on file system events; >0: also check the file this often
    debounce_ms: int = Field(default=50, ge=0, le=5000)  # lets a burst of writes (an editor saving) settle first

    @field_validator("path")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if not value.lower().endswith(_FORMATS):
            raise ValueError(f"the configuration file must end with .toml or .json, got {value!r}")
        return value


def from_layotto(metadata: dict[str, str]) -> dict[str, Any]:
    """Component metadata `path` and `pollInterval` (a Dapr duration)."""
    fields: dict[str, Any] = {}
    if "path" in metadata:
        fields["path"] = metadata["path"]
    if metadata.get("pollInterval"):
        fields["poll_ms"] = parse_duration_ms(metadata["pollInterval"])
    return fields


def _item(name: str, entry: Entry) -> ConfigItem:
    key, group, label = parse_name(name)
    return ConfigItem(key=key, value=entry.value, version=entry.effective_version, group=group, label=label,
                      tags=dict(entry.tags), metadata=dict(entry.metadata))


def _changes(old: Mapping[str, Entry], new: Mapping[str, Entry]) -> list[ConfigItem]:
    changed = [_item(name, entry) for name, entry in new.items() if old.get(name) != entry]
    for name in old.keys() - new.keys():
        changed.append(deleted_item(*parse_name(name)))
    return changed


def _next_version(previous: Entry | None) -> str:
    if previous is not None and previous.version is not None and previous.version.isascii() \
            and previous.version.isdigit():
        return str(int(previous.version) + 1)
    return "1"


@functools.cache
def _file_events() -> Callable[[str, threading.Event], FileSystemEventHandler]:
    """The watchdog handler class (made, with watchdog imported, when a store is first watched)."""
    from watchdog.events import EVENT_TYPE_CLOSED_NO_WRITE, EVENT_TYPE_OPENED, FileSystemEvent, FileSystemEventHandler

    class _FileEvents(FileSystemEventHandler):
        """Wakes the refresher when an event names the file (written, created, renamed onto, deleted).
        The store's own reads raise opened/closed-without-write events: ignored, or reading would
        trigger reading forever."""

        def __init__(self, path: str, wake: threading.Event):
            super().__init__()
            self._path = path
            self._wake = wake

        def on_any_event(self, event: FileSystemEvent) -> None:
            if event.event_type in (EVENT_TYPE_OPENED, EVENT_TYPE_CLOSED_NO_WRITE):
                return
            paths = (os.fsdecode(event.src_path), os.fsdecode(getattr(event, "dest_path", "") or ""))
            if self._path in paths:
                self._wake.set()

    return _FileEvents


class Backend:
    def __init__(self, config: Config, context: ComponentContext):
        self.config = config
        self.context = context
        self.path = context.resolve(config.path)
        self._suffix = self.path.suffix.lower()
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}  # the file as last read successfully
        self._signature: tuple[int, ...] | None = None  # inode, size, times of the file last read
        self._loaded = False
        self._error: str | None = None  # why the file as it is now cannot be used
        self._hub = WatchHub(context.name, context.logger)
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._observer: BaseObserver | None = None
        self._refresher: threading.Thread | None = None
        self._poll_s: float | None = None
        with self._lock:
            self._load_locked(force=True)

    # -- reading the file -------------------------------------------------------------------

    def _stat(self) -> tuple[int, ...] | None:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return None
        return info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns

    def _load_locked(self, force: bool) -> None:
        """Re-read the file when it changed since the last read (always when `force`: an event said
        so, or a write is about to be based on it) and publish what changed."""
        signature: tuple[int, ...] | None = None
        try:
            signature = self._stat()
            if not force and self._loaded and signature == self._signature:
                return
            entries = {} if signature is None else parse(self.path.read_text(encoding="utf-8"), self._suffix)
        except FileNotFoundError:  # removed between stat and read
            signature, entries = None, {}
        except (OSError, ValueError) as error:  # ValueError: parse errors and undecodable bytes
            if self._error != str(error):
                self.context.logger.warning("configuration %s: cannot use %s: %s", self.context.name, self.path,
                                            error)
            self._error, self._signature, self._loaded = str(error), signature, True
            return
        if self._error is not None:
            self.context.logger.info("configuration %s: %s is usable again", self.context.name, self.path)
        self._error, self._signature, self._loaded = None, signature, True
        self._replace_locked(entries)

    def _replace_locked(self, entries: dict[str, Entry]) -> None:
        changed = _changes(self._entries, entries)
        self._entries = entries
        self._hub.publish(changed)

    def _check_usable_locked(self) -> None:
        if self._error is not None:
            raise ComponentError(f"configuration file {self.path}: {self._error}")

    # -- writing it -------------------------------------------------------------------------

    def _write_locked(self, entries: dict[str, Entry]) -> None:
        text = dump(entries, self._suffix)
        temp: str | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                mode = os.stat(self.path).st_mode & 0o7777
            except FileNotFoundError:
                mode = 0o644
            descriptor, temp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
            with os.fdopen(descriptor, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())  # the rename must not publish a file whose bytes are not on disk
            os.chmod(temp, mode)
            os.replace(temp, self.path)
            temp = None
            self._signature = self._stat()
        except OSError as error:
            raise ComponentError(f"configuration file {self.path}: cannot write: {error}") from None
        finally:
            if temp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
        self._replace_locked(entries)

    # -- the interface ----------------------------------------------------------------------

    def get(self, keys: Sequence[str], group: str = "", label: str = "") -> list[ConfigItem]:
        names = [storage_name(key, group, label) for key in keys]
        group, label = identity_of(group, label)
        with self._lock:
            self._load_locked(force=False)
            self._check_usable_locked()
            if names:
                return [_item(name, self._entries[name]) for name in dict.fromkeys(names) if name in self._entries]
            items = [_item(name, entry) for name, entry in self._entries.items()]
        return [item for item in items if item.group == group and item.label == label]

    def save(self, items: Sequence[ConfigItem]) -> None:
        names = []
        for item in items:
            names.append(storage_name(item.key, item.group, item.label))
            check_text("configuration value", item.value)
            for text in (*item.tags, *item.tags.values(), *item.metadata, *item.metadata.values()):
                check_text("configuration tag or metadata", text)
        if not names:
            return
        with self._lock:
            self._load_locked(force=True)
            self._check_usable_locked()
            entries = dict(self._entries)
            for name, item in zip(names, items, strict=True):
                entries[name] = Entry(item.value, _next_version(entries.get(name)), dict(item.tags),
                                      dict(item.metadata))
            self._write_locked(entries)

    def delete(self, keys: Sequence[str], group: str = "", label: str = "") -> None:
        names = {storage_name(key, group, label) for key in keys}
        if not names:
            return
        with self._lock:
            self._load_locked(force=True)
            self._check_usable_locked()
            if names.isdisjoint(self._entries):
                return
            self._write_locked({name: entry for name, entry in self._entries.items() if name not in names})

    def subscribe(self, keys: Sequence[str], on_change: Callable[[list[ConfigItem]], None]) -> ConfigWatch:
        for key in keys:
            storage_name(key)  # the same key rules as get and save
        self._start_watching()
        return self._hub.subscribe(keys, on_change)

    # -- watching ---------------------------------------------------------------------------

    def _start_watching(self) -> None:
        with self._lock:
            if self._refresher is not None or self._closed.is_set():
                return
            poll_s = self.config.poll_ms / 1000 or None
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                from watchdog.observers import Observer

                observer = Observer()
                observer.schedule(_file_events()(str(self.path), self._wake), str(self.path.parent),
                                  recursive=False)
                observer.daemon = True
                observer.start()
                self._observer = observer
            except Exception as error:  # inotify limits, unwatchable folders: polling still works
                self.context.logger.warning("configuration %s: cannot watch %s (%s); polling it every %d ms",
                                            self.context.name, self.path.parent, error,
                                            (poll_s or _FALLBACK_POLL_S) * 1000)
                poll_s = poll_s or _FALLBACK_POLL_S
            self._poll_s = poll_s
            self._refresher = threading.Thread(target=self._refresh_loop, name=f"config-file-{self.context.name}",
                                               daemon=True)
            self._refresher.start()
            self._load_locked(force=True)  # the state changes are measured against from now on

    def _refresh_loop(self) -> None:
        debounce_s = self.config.debounce_ms / 1000
        while True:
            woken = self._wake.wait(self._poll_s)
            if self._closed.is_set():
                return
            if woken:
                self._wake.clear()
                if self._closed.wait(debounce_s):
                    return
            try:
                with self._lock:
                    self._load_locked(force=woken)
            except Exception:  # keep watching whatever one reload hit
                self.context.logger.exception("configuration %s: reloading %s failed", self.context.name, self.path)

    # -- lifecycle --------------------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        try:
            with self._lock:
                self._load_locked(force=False)
                error, count = self._error, len(self._entries)
        except Exception as unexpected:  # health never raises
            return False, f"configuration file {self.path}: {unexpected}"
        if error is not None:
            return False, f"configuration file {self.path}: {error}"
        return True, f"configuration file {self.path} ({count} items)"

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        with self._lock:
            observer, refresher = self._observer, self._refresher
        if observer is not None:
            observer.stop()
            observer.join(1.0)
        if refresher is not None:
            refresher.join(1.0)
        self._hub.close()

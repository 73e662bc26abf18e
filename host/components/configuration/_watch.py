"""Subscribers of one store and the thread that calls them. A backend only publishes what changed;
the hub filters by each watch's keys and calls back from its own daemon thread, so a save never
runs user callbacks while it holds the store's lock and a slow callback delays only other
callbacks, never the store."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence

from host.components.configuration.base import ConfigItem
from host.components.errors import ComponentError

OnChange = Callable[[list[ConfigItem]], None]


class Watch:
    def __init__(self, hub: WatchHub, keys: Sequence[str], on_change: OnChange):
        self.keys = frozenset(keys)
        self.on_change = on_change
        self.active = True
        self._hub = hub

    def wants(self, item: ConfigItem) -> bool:
        return not self.keys or item.key in self.keys

    def close(self) -> None:
        self.active = False
        self._hub.remove(self)


class WatchHub:
    def __init__(self, name: str, logger: logging.Logger):
        self._name = name
        self._logger = logger
        self._watches: list[Watch] = []
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[list[ConfigItem] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def subscribe(self, keys: Sequence[str], on_change: OnChange) -> Watch:
        watch = Watch(self, keys, on_change)
        with self._lock:
            if self._closed:
                raise ComponentError(f"configuration {self._name}: the store is closed")
            self._watches.append(watch)
            if self._thread is None:  # started by the first subscriber: most stores have none
                self._thread = threading.Thread(target=self._deliver, name=f"config-watch-{self._name}",
                                                daemon=True)
                self._thread.start()
        return watch

    def remove(self, watch: Watch) -> None:
        with self._lock:
            if watch in self._watches:
                self._watches.remove(watch)

    @property
    def watching(self) -> bool:
        return bool(self._watches)

    def publish(self, items: Sequence[ConfigItem]) -> None:
        if items and self._watches:
            self._queue.put(list(items))

    def _deliver(self) -> None:
        while (batch := self._queue.get()) is not None:
            with self._lock:
                watches = list(self._watches)
            for watch in watches:
                chosen = [item for item in batch if watch.wants(item)]
                if not chosen or not watch.active:
                    continue
                try:
                    watch.on_change(chosen)
                except Exception:  # a subscriber's bug must not stop the others' notifications
                    self._logger.exception("configuration %s: a subscriber's callback failed", self._name)

    def close(self, timeout_s: float = 1.0) -> None:
        with self._lock:
            self._closed = True
            self._watches.clear()
            thread = self._thread
        self._queue.put(None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

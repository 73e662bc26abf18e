"""Watch the functions folders: a module written, renamed in, or deleted deploys, updates or
removes its function; a settings file (`name.toml`) change redeploys its module.

Writes are debounced: a file is loaded once it has been closed after writing (or renamed into
place) and stayed the same size for a moment, or after a quiet period with no events at all —
never while a writer still has it open. One reload per burst of events.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from host.functions.deployments import Deployments
from host.functions.sources import SETTINGS_SUFFIX, is_module, module_for_settings

log = logging.getLogger(__name__)

_READ_ONLY_EVENTS = frozenset({"opened", "closed_no_write"})
SETTLE_S = 0.02  # after close-after-write or a rename: the file is complete; only confirm its size


class _Events(FileSystemEventHandler):
    """Runs in the watchdog thread: hand every relevant path to the loop."""

    def __init__(self, watcher: FunctionWatcher):
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Reads (ours when deploying, or another worker's) are not changes: reacting to them
        # would reload forever.
        if event.is_directory or event.event_type in _READ_ONLY_EVENTS:
            return
        paths = [event.src_path] + ([event.dest_path] if getattr(event, "dest_path", "") else [])
        complete = event.event_type in ("closed", "moved", "deleted")
        for raw in paths:
            path = Path(raw if isinstance(raw, str) else raw.decode())
            if is_module(path) or path.suffix == SETTINGS_SUFFIX:
                self.watcher.notify_threadsafe(path, complete)


class FunctionWatcher:
    def __init__(self, deployments: Deployments, folders: list[Path], debounce_s: float):
        self.deployments = deployments
        self.folders = folders
        self.debounce_s = debounce_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: dict[Path, asyncio.TimerHandle] = {}
        self._observer: BaseObserver | None = None
        self._tasks: set[asyncio.Task] = set()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._observer = Observer()
        handler = _Events(self)
        for folder in self.folders:
            if folder.is_dir():
                self._observer.schedule(handler, str(folder), recursive=False)
        self._observer.daemon = True
        self._observer.start()
        log.info("watching %s for function changes", ", ".join(map(str, self.folders)))

    async def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            await asyncio.get_running_loop().run_in_executor(None, self._observer.join, 2)
        for timer in self._timers.values():
            timer.cancel()
        for task in list(self._tasks):
            task.cancel()

    def notify_threadsafe(self, path: Path, complete: bool) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._schedule, path, complete)

    def _schedule(self, path: Path, complete: bool) -> None:
        timer = self._timers.pop(path, None)
        if timer is not None:
            timer.cancel()
        delay = SETTLE_S if complete else self.debounce_s
        self._timers[path] = self._loop.call_later(delay, self._settle, path, self._size(path))  # type: ignore

    @staticmethod
    def _size(path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError:
            return -1

    def _settle(self, path: Path, size_before: int) -> None:
        self._timers.pop(path, None)
        if self._size(path) != size_before:  # still growing: wait for the next quiet period
            self._timers[path] = self._loop.call_later(self.debounce_s, self._settle, path,  # type: ignore
                                                       self._size(path))
            return
        task = asyncio.ensure_future(self._apply(path))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _apply(self, path: Path) -> None:
        if path.suffix == SETTINGS_SUFFIX:
            module = module_for_settings(path)
            if module is not None:
                await self.deployments.deploy(module)
            return
        if path.exists():
            await self.deployments.deploy(path)
        else:
            await self.deployments.remove(path)

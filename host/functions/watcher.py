"""Watch the functions folders: a module written, renamed in, or deleted deploys, updates or
removes its function; a settings file (`name.toml`) change redeploys its module.

Writes are debounced: a file is loaded once it has been closed after writing (or renamed into
place) and stayed the same size for a moment, or after a quiet period with no events at all —
never while a writer still has it open. One reload per burst of events.

A folder is watched by what it is, not only by its name: every FOLDER_CHECK_S the folder at each
configured path is compared (device and inode) with the one being watched. A folder deleted and
created again, created after start-up, or swapped for another by renames (`mv functions old; mv new
functions`, which leaves the kernel's watch on the old folder) is watched afresh and reconciled:
each module in it is deployed, and each function from that path whose file is gone is removed.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from host.functions.deployments import Deployments, record_key
from host.functions.sources import SETTINGS_SUFFIX, is_module, module_for_settings

log = logging.getLogger(__name__)

_READ_ONLY_EVENTS = frozenset({"opened", "closed_no_write"})
SETTLE_S = 0.02  # after close-after-write or a rename: the file is complete; only confirm its size
FOLDER_CHECK_S = 0.5  # how often each folder's identity is compared with the watched one

_Identity = tuple[int, int]  # (st_dev, st_ino)


class _Events(FileSystemEventHandler):
    """Runs in the watchdog thread: hand every relevant path to the loop."""

    def __init__(self, watcher: FunctionWatcher):
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Reads (ours when deploying, or another worker's) are not changes: reacting to them
        # would reload forever.
        if event.is_directory:
            if event.event_type == "deleted":  # a watched folder itself: its watch has ended
                raw = event.src_path
                self.watcher.folder_gone_threadsafe(Path(raw if isinstance(raw, str) else raw.decode()))
            return
        if event.event_type in _READ_ONLY_EVENTS:
            return
        paths = [event.src_path] + ([event.dest_path] if getattr(event, "dest_path", "") else [])
        complete = event.event_type in ("closed", "moved", "deleted")
        for raw in paths:
            path = Path(raw if isinstance(raw, str) else raw.decode())
            if is_module(path) or path.suffix == SETTINGS_SUFFIX:
                self.watcher.notify_threadsafe(path, complete)


class FunctionWatcher:
    def __init__(self, deployments: Deployments, folders: list[Path], debounce_s: float,
                 folder_check_s: float = FOLDER_CHECK_S):
        self.deployments = deployments
        self.folders = folders
        self.debounce_s = debounce_s
        self.folder_check_s = folder_check_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: dict[Path, asyncio.TimerHandle] = {}
        self._observer: BaseObserver | None = None
        self._handler: _Events | None = None
        self._watches: dict[Path, tuple[_Identity | None, ObservedWatch | None]] = {}
        self._checker: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self.rewatched = 0  # folders watched afresh after a deletion or swap (read by tests)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._observer = Observer()
        self._handler = _Events(self)
        for folder in self.folders:
            self._watches[folder] = (_identity(folder), self._schedule_watch(folder))
        self._observer.daemon = True
        self._observer.start()
        self._checker = self._loop.create_task(self._check_folders())
        log.info("watching %s for function changes", ", ".join(map(str, self.folders)))

    def _schedule_watch(self, folder: Path) -> ObservedWatch | None:
        assert self._observer is not None and self._handler is not None
        if not folder.is_dir():
            return None
        try:
            return self._observer.schedule(self._handler, str(folder), recursive=False)
        except OSError as error:  # gone again meanwhile: the next check retries
            log.warning("cannot watch %s: %s", folder, error)
            return None

    def _unschedule(self, watch: ObservedWatch | None) -> None:
        if watch is None or self._observer is None:
            return
        try:
            self._observer.unschedule(watch)
        except Exception:  # noqa: BLE001 - its emitter may have stopped with its deleted folder
            log.debug("unscheduling a watch of a vanished folder failed", exc_info=True)

    async def _check_folders(self) -> None:
        while True:
            await asyncio.sleep(self.folder_check_s)
            for folder in self.folders:
                identity = _identity(folder)
                watched, watch = self._watches.get(folder, (None, None))
                if identity == watched:
                    continue
                self._unschedule(watch)
                self._watches[folder] = (identity, self._schedule_watch(folder) if identity else None)
                if identity is None:
                    log.warning("functions folder %s is gone; watching for it to come back", folder)
                    continue
                self.rewatched += 1
                log.info("functions folder %s was %s: watching it again and deploying what it holds", folder,
                         "created" if watched is None else "replaced")
                try:
                    await self._reconcile(folder)
                except Exception:  # noqa: BLE001 - the next change or check tries again
                    log.exception("reconciling %s failed", folder)

    async def _reconcile(self, folder: Path) -> None:
        """Make the functions from `folder` what it now holds."""
        try:
            present = sorted(record_key(path) for path in folder.iterdir()
                             if is_module(path) and (path.is_file() or path.is_symlink()))
        except OSError:
            present = []
        gone = [key for key in list(self.deployments.records) if key.parent == folder and key not in present
                and not key.exists()]
        for key in gone:
            await self.deployments.remove(key)
        await asyncio.gather(*(self.deployments.deploy(path) for path in present))  # as at start-up

    async def stop(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
        if self._observer is not None:
            self._observer.stop()
            await asyncio.get_running_loop().run_in_executor(None, self._observer.join, 2)
        for timer in self._timers.values():
            timer.cancel()
        for task in list(self._tasks):
            task.cancel()

    def folder_gone_threadsafe(self, folder: Path) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._folder_gone, folder)

    def _folder_gone(self, folder: Path) -> None:
        """The kernel ended the watch of a deleted folder: the next check watches whatever has its
        name then, even a new folder that got the old one's inode number."""
        if folder in self._watches:
            self._watches[folder] = (None, self._watches[folder][1])

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


def _identity(folder: Path) -> _Identity | None:
    try:
        stat = folder.stat()
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino) if folder.is_dir() else None

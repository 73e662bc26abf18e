"""Watch the functions folders: a module written, renamed in, or deleted deploys, updates or
removes its function; a settings file (`name.toml`) change redeploys its module.

When a file is complete, it is loaded at once (issue 16, cold start): a close after writing
(inotify IN_CLOSE_WRITE) or a rename into the folder (IN_MOVED_TO; a symbolic link's creation
too) means the writer is done. Plain writes with no close (a writer still holding the file, or a
platform without close events) are debounced: the file is loaded after `debounce_s` with no event
— and never while it is open: opens and closes are counted per file, and one opened more often
than closed since watching began waits for its close. A removal (unlink, rename away) waits
REMOVE_SETTLE_S, so an editor that moves the old file aside before writing the new one replaces
the function rather than removing it first; a load of another file applies the removals still
waiting first (a module renamed to another name gives up its function id before the new name
claims it). At most one load per file runs at a time; events during it load the file once more
afterwards, with the bytes it then has.

A folder is watched by what it is, not only by its name: every FOLDER_CHECK_S the folder at each
configured path is compared (device and inode) with the one being watched. A folder deleted and
created again, created after start-up, or swapped for another by renames (`mv functions old; mv new
functions`, which leaves the kernel's watch on the old folder) is watched afresh and reconciled:
each module in it is deployed, and each function from that path whose file is gone is removed.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from host.functions.deployments import Deployments, record_key
from host.functions.sources import SETTINGS_SUFFIX, is_module, module_for_settings

log = logging.getLogger(__name__)

REMOVE_SETTLE_S = 0.02  # a removal waits this long for a replacement (editors that move the old file aside)
FOLDER_CHECK_S = 0.5  # how often each folder's identity is compared with the watched one

_Identity = tuple[int, int]  # (st_dev, st_ino)


class Change(enum.Enum):
    WRITTEN_CLOSED = "written-closed"  # closed after writing: load now
    ARRIVED = "arrived"  # renamed into the folder, or a symbolic link created: load now
    WRITTEN = "written"  # created, modified, attributes changed: load after a quiet period
    GONE = "gone"  # deleted or renamed away
    OPENED = "opened"  # counted only: an open file is not loaded on quiet time alone
    CLOSED = "closed"  # closed without writing (a reader): counted only


def _observer() -> BaseObserver:
    """inotify with unpaired renames kept as renames: a file moved in from outside the folder is
    then told apart from one being created (and written)."""
    try:
        from watchdog.observers.inotify import InotifyObserver
    except Exception:  # noqa: BLE001 - not Linux: the platform's observer (no close events: debounced)
        return Observer()
    return InotifyObserver(generate_full_events=True)


def _decode(raw: bytes | str) -> Path:
    return Path(raw if isinstance(raw, str) else raw.decode())


class _Events(FileSystemEventHandler):
    """Runs in the watchdog thread: hand every relevant path to the loop."""

    def __init__(self, watcher: FunctionWatcher):
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            if event.event_type == "deleted":  # a watched folder itself: its watch has ended
                self.watcher.folder_gone_threadsafe(_decode(event.src_path))
            return
        kind = event.event_type
        if kind == "moved":  # either side may be outside the folder ("")
            if event.src_path:
                self._notify(event.src_path, Change.GONE)
            if event.dest_path:
                self._notify(event.dest_path, Change.ARRIVED)
        elif kind == "closed":
            self._notify(event.src_path, Change.WRITTEN_CLOSED)
        elif kind == "deleted":
            self._notify(event.src_path, Change.GONE)
        elif kind == "opened":  # reads (ours when deploying, another worker's) are counted, never reloaded
            self._notify(event.src_path, Change.OPENED)
        elif kind == "closed_no_write":
            self._notify(event.src_path, Change.CLOSED)
        elif kind == "created" and _decode(event.src_path).is_symlink():  # symlink(2) is atomic
            self._notify(event.src_path, Change.ARRIVED)
        else:  # created, modified, attrib
            self._notify(event.src_path, Change.WRITTEN)

    def _notify(self, raw: bytes | str, change: Change) -> None:
        path = _decode(raw)
        if is_module(path) or path.suffix == SETTINGS_SUFFIX:
            self.watcher.notify_threadsafe(path, change)


class FunctionWatcher:
    def __init__(self, deployments: Deployments, folders: list[Path], debounce_s: float,
                 folder_check_s: float = FOLDER_CHECK_S):
        self.deployments = deployments
        self.folders = folders
        self.debounce_s = debounce_s
        self.folder_check_s = folder_check_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: dict[Path, asyncio.TimerHandle] = {}
        self._open: dict[Path, int] = {}  # opens minus closes seen, per file (absent: 0)
        self._waiting_for_close: set[Path] = set()  # quiet, but open: its close loads it
        self._running: dict[Path, asyncio.Task] = {}  # the load of each file under way
        self._again: set[Path] = set()  # changed while loading: load once more afterwards
        self._removals: set[Path] = set()  # gone, waiting REMOVE_SETTLE_S for a replacement
        self._observer: BaseObserver | None = None
        self._handler: _Events | None = None
        self._watches: dict[Path, tuple[_Identity | None, ObservedWatch | None]] = {}
        self._checker: asyncio.Task | None = None
        self._stopped = False
        self.rewatched = 0  # folders watched afresh after a deletion or swap (read by tests)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._observer = _observer()
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
        self._stopped = True
        if self._checker is not None:
            self._checker.cancel()
        if self._observer is not None:
            self._observer.stop()
            await asyncio.get_running_loop().run_in_executor(None, self._observer.join, 2)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._running.values()):
            task.cancel()

    def folder_gone_threadsafe(self, folder: Path) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._folder_gone, folder)

    def _folder_gone(self, folder: Path) -> None:
        """The kernel ended the watch of a deleted folder: the next check watches whatever has its
        name then, even a new folder that got the old one's inode number."""
        if folder in self._watches:
            self._watches[folder] = (None, self._watches[folder][1])

    def notify_threadsafe(self, path: Path, change: Change) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._changed, path, change)

    # -- on the loop --------------------------------------------------------------------------------
    def _changed(self, path: Path, change: Change) -> None:
        if change is Change.OPENED:
            self._open[path] = self._open.get(path, 0) + 1
            return
        if change in (Change.CLOSED, Change.WRITTEN_CLOSED):
            # A close the count never saw open (opened before watching began) stays at zero.
            remaining = max(0, self._open.pop(path, 0) - 1)
            if remaining:
                self._open[path] = remaining
            if change is Change.CLOSED:
                if not remaining and path in self._waiting_for_close:  # the last one holding it let go
                    self._waiting_for_close.discard(path)
                    self._load(path)
                return
        self._cancel_timer(path)
        self._waiting_for_close.discard(path)
        if change in (Change.GONE, Change.ARRIVED):  # another file has the name now: its opens are unknown
            self._open.pop(path, None)
        if change in (Change.WRITTEN_CLOSED, Change.ARRIVED):
            self._load(path)
        elif change is Change.GONE:
            self._later(path, REMOVE_SETTLE_S)
            self._removals.add(path)
        else:
            self._later(path, self.debounce_s)

    def _cancel_timer(self, path: Path) -> None:
        self._removals.discard(path)
        timer = self._timers.pop(path, None)
        if timer is not None:
            timer.cancel()

    def _later(self, path: Path, delay: float) -> None:
        assert self._loop is not None
        self._timers[path] = self._loop.call_later(delay, self._quiet, path)

    def _quiet(self, path: Path) -> None:
        """No event for the file in a while: load it — unless a writer may still hold it open."""
        self._timers.pop(path, None)
        self._removals.discard(path)
        if self._open.get(path, 0) > 0 and path.exists():
            self._waiting_for_close.add(path)
            return
        self._load(path)

    def _load(self, path: Path) -> None:
        """Load `path` now — after every removal still waiting out its settle time: a module renamed to
        another name (or replaced by another file) gives its function id up before the new file
        claims it, as `server.duplicate_ids = "refuse"` requires."""
        for gone in [other for other in self._removals if other != path]:
            self._cancel_timer(gone)
            self._start(gone)
        self._start(path)

    def _start(self, path: Path) -> None:
        if self._stopped:
            return
        if path in self._running:  # one load per file at a time; the next one sees the latest bytes
            self._again.add(path)
            return
        task = asyncio.ensure_future(self._apply(path))
        self._running[path] = task
        task.add_done_callback(lambda _: self._loaded(path))

    def _loaded(self, path: Path) -> None:
        self._running.pop(path, None)
        if path in self._again:
            self._again.discard(path)
            self._start(path)

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

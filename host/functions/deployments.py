"""What is deployed: one record per module file, and the router. The watcher and the admin API
change them only through this small API (deploy, remove, resize, find), and every change to a
record happens under that record's lock — so install, update, uninstall and file events on one
function are serialised, and a resize made while a reload is running waits for it and applies to
the version the reload put in place.

Deploying builds the new version completely (compiled, imports checked, pool started) before
swapping it into the router in one step; the old version then drains and is retired. A rejected
version leaves the previous one serving and records why. The checks that make the router agree
with the records happen on the event loop with no await between them and the swap:

- two modules reporting one function id: with `server.duplicate_ids = "refuse"` (the default) the
  later one is rejected, naming the module that serves the id; with `"random"` (Layotto's
  behaviour) both serve it, each request going to one at random, and the listing says so;
- a module file in a functions folder that is a symbolic link to a file outside every functions
  folder is rejected, as the admin API refuses such a path (`server.admin_allow_any_path` allows both);
- a deploy whose caller went away (a cancelled watcher task) still settles: the version it built
  is closed rather than left running unrouted.

Records are keyed by the module's path with its folder resolved but not the file itself, so a
symbolic link is its own record, and deleting the link removes it.

A pool that could not replace its instances (a backend down in `proxy_on_configure`, say) is marked
DOWN by the pool; here it is retried with back-off (RETRY_BASE_S doubling to RETRY_MAX_S) until it
serves again.

Memory comes back when functions go: an instance and its guest refer to each other, so a retired
one (its store, linear memory and address-space reservation) is freed only by Python's cyclic
collector, which may not look at old objects for a long time. After a removal or a replacement a
collection is made COLLECT_AFTER_S later (one for a burst of them), and a rejected deploy collects
at once (at most once a second) — so what a pool that failed half-way had started (an mmap failure
at an engine limit, say) is released before the next deploy asks for it.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import gc
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host.config import FunctionConfig, HostConfig
from host.functions.deployer import Deployer
from host.functions.errors import DeployError
from host.functions.pool import InstancePool, any_pool_down
from host.functions.router import Router
from host.functions.sources import explicit_entries, link_outside_folders, missing_entry
from host.functions.spec import check_instance_count, instance_count, spec_for
from host.functions.threads import GuestThreads
from host.functions.version import FunctionVersion

log = logging.getLogger(__name__)

RETRY_BASE_S = 1.0  # first retry of a DOWN pool; doubles per failed attempt
RETRY_MAX_S = 30.0
RETRY_CHECK_S = 0.1  # how often DOWN pools are looked for
COLLECT_AFTER_S = 0.5  # after the last retirement of a burst: collect the retired instances
COLLECT_AT_ONCE_EVERY_S = 1.0  # a rejected deploy collects at once at most this often
# Builds (compile, first instance) running at once: one per CPU. More only adds threads fighting for
# the GIL (a warm build is Python plus many short wasmtime calls, each of which lets the GIL go):
# 3,000 warm deploys took 4.7 s with 2 at once, 6.5 s with 4, 8.2 s with 16 (issue 16); compiling
# needs no more (it releases the GIL, and wasmtime compiles a module's functions in parallel
# itself). The price: a start-up blocked on a slow backend holds its slot up to its timeout_ms.
MAX_CONCURRENT_BUILDS = max(2, os.cpu_count() or 1)


class Outcome(enum.StrEnum):
    PENDING = "pending"
    DEPLOYED = "deployed"
    REJECTED = "rejected"
    REMOVED = "removed"


def record_key(path: Path) -> Path:
    """A module's record key: its folder resolved, its own name kept (a symbolic link is its own record)."""
    return path.parent.resolve() / path.name


@dataclass
class Deployment:
    """What is deployed from one module file, and how its last (re)load went."""

    path: Path
    version: FunctionVersion | None = None
    override: FunctionConfig | None = None  # settings given through the admin API
    last_outcome: Outcome = Outcome.PENDING
    last_error: str | None = None
    last_change: float = field(default_factory=time.time)
    reloads: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = self.version.describe() if self.version else {"source": str(self.path)}
        info.update({"last_reload": {"outcome": str(self.last_outcome), "error": self.last_error,
                                     "at": self.last_change}, "reloads": self.reloads})
        return info

    def _settle(self, outcome: Outcome, error: str | None = None) -> None:
        self.last_outcome, self.last_error, self.last_change = outcome, error, time.time()


@dataclass
class _Retry:
    """Back-off state of one DOWN pool."""

    min_size: int  # the pool's own minimum, restored once it serves again
    attempts: int = 0
    next_at: float = 0.0


class Deployments:
    def __init__(self, config: HostConfig, deployer: Deployer, threads: GuestThreads, router: Router,
                 on_deployed: Callable[[FunctionVersion], None]):
        self.config = config
        self.deployer = deployer
        self.threads = threads
        self.router = router
        self.on_deployed = on_deployed
        self.records: dict[Path, Deployment] = {}
        self._closed = False
        self._retries: dict[InstancePool, _Retry] = {}
        self._retry_task: asyncio.Task | None = None
        self._collection: asyncio.TimerHandle | None = None
        self._collected_at = 0.0
        self._builds = _Slots(MAX_CONCURRENT_BUILDS)

    def _record(self, path: Path) -> Deployment:
        key = record_key(path)
        if key not in self.records:
            self.records[key] = Deployment(key)
        return self.records[key]

    async def deploy(self, path: Path, override: FunctionConfig | None = None) -> Deployment:
        """(Re)deploy the module at `path`; on failure the previous version keeps serving."""
        self._start_retries()
        record = self._record(path)
        async with record.lock:
            if self.records.get(record.path) is not record:  # removed while this waited for its lock:
                return await self.deploy(path, override)  # deploy it afresh, under the path's new record
            if override is not None:
                record.override = override
            rejection: str | None = None
            collect = True
            try:
                self._check_source(record.path)
                spec = spec_for(self.config, record.path, record.override)
                new = await self._build(spec)
            except DeployError as error:
                rejection = str(error)
                # Nothing started, nothing to collect: at a limit, thousands of refused deploys would
                # otherwise each ask for a full collection (half a second at 10,000 functions, issue 16).
                collect = not error.started_nothing
            except Exception as error:  # noqa: BLE001 - a host bug while deploying must not stop the host
                log.exception("deploying %s failed unexpectedly", record.path)
                rejection = f"unexpected error: {error!r}"
            if rejection is not None:  # out of the except block: the error (and what it holds) is garbage now
                self._rejected(record, rejection)
                if collect:
                    await self._collect_after_rejection()
                return record
            # From here to the swap nothing awaits: the checks and the router change are one step.
            refusal = self._refusal(record, new)
            if refusal is not None:
                new.close()
                self._rejected(record, refusal)
                self._collect_later()
                return record
            old, record.version = record.version, new
            self.router.replace(old, new)
            self.on_deployed(new)
            record.reloads += old is not None
            record._settle(Outcome.DEPLOYED)
            if old is not None:
                log.info("function %s: %s replaced by a new version (%s)", new.function_id, record.path.name,
                         new.sha256[:12])
                old.close()  # in-flight requests finish on the old instances, which then retire
                if old.function_id != new.function_id:
                    self._forget_id_if_unrouted(old.function_id)
                self._collect_later()
        return record

    async def deploy_all(self, paths: Iterable[Path]) -> None:
        """Deploy many modules at once (start-up). Python's automatic full collections are paused
        meanwhile: each walks every object the functions deployed so far hold, and a growing heap
        starts one at every quarter of growth (ten of them, 4 s of CPU, on the way to 10,000
        functions: issue 16). Explicit collections (after a rejection) still run; what else the
        burst leaves to the cyclic collector waits for its next automatic run."""
        paused = gc.isenabled()
        gc.disable()
        try:
            await asyncio.gather(*(self.deploy(path) for path in paths))
        finally:
            if paused:
                gc.enable()

    async def _build(self, spec: Any) -> FunctionVersion:
        """Deploy `spec` in a guest thread. If the caller is cancelled meanwhile, the thread still runs
        to its end: the version it builds is then closed, never left running unrouted."""
        async with self._builds:
            building = self.threads.start(self.deployer.deploy, spec)
            return await self._built(building)

    async def _built(self, building: asyncio.Future[FunctionVersion]) -> FunctionVersion:
        try:
            return await asyncio.shield(building)
        except asyncio.CancelledError:
            building.add_done_callback(_close_unused)
            raise

    def _check_source(self, path: Path) -> None:
        """Refuse an explicit entry without a module, and a link out of the functions folders."""
        missing = missing_entry(self.config, path)
        if missing is not None:
            raise DeployError(missing)
        if self.config.server.admin_allow_any_path or (self.config.functions
                                                       and path.resolve() in explicit_entries(self.config)):
            return
        reason = link_outside_folders(self.config, path)
        if reason is not None:
            raise DeployError(reason)

    def _refusal(self, record: Deployment, new: FunctionVersion) -> str | None:
        """Why `new` must not be swapped in (None: it may)."""
        if self._closed:
            return "the host is shutting down"
        if self.config.server.duplicate_ids == "random":
            return None
        if all(v is record.version for v in self.router.serving(new.function_id)):
            return None  # the usual case, without a look at every record (issue 16: 10,000 deploys)
        for other in self.records.values():
            if other is not record and other.version is not None and other.version.function_id == new.function_id:
                return (f"function id {new.function_id!r} is already served by {other.path} (server.duplicate_ids "
                        f"= \"refuse\"; \"random\" shares the id between them at random, as Layotto does)")
        return None

    def _rejected(self, record: Deployment, reason: str) -> None:
        record._settle(Outcome.REJECTED, reason)
        serving = f"; version {record.version.sha256[:12]} keeps serving" if record.version else ""
        log.error("function %s rejected: %s%s", record.path.name, reason, serving)

    async def remove(self, path: Path) -> Deployment | None:
        record = self.records.get(record_key(path))
        if record is None:
            return None
        async with record.lock:
            version = record.version
            if version is not None:
                self.router.replace(version, None)
                version.close()
                log.info("function %s undeployed (%s removed)", version.function_id, record.path.name)
                self._forget_id_if_unrouted(version.function_id)
                self._collect_later()
            record.version = None
            record._settle(Outcome.REMOVED)
            # Under the lock: a deploy of the same path waiting for it then sees the record is gone.
            self.records.pop(record.path, None)
        return record

    async def _collect_after_rejection(self) -> None:
        """What a failed deploy started is freed before the next deploy asks for it (at most once a
        second; else a little later)."""
        if time.monotonic() - self._collected_at < COLLECT_AT_ONCE_EVERY_S:
            self._collect_later()
            return
        for _ in range(2):  # the loop first drops the failed build's futures and their callbacks
            await asyncio.sleep(0)
        self._collect()
        self._collect_later()  # and again for instances the pool was still starting in the background

    def _collect_later(self) -> None:
        """One collection COLLECT_AFTER_S after the last of a burst of retirements."""
        if self._collection is not None:
            self._collection.cancel()
        self._collection = asyncio.get_running_loop().call_later(COLLECT_AFTER_S, self._collect)

    def _collect(self) -> None:
        self._collection = None
        self._collected_at = time.monotonic()
        gc.collect()

    def _forget_id_if_unrouted(self, function_id: str) -> None:
        """No version serves `function_id` any more: drop the queue callbacks its instances registered
        (they would keep the retired instances, and their memory, alive)."""
        if self.router.pick(function_id) is None:
            self.deployer.services.queues.drop_listeners(function_id)

    async def resize(self, record: Deployment, instance_num: int) -> None:
        """Resize the serving version's pool (<= 0: one instance per CPU, as in Layotto) and remember
        it like install's settings, so a later reload of the file keeps the new size. Raises
        DeployError for a size over `server.max_instances_per_function`."""
        check_instance_count(self.config, instance_count(instance_num))
        async with record.lock:
            earlier = record.override.model_dump(exclude_unset=True) if record.override else {}
            record.override = FunctionConfig.model_validate({**earlier, "instance_num": instance_num})
            if record.version is not None:
                record.version.pool.resize(instance_count(instance_num))

    def find(self, name_or_id: str) -> Deployment | None:
        """A deployment by function id, configured name or file stem."""
        matches = self.matching(name_or_id)
        return matches[0] if matches else None

    def matching(self, name_or_id: str) -> list[Deployment]:
        """Every deployment whose function id or configured name is `name_or_id` — or, when none
        is, whose file stem is."""
        by_id = [r for r in self.records.values()
                 if r.version is not None and name_or_id in (r.version.function_id, r.version.name)]
        return by_id or [r for r in self.records.values() if r.path.stem == name_or_id]

    def describe(self, record: Deployment) -> dict[str, Any]:
        """`record.describe()`, plus the modules sharing its function id (with duplicate_ids = "random")
        and the retrying of a DOWN pool."""
        info = record.describe()
        version = record.version
        if version is None:
            return info
        sharing = [str(other.path) for other in self.records.values() if other is not record
                   and other.version is not None and other.version.function_id == version.function_id]
        if sharing:
            info["shares_id_with"] = sharing
            info["routing"] = "random (server.duplicate_ids)"
        retry = self._retries.get(version.pool)
        if retry is not None:
            info["retrying"] = {"reason": version.pool.down_reason, "attempts": retry.attempts,
                                "next_in_s": round(max(0.0, retry.next_at - time.monotonic()), 3)}
        return info

    def failures(self) -> dict[str, str]:
        """Functions that serve nothing: rejected with no older version, or whose instances cannot
        start. (A rejected reload with an older version still serving shows in the listings.)"""
        failed = {r.path.stem: r.last_error or "" for r in self.records.values()
                  if r.last_outcome == Outcome.REJECTED and r.version is None}
        for record in self.records.values():
            pool = record.version.pool if record.version else None
            if pool is not None and pool.down_reason and not pool.stats()["instances"]:
                failed[record.path.stem] = pool.down_reason
        return failed

    # -- retrying DOWN pools ----------------------------------------------------------------------
    def _start_retries(self) -> None:
        if self._retry_task is None and not self._closed:
            self._retry_task = asyncio.get_running_loop().create_task(self._retry_down_pools())

    async def _retry_down_pools(self) -> None:
        while True:
            await asyncio.sleep(RETRY_CHECK_S)
            try:
                self._retry_round(time.monotonic())
            except Exception:  # noqa: BLE001 - the loop must survive a bug in one round
                log.exception("retrying DOWN pools failed")

    def _retry_round(self, now: float) -> None:
        if not self._retries and not any_pool_down():
            return  # nothing down: no look at every record
        down: set[InstancePool] = set()
        for record in list(self.records.values()):
            version = record.version
            if version is None:
                continue
            for pool in (version.pool, *version.filter_pools):
                if pool.closed or not pool.down_reason:
                    continue
                down.add(pool)
                retry = self._retries.get(pool)
                if retry is None:
                    retry = self._retries[pool] = _Retry(_min_size(pool), next_at=now + RETRY_BASE_S)
                if now < retry.next_at:
                    continue
                retry.attempts += 1
                delay = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** retry.attempts)
                retry.next_at = now + delay
                log.warning("function %s: starting its instances again (attempt %d; next in %.1fs if it fails): %s",
                            pool.name, retry.attempts, delay, pool.down_reason)
                # At least one instance, even for a pool that may scale to zero: whether one starts now
                # is what this learns. The pool starts the missing ones in the background.
                pool.resize(pool.size, max(1, retry.min_size))
        for pool in [p for p in self._retries if p not in down]:
            retry = self._retries.pop(pool)
            if pool.closed:
                continue
            if _min_size(pool) != retry.min_size:
                pool.resize(pool.size, retry.min_size)
            log.info("function %s: serving again after %d retr%s", pool.name, retry.attempts,
                     "y" if retry.attempts == 1 else "ies")

    def close(self) -> int:
        """Take every version out of the router and retire its pools (root contexts retired: an
        instance still busy retires when released). Returns how many versions were closed. A deploy
        still running then closes what it built."""
        self._closed = True
        if self._collection is not None:
            self._collection.cancel()
            self._collection = None
        if self._retry_task is not None:
            self._retry_task.cancel()
            self._retry_task = None
        versions = self.router.versions()
        for version in versions:
            self.router.replace(version, None)
        for version in versions:
            version.close()
        return len(versions)


class _Slots:
    """A FIFO concurrency limit whose waiters cost O(1) each: asyncio.Semaphore (Python 3.11) looks
    at every waiter on each acquire, quadratic with 10,000 deploys waiting at start-up."""

    def __init__(self, count: int):
        self._free = count
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def __aenter__(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(slot)
        try:
            await slot
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled():
                self._release()  # handed a slot just as the caller went away: pass it on
            raise  # (a cancelled waiter is skipped when its turn comes)

    async def __aexit__(self, *_: object) -> None:
        self._release()

    def _release(self) -> None:
        while self._waiters:
            slot = self._waiters.popleft()
            if not slot.done():
                slot.set_result(None)  # the slot goes straight to the next waiter
                return
        self._free += 1


def _min_size(pool: InstancePool) -> int:
    return int(getattr(pool, "min_size", pool.size))


def _close_unused(building: asyncio.Future) -> None:
    """The version a cancelled deploy built (if it built one) is closed."""
    if not building.cancelled() and building.exception() is None:
        version = building.result()
        log.info("function %s: a deploy whose caller went away finished; its version is closed",
                 version.function_id)
        version.close()

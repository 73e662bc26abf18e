"""What is deployed: one record per module file, and the router. The watcher and the admin API
change them only through this small API (deploy, remove, resize, find), and every change to a
record happens under that record's lock — so a resize made while a reload is running waits for
it and applies to the version the reload put in place.

Deploying builds the new version completely (compiled, imports checked, pool started) before
swapping it into the router in one step; the old version then drains and is retired. A rejected
version leaves the previous one serving and records why.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host.config import FunctionConfig, HostConfig
from host.functions.deployer import Deployer
from host.functions.errors import DeployError
from host.functions.router import Router
from host.functions.spec import instance_count, spec_for
from host.functions.threads import GuestThreads
from host.functions.version import FunctionVersion

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    PENDING = "pending"
    DEPLOYED = "deployed"
    REJECTED = "rejected"
    REMOVED = "removed"


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


class Deployments:
    def __init__(self, config: HostConfig, deployer: Deployer, threads: GuestThreads, router: Router,
                 on_deployed: Callable[[FunctionVersion], None]):
        self.config = config
        self.deployer = deployer
        self.threads = threads
        self.router = router
        self.on_deployed = on_deployed
        self.records: dict[Path, Deployment] = {}

    def _record(self, path: Path) -> Deployment:
        path = path.resolve()
        if path not in self.records:
            self.records[path] = Deployment(path)
        return self.records[path]

    async def deploy(self, path: Path, override: FunctionConfig | None = None) -> Deployment:
        """(Re)deploy the module at `path`; on failure the previous version keeps serving."""
        record = self._record(path)
        async with record.lock:
            if self.records.get(record.path) is not record:  # removed while this waited for its lock:
                return await self.deploy(path, override)  # deploy it afresh, under the path's new record
            if override is not None:
                record.override = override
            try:
                spec = spec_for(self.config, record.path, record.override)
                new = await self.threads.run(self.deployer.deploy, spec)
            except DeployError as error:
                self._rejected(record, str(error))
                return record
            except Exception as error:  # noqa: BLE001 - a host bug while deploying must not stop the host
                log.exception("deploying %s failed unexpectedly", record.path)
                self._rejected(record, f"unexpected error: {error!r}")
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
        return record

    def _rejected(self, record: Deployment, reason: str) -> None:
        record._settle(Outcome.REJECTED, reason)
        serving = f"; version {record.version.sha256[:12]} keeps serving" if record.version else ""
        log.error("function %s rejected: %s%s", record.path.name, reason, serving)

    async def remove(self, path: Path) -> Deployment | None:
        record = self.records.get(path.resolve())
        if record is None:
            return None
        async with record.lock:
            if record.version is not None:
                self.router.replace(record.version, None)
                record.version.close()
                log.info("function %s undeployed (%s removed)", record.version.function_id, record.path.name)
            record.version = None
            record._settle(Outcome.REMOVED)
            # Under the lock: a deploy of the same path waiting for it then sees the record is gone.
            self.records.pop(record.path, None)
        return record

    async def resize(self, record: Deployment, instance_num: int) -> None:
        """Resize the serving version's pool (<= 0: one instance per CPU, as in Layotto) and remember
        it like install's settings, so a later reload of the file keeps the new size."""
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

    def close(self) -> int:
        """Take every version out of the router and retire its pools (root contexts retired: an
        instance still busy retires when released). Returns how many versions were closed."""
        versions = self.router.versions()
        for version in versions:
            self.router.replace(version, None)
        for version in versions:
            version.close()
        return len(versions)

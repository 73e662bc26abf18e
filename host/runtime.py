"""The host: engine, compiled-module cache, components, deployed functions, router — wired once.

Every module file has a Deployment record. Deploying (at start-up, on a file change, or through
the admin API) builds the new version completely — compiled, imports checked, pool started —
before swapping it into the router in one step; the old version then drains and is retired.
A rejected version leaves the previous one serving and records why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from abi import HostServices, WasmEngine, all_host_functions

from abi.engine import GuestTrap
from abi.vm import ProxyWasmVM

from .components.grpc_upstreams import GrpcUpstreams
from .components.state import StateService
from .components.upstreams import HttpUpstreams
from .config import FunctionConfig, HostConfig
from .deploy import Deployer
from .function import FunctionVersion
from .invoker import InProcessInvoker
from .module_cache import ModuleCache
from .pool import PoolClosed, PoolDown, PoolTimeout
from .router import Router
from .specs import DeployError, discover, spec_for
from .workers import GuestThreads

log = logging.getLogger(__name__)

# Layotto's actuator status words.
INIT, UP, DOWN = "INIT", "UP", "DOWN"
HEALTH_INTERVAL_S = 0.5


@dataclass
class Deployment:
    """What is deployed from one module file, and how its last (re)load went."""

    path: Path
    version: Optional[FunctionVersion] = None
    override: Optional[FunctionConfig] = None  # settings given through the admin API
    last_outcome: str = "pending"  # deployed | rejected | removed
    last_error: Optional[str] = None
    last_change: float = field(default_factory=time.time)
    reloads: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def describe(self) -> dict:
        info = self.version.describe() if self.version else {"source": str(self.path)}
        info.update({"last_reload": {"outcome": self.last_outcome, "error": self.last_error,
                                     "at": self.last_change}, "reloads": self.reloads})
        return info


class Host:
    def __init__(self, config: HostConfig, *, engine_backend: Optional[str] = None):
        self.config = config
        self.engine = WasmEngine(engine_backend, fuel_metering=config.server.fuel_metering)
        cache_dir = config.resolve(config.server.cache_dir) if config.server.cache_dir else None
        self.cache = ModuleCache(self.engine, cache_dir)
        self.linker = self.engine.linker(all_host_functions())
        self.router = Router()
        self.state = StateService(config.state)
        server = config.server
        self.invoker = InProcessInvoker(self.router, server.invoke_timeout_ms / 1000, server.max_invoke_depth)
        self.services = HostServices(state=self.state, invoker=self.invoker,
                                     logger=logging.getLogger("wasm.guest"))
        self.upstreams = HttpUpstreams(config.upstreams)
        self.services.http = self.upstreams
        self.grpc_upstreams = GrpcUpstreams(config.grpc_upstreams)
        self.services.grpc = self.grpc_upstreams
        self.threads = GuestThreads()
        self.deployer = Deployer(self.engine, self.linker, self.cache, self.services, self.threads)
        self.deployer.on_background = self.run_in_background
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._background: set[asyncio.Future] = set()
        self.status = INIT
        self.deployments: dict[Path, Deployment] = {}
        self.startup_error: Optional[str] = None
        # Component health is probed in a guest thread every HEALTH_INTERVAL_S (a probe can block
        # for a backend's timeout); readiness reads the last result and never waits.
        self.component_health: dict[str, tuple[bool, str]] = {}
        self._health_task: Optional[asyncio.Task] = None

    # -- start-up -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Deploy every configured function (concurrently); readiness is UP only if all succeeded."""
        self.engine.start_ticker()
        self._loop = asyncio.get_running_loop()
        await self.upstreams.start()
        try:
            paths = discover(self.config)
        except DeployError as error:
            self.startup_error = str(error)
            log.error("%s", error)
            paths = []
        await asyncio.gather(*(self.deploy_path(path) for path in paths))
        await self.refresh_health()
        self._health_task = asyncio.ensure_future(self._watch_health())
        self.status = UP
        log.info("host ready (engine back-end %s): %d function(s) serving: %s", self.engine.backend,
                 len(self.router.ids()), ", ".join(self.router.ids()) or "none")

    # -- deploying ------------------------------------------------------------------------------
    def deployment(self, path: Path) -> Deployment:
        path = path.resolve()
        if path not in self.deployments:
            self.deployments[path] = Deployment(path)
        return self.deployments[path]

    async def deploy_path(self, path: Path, override: Optional[FunctionConfig] = None) -> Deployment:
        """(Re)deploy the module at `path`; on failure the previous version keeps serving."""
        record = self.deployment(path)
        async with record.lock:
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
            if new.tick_period_ms:
                self._spawn(self._tick(new))
            record.reloads += old is not None
            record.last_outcome, record.last_error, record.last_change = "deployed", None, time.time()
            if old is not None:
                log.info("function %s: %s replaced by a new version (%s)", new.function_id, record.path.name,
                         new.sha256[:12])
                old.close()  # in-flight requests finish on the old instances, which then retire
        return record

    def _rejected(self, record: Deployment, reason: str) -> None:
        record.last_outcome, record.last_error, record.last_change = "rejected", reason, time.time()
        serving = f"; version {record.version.sha256[:12]} keeps serving" if record.version else ""
        log.error("function %s rejected: %s%s", record.path.name, reason, serving)

    async def remove_path(self, path: Path) -> Optional[Deployment]:
        record = self.deployments.get(path.resolve())
        if record is None:
            return None
        async with record.lock:
            if record.version is not None:
                self.router.replace(record.version, None)
                record.version.close()
                log.info("function %s undeployed (%s removed)", record.version.function_id, record.path.name)
            record.version = None
            record.last_outcome, record.last_error, record.last_change = "removed", None, time.time()
        self.deployments.pop(record.path, None)
        return record

    def find(self, name_or_id: str) -> Optional[Deployment]:
        """A deployment by function id, configured name or file stem."""
        for record in self.deployments.values():
            version = record.version
            if version is not None and name_or_id in (version.function_id, version.name):
                return record
        for record in self.deployments.values():
            if record.path.stem == name_or_id:
                return record
        return None

    # -- root-context work outside requests: timers and queue deliveries ---------------------------
    def run_in_background(self, version: FunctionVersion, work: Callable[[ProxyWasmVM], None]) -> None:
        """Thread-safe: run `work(vm)` on an idle instance of `version`, in a guest thread."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(lambda: self._spawn(self._background_job(version, work)))

    def _spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _background_job(self, version: FunctionVersion, work: Callable[[ProxyWasmVM], None]) -> None:
        try:
            vm = await version.pool.acquire(self.config.server.acquire_timeout_ms / 1000)
        except (PoolTimeout, PoolClosed, PoolDown) as error:
            log.warning("function %s: background callback dropped: %s", version.function_id, error)
            return
        await self.threads.run(_run_background_work, version, vm, work)

    async def _tick(self, version: FunctionVersion) -> None:
        """proxy_on_tick on one instance of the version every period, until it is retired."""
        period = version.tick_period_ms / 1000
        while not version.pool.closed:
            await asyncio.sleep(period)
            if not version.pool.closed:
                await self._background_job(version, lambda vm: vm.run_root_callback("proxy_on_tick"))

    # -- health ---------------------------------------------------------------------------------
    def failures(self) -> dict[str, str]:
        # A rejected reload with an older version still serving is reported in /functions, not here.
        failed = {r.path.stem: r.last_error or "" for r in self.deployments.values()
                  if r.last_outcome == "rejected" and r.version is None}
        for record in self.deployments.values():
            pool = record.version.pool if record.version else None
            if pool is not None and pool.down_reason and not pool.stats()["instances"]:
                failed[record.path.stem] = pool.down_reason
        if self.startup_error:
            failed["functions_dirs"] = self.startup_error
        return failed

    async def refresh_health(self) -> None:
        self.component_health = await self.threads.run(self._probe_components)

    def _probe_components(self) -> dict[str, tuple[bool, str]]:
        return {**self.state.health(), **self.upstreams.health()}

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_S)
            try:
                previous = self.component_health
                await self.refresh_health()
                for name, (ok, detail) in self.component_health.items():
                    if previous.get(name, (True, ""))[0] != ok:
                        log.log(logging.INFO if ok else logging.ERROR, "component %s is %s: %s", name,
                                UP if ok else DOWN, detail)
            except Exception:  # noqa: BLE001 - keep probing
                log.exception("component health probe failed")

    def readiness(self) -> tuple[str, dict]:
        components = {name: {"status": UP if ok else DOWN, "detail": detail}
                      for name, (ok, detail) in self.component_health.items()}
        failed = self.failures()
        details = {"functions": self.router.ids(), "failed": failed, "components": components}
        status = self.status
        if status == UP and (failed or any(c["status"] == DOWN for c in components.values())):
            status = DOWN
        return status, details

    async def stop(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
        for task in list(self._background):
            task.cancel()
        await self.upstreams.close()
        self.grpc_upstreams.close()
        versions = self.router.versions()
        for version in versions:
            self.router.remove(version)
        # Retire root contexts (proxy_on_done / proxy_on_delete) while the epoch ticker still
        # bounds a guest that hangs in them; an instance still busy retires when released.
        for version in versions:
            version.pool.close()
        if versions:
            log.info("shutdown: %d function pool(s) closed, root contexts retired", len(versions))
        self.engine.stop_ticker()
        self.threads.shutdown()
        self.state.close()
        log.info("shutdown: state stores closed")


def _run_background_work(version: FunctionVersion, vm: ProxyWasmVM, work: Callable[[ProxyWasmVM], None]) -> None:
    try:
        work(vm)
    except GuestTrap as trap:
        log.warning("function %s: root-context callback trapped: %s", version.function_id, trap)
    finally:
        version.pool.release(vm)

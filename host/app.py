"""The one wiring point: builds every part of the host from the config, and owns the order in which
they start and stop. Nothing else constructs parts or reaches into another part's insides."""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Any

from abi import HostServices, WasmEngine, all_host_functions
from host.api import RuntimeApi
from host.api.foreign import ForeignRuntimeApi
from host.components.catalog import Components
from host.components.health import HealthMonitor
from host.components.upstreams.grpc import GrpcUpstreams
from host.components.upstreams.http import HttpUpstreams
from host.config import HostConfig
from host.events.subscriptions import Events
from host.functions.background import Background
from host.functions.cache import ModuleCache
from host.functions.deployer import Deployer
from host.functions.deployments import Deployments
from host.functions.dispatch import Dispatcher
from host.functions.errors import DeployError
from host.functions.invoker import InProcessInvoker
from host.functions.router import Router
from host.functions.services import runtime_services
from host.functions.sources import discover
from host.functions.threads import GuestThreads
from host.functions.version import FunctionVersion
from host.metrics import HostMetrics
from host.metrics.counted_deployments import CountedDeployments
from host.tracing.setup import Installed, export_settings, install

log = logging.getLogger(__name__)


class Status(enum.StrEnum):
    """Layotto's actuator status words."""

    INIT = "INIT"
    UP = "UP"
    DOWN = "DOWN"


class App:
    def __init__(self, config: HostConfig, *, engine_backend: str | None = None):
        self.config = config
        server = config.server
        self.status = Status.INIT
        self.startup_error: str | None = None
        self.metrics = HostMetrics()  # GET /metrics (issue 14); one registry per App
        self.components = Components(
            {"state": config.state, "pubsub": config.pubsub, "lock": config.lock, "sequencer": config.sequencer,
             "configuration": config.configuration}, app_id=config.app_id, base_dir=config.resolve("."))
        self.engine = WasmEngine(engine_backend, fuel_metering=server.fuel_metering)
        self.cache = ModuleCache(self.engine, config.resolve(server.cache_dir) if server.cache_dir else None)
        self.linker = self.engine.linker(all_host_functions())
        self.router = Router()
        self.threads = GuestThreads()
        self.dispatcher = Dispatcher(self.router, self.threads, acquire_timeout_s=server.acquire_timeout_ms / 1000,
                                     request_timeout_s=server.request_timeout_ms / 1000,
                                     invoke_timeout_s=server.invoke_timeout_ms / 1000,
                                     max_invoke_depth=server.max_invoke_depth, metrics=self.metrics.requests)
        self.background = Background(self.dispatcher)
        self.upstreams = HttpUpstreams(config.upstreams)
        self.grpc_upstreams = GrpcUpstreams(config.grpc_upstreams)
        self.api = RuntimeApi(self.components, self.dispatcher,  # runtime API: host/grpc, host/http/dapr, guests
                              metrics=self.metrics.runtime)
        self.services = HostServices(invoker=InProcessInvoker(self.dispatcher), http=self.upstreams,
                                     grpc=self.grpc_upstreams, logger=logging.getLogger("wasm.guest"),
                                     runtime=ForeignRuntimeApi(self.api.for_api("function"), self.components),
                                     **runtime_services(self.components, self.metrics.runtime.for_api("function")))
        self.deployer = Deployer(self.engine, self.linker, self.cache, self.services, self.threads,
                                 self.background.run_in_background)
        self.deployments: Deployments = CountedDeployments(config, self.deployer, self.threads, self.router,
                                                           self._version_deployed, metrics=self.metrics.deploys)
        self.metrics.watch(versions=self.router.versions, cache_stats=self.cache.stats,
                           guest_metrics=self.services.metrics.snapshot)
        self.health = HealthMonitor(self.threads, [self.components.health, self.upstreams.health])
        self.events = Events(config.subscriptions, self.components, self.dispatcher)
        export_settings(config.tracing, config.app_id)  # issue 14: a wrong OTEL_* setting fails here
        self.tracing: Installed | None = None
        self.metrics.watch_events(lambda: self.events.subscribers)

    def _version_deployed(self, version: FunctionVersion) -> None:
        self.metrics.version_deployed(version)
        self.background.version_deployed(version)

    async def start(self, *, ready: bool = True) -> None:
        """Deploy every configured function (concurrently); readiness is UP only if all succeeded.
        `ready=False`: the caller calls `ready()` itself once its listeners answer."""
        self.tracing = install(self.config.tracing, self.config.app_id)  # span export, when configured
        self.engine.start_ticker()
        self.background.start()
        await self.upstreams.start()
        try:
            paths = discover(self.config)
        except DeployError as error:
            self.startup_error = str(error)
            log.error("%s", error)
            paths = []
        await self.deployments.deploy_all(paths)  # concurrently (issue 16: collector paused meanwhile)
        await self.health.start()
        self.events.start()
        if ready:
            self.ready()

    def ready(self) -> None:
        self.status = Status.UP
        log.info("host ready (engine back-end %s): %d function(s) serving: %s", self.engine.backend,
                 len(self.router.ids()), ", ".join(self.router.ids()) or "none")

    def info(self) -> dict[str, Any]:
        """`/actuator/info`: this host's app id, components and engine back-end."""
        return {"app": {"id": self.config.app_id}, "engine_backend": self.engine.backend,
                "components": self.components.info(), "subscriptions": self.events.describe()}

    def failures(self) -> dict[str, str]:
        failed = self.deployments.failures()
        if self.startup_error:
            failed["functions_dirs"] = self.startup_error
        return failed

    def readiness(self) -> tuple[Status, dict[str, Any]]:
        components = {name: {"status": Status.UP if ok else Status.DOWN, "detail": detail}
                      for name, (ok, detail) in self.health.last.items()}
        failed = self.failures()
        details = {"functions": self.router.ids(), "failed": failed, "components": components,
                   # issue 16: instances held now (scaled-to-zero functions hold none), the memory-map budget
                   "instances": self._instance_counts(), "limits": self.engine.limits()}
        status = self.status
        if status == Status.UP and (failed or any(c["status"] == Status.DOWN for c in components.values())):
            status = Status.DOWN
        return status, details

    def _instance_counts(self) -> dict[str, int]:
        """Started instances over every routed version (busy ones included), and how many
        functions hold none (scaled to zero)."""
        running = busy = at_zero = 0
        for version in self.router.versions():
            stats = version.pool.stats()
            running += stats["instances"]
            busy += stats["busy"]
            at_zero += stats["instances"] == 0
        return {"running": running, "busy": busy, "functions_at_zero": at_zero}

    async def stop(self) -> None:
        """Stop in the reverse order of start; every step is bounded."""
        # Deliveries in flight finish (their pools are still open); an unfinished one is redelivered later.
        await self.events.stop(self.config.server.shutdown_grace_ms / 1000)
        self.health.stop()
        self.background.stop()
        await self.upstreams.close()
        self.grpc_upstreams.close()
        # Retire root contexts (proxy_on_done / proxy_on_delete) while the epoch ticker still
        # bounds a guest that hangs in them.
        closed = self.deployments.close()
        if closed:
            log.info("shutdown: %d function pool(s) closed, root contexts retired", closed)
        self.engine.stop_ticker()
        self.threads.shutdown()
        self.components.close()
        log.info("shutdown: components closed")
        if self.tracing is not None:  # the spans still queued go out (bounded by the export timeout)
            await asyncio.to_thread(self.tracing.remove)
            self.tracing = None

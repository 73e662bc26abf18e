"""The host: engine, compiled-module cache, components, deployed functions, router — wired once."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Optional

from abi import HostServices, WasmEngine, all_host_functions

from .components.state import StateService
from .config import HostConfig
from .deploy import Deployer, DeployError, FunctionSpec, function_specs
from .function import FunctionVersion
from .invoker import InProcessInvoker
from .module_cache import ModuleCache
from .router import Router
from .workers import GuestThreads

log = logging.getLogger(__name__)

# Layotto's actuator status words.
INIT, UP, DOWN = "INIT", "UP", "DOWN"


class Host:
    def __init__(self, config: HostConfig, *, engine_backend: Optional[str] = None):
        self.config = config
        self.engine = WasmEngine(engine_backend)
        cache_dir = config.resolve(config.server.cache_dir) if config.server.cache_dir else None
        self.cache = ModuleCache(self.engine, cache_dir)
        self.linker = self.engine.linker(all_host_functions())
        self.router = Router()
        self.state = StateService(config.state)
        server = config.server
        self.invoker = InProcessInvoker(self.router, server.invoke_timeout_ms / 1000, server.max_invoke_depth)
        self.services = HostServices(state=self.state, invoker=self.invoker,
                                     logger=logging.getLogger("wasm.guest"))
        self.threads = GuestThreads()
        self.deployer = Deployer(self.engine, self.linker, self.cache, self.services, self.threads)
        self.status = INIT
        self.failures: dict[str, str] = {}  # function name -> why it is not serving

    async def start(self) -> None:
        """Deploy every configured function (concurrently); readiness is UP only if all succeeded."""
        self.engine.start_ticker()
        try:
            specs = function_specs(self.config)
        except DeployError as error:
            self.failures["functions_dirs"] = str(error)
            log.error("%s", error)
            specs = []
        results = await asyncio.gather(
            *(self.threads.run(self.deployer.deploy, spec) for spec in specs),
            return_exceptions=True)
        for spec, result in zip(specs, results):
            self._record_deploy(spec, result)
        self.status = DOWN if self.failures else UP
        log.info("host %s: %d function(s) serving: %s", self.status, len(self.router.ids()),
                 ", ".join(self.router.ids()) or "none")

    def _record_deploy(self, spec: FunctionSpec, result: object) -> None:
        if isinstance(result, FunctionVersion):
            self.router.add(result)
            self.failures.pop(spec.name, None)
        elif isinstance(result, DeployError):
            self.failures[spec.name] = str(result)
            log.error("function %s not deployed: %s", spec.name, result)
        else:
            self.failures[spec.name] = f"unexpected error: {result!r}"
            log.error("function %s not deployed", spec.name, exc_info=result)  # type: ignore[arg-type]

    def readiness(self) -> tuple[str, dict]:
        components = {name: {"status": UP if ok else DOWN, "detail": detail}
                      for name, (ok, detail) in self.state.health().items()}
        details = {"functions": self.router.ids(), "failed": dict(self.failures), "components": components}
        status = self.status
        if status == UP and any(c["status"] == DOWN for c in components.values()):
            status = DOWN
        return status, details

    async def stop(self) -> None:
        self.engine.stop_ticker()
        for version in self.router.versions():
            self.router.remove(version)
            version.pool.close()
        self.threads.shutdown()
        self.state.close()

    def functions_root(self) -> list[Path]:
        return [self.config.resolve(d) for d in self.config.functions_dirs]

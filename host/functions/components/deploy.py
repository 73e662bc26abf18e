"""A component function's file bytes -> a started pool: compile through the host's cache, check it
against the world, start `instance_num` instances. Called by host/functions/deployer.py when the
file is a component (host/functions/components/detect.py); everything after (router, reloads,
admin API, call path) is the same as for a module."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from typing import cast

import wasmtime

from abi import HostServices, ProxyWasmVM
from abi.engine import GuestTrap, WasmEngine
from host.functions.cache import ModuleCache
from host.functions.components.instance import ComponentCode, ComponentInstance, ComponentRefused, describe_error
from host.functions.components.linker import ComponentLinker
from host.functions.errors import DeployError
from host.functions.pool import BackgroundRunner, InstancePool
from host.functions.spec import FunctionSpec


class ComponentDeployer:
    def __init__(self, engine: WasmEngine, cache: ModuleCache, services: HostServices, pool_jobs: BackgroundRunner):
        self.engine = engine
        self.cache = cache
        self.services = services
        self.pool_jobs = pool_jobs
        self._linker: ComponentLinker | None = None
        self._lock = threading.Lock()

    @property
    def linker(self) -> ComponentLinker:
        """Built on first use: a host without component functions never links WASI 0.2."""
        with self._lock:
            if self._linker is None:
                self._linker = ComponentLinker(self.engine)
            return self._linker

    def code(self, spec: FunctionSpec, wasm: bytes) -> ComponentCode:
        try:
            component = self.cache.load_component(wasm)
        except wasmtime.WasmtimeError as error:
            raise DeployError(f"{spec.path.name}: invalid component: {describe_error(error)}") from None
        try:
            return ComponentCode.prepare(self.linker, component)
        except ComponentRefused as error:
            raise DeployError(f"{spec.path.name}: {error}") from None

    def start_pool(self, spec: FunctionSpec, wasm: bytes, *, as_filter: bool
                   ) -> tuple[ComponentInstance, InstancePool, bool, str]:
        """(first instance, full pool, inline-eligible (never: guest threads only), sha256 of the file)."""
        if as_filter:
            raise DeployError(f"{spec.path.name}: a component cannot be a filter (filters are proxy-wasm modules)")
        if spec.filters:
            raise DeployError(f"{spec.path.name}: filters in front of a component function are not supported")
        code = self.code(spec, wasm)
        settings = spec.plugin_settings()

        def new_instance() -> ComponentInstance:
            try:
                return ComponentInstance(code, settings, self.services, start_deadline_s=spec.timeout_s)
            except GuestTrap as trap:
                if trap.interrupted:
                    raise DeployError(f"{spec.path.name}: start-up (instantiation, function-id) did not return "
                                      f"within the {spec.timeout_s:g}s deadline (timeout_ms) and was interrupted"
                                      ) from None
                raise DeployError(f"{spec.path.name}: instantiation failed: {trap}") from None

        first = new_instance()
        # The pool only uses `broken` and `close()` of what it holds (and the call path branches on
        # the kind), so a component instance stands where its annotations say ProxyWasmVM.
        factory = cast(Callable[[], ProxyWasmVM], new_instance)
        pool = InstancePool(first.function_id, factory, spec.instance_num, self.pool_jobs, spec.max_queue,
                            min_size=spec.min_size, idle_timeout_s=spec.idle_timeout_s)
        pool.add(cast(ProxyWasmVM, first))
        try:
            pool.fill()
        except BaseException:  # a later instance failed: release those started
            pool.close()
            raise
        return first, pool, False, hashlib.sha256(wasm).hexdigest()

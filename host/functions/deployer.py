"""Turn a function's file into a running FunctionVersion: read, verify, compile (cached), check imports,
start the pool. Everything that can be wrong with a module is reported as a DeployError with the reason."""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import wasmtime

from abi import HostServices, ProxyWasmVM, StartupError
from abi.engine import GuestTrap, HostLinker, ResourceLimitError, WasmEngine
from abi.paused import PausedStreams
from host.functions.cache import ModuleCache
from host.functions.components.detect import is_component
from host.functions.errors import DeployError
from host.functions.policy import ExecutionPolicy
from host.functions.pool import BackgroundRunner, InstancePool, reclaim_idle_instances
from host.functions.spec import FunctionSpec
from host.functions.version import FunctionVersion

if TYPE_CHECKING:
    from host.functions.components import ComponentDeployer, ComponentInstance

log = logging.getLogger(__name__)

RootWork = Callable[[ProxyWasmVM], None]


@dataclass(frozen=True, eq=False)
class RootTarget:
    """Where one pool's root-context work goes (host/functions/background.py): to its instances that
    hold a paused stream, else to an idle one; and the tick period its guest set at start-up."""

    pool: InstancePool
    paused: PausedStreams
    tick_period_ms: int


# Runs root-context work (a tick, a queue delivery) for one pool of a version (host/functions/background.py).
RunInBackground = Callable[[FunctionVersion, RootTarget, RootWork], None]
# The value must not refer to its key: a RootTarget holds its pool, which would then never be freed
# (every retired version leaked with it); the target is rebuilt on lookup instead (issue 15 item 9).
_ROOT_TARGETS: weakref.WeakKeyDictionary[InstancePool, tuple[PausedStreams, int]] = weakref.WeakKeyDictionary()


def root_target(pool: InstancePool) -> RootTarget | None:
    """The root target of a module pool (the function's or a filter's); None for a component's."""
    entry = _ROOT_TARGETS.get(pool)
    return None if entry is None else RootTarget(pool, *entry)


class Deployer:
    def __init__(self, engine: WasmEngine, linker: HostLinker, cache: ModuleCache, services: HostServices,
                 pool_jobs: BackgroundRunner, run_in_background: RunInBackground):
        self.engine = engine
        self.linker = linker
        self.cache = cache
        self.services = services
        self.pool_jobs = pool_jobs
        self.run_in_background = run_in_background
        # Near the memory-map limit, idle instances above their minimum go before anything is refused
        # (issue 16): functions scaled to zero hold only their module.
        engine.maps.reclaim = reclaim_idle_instances
        self._components: ComponentDeployer | None = None

    @property
    def components(self) -> ComponentDeployer:
        """WebAssembly components of the function world (host/functions/components), set up when
        the first one is deployed (wasmtime's component support is not imported before)."""
        if self._components is None:
            from host.functions.components import ComponentDeployer

            self._components = ComponentDeployer(self.engine, self.cache, self.services, self.pool_jobs)
        return self._components

    def read_module(self, spec: FunctionSpec) -> bytes:
        try:
            raw = spec.path.read_bytes()
        except OSError as error:
            raise DeployError(f"cannot read {spec.path}: {error.strerror}") from None
        if spec.md5 and hashlib.md5(raw).hexdigest() != spec.md5:
            raise DeployError(f"{spec.path.name}: md5 {hashlib.md5(raw).hexdigest()} does not match the "
                              f"configured {spec.md5}")
        if spec.path.suffix == ".wat":
            try:
                return bytes(wasmtime.wat2wasm(raw.decode("utf-8", "replace")))
            except wasmtime.WasmtimeError as error:
                raise DeployError(f"{spec.path.name}: invalid WAT: {_first_line(error)}") from None
        if raw[:4] != b"\0asm":
            raise DeployError(f"{spec.path.name}: not a WebAssembly module (bad magic number)")
        return raw

    def compile(self, spec: FunctionSpec, wasm: bytes) -> wasmtime.Module:
        try:
            module = self.cache.load(wasm)
        except wasmtime.WasmtimeError as error:
            raise DeployError(f"{spec.path.name}: invalid module: {_first_line(error)}") from None
        except ResourceLimitError as error:  # issue 16: a process limit, nothing wrong with the module
            raise DeployError(f"{spec.path.name}: refused: {error}") from None
        missing = self.linker.missing_imports(module)
        if missing:
            raise DeployError(f"{spec.path.name}: imports this host does not provide: " + "; ".join(missing))
        return module

    def deploy(self, spec: FunctionSpec) -> FunctionVersion:
        """Blocking (run it in a worker thread): returns a version whose pools are full."""
        deployed: list[FunctionVersion] = []  # filled once the version exists

        def run_in_background(target: RootTarget, work: RootWork) -> None:
            if deployed:
                self.run_in_background(deployed[0], target, work)
            else:
                log.debug("function %s: background work before the version is live dropped", spec.name)

        filter_pools: list[InstancePool] = []
        filters_pure = True
        try:
            for filter_spec in spec.filters:
                _, pool, kind, _ = self._start_pool(filter_spec, run_in_background, label=f"filter of {spec.name}: ")
                filter_pools.append(pool)
                filters_pure = filters_pure and kind == "pure"
            first, pool, kind, sha256 = self._start_pool(spec, run_in_background)
        except BaseException as error:
            for started in filter_pools:
                started.close()
            if filter_pools and isinstance(error, DeployError):
                error.started_nothing = False  # the filters' instances are garbage now
            raise
        log.info("deployed %s as id %r from %s (%d to %d instances%s)", spec.name, first.function_id, spec.path,
                 spec.min_size, spec.instance_num, f", {len(filter_pools)} filter(s)" if filter_pools else "")
        version = FunctionVersion(
            name=spec.name, function_id=first.function_id, source=spec.path, sha256=sha256,
            pool=pool, filter_pools=tuple(filter_pools), timeout_s=spec.timeout_s, abi_version=first.abi_version,
            tick_period_ms=first.tick_period_ms, policy=_policy(kind, filters_pure, bool(filter_pools)))
        deployed.append(version)
        if first.abi_version == "unknown":
            log.warning("function %s: the module exports no proxy_abi_version_* marker; treated as ABI 0.2.1",
                        spec.name)
        return version

    def _start_pool(self, spec: FunctionSpec, run_in_background: Callable[[RootTarget, RootWork], None],
                    label: str = "") -> tuple[ProxyWasmVM | ComponentInstance, InstancePool, str, str]:
        """Compile `spec`'s module and start a full pool of it: (first instance, pool, what its
        imports allow — "pure", "reads" or "" (see `_policy`) —, sha256 of the module)."""
        try:
            wasm = self.read_module(spec)
            if is_component(wasm):  # a component of the function world: its own compile, check and pool
                component, pool, eligible, sha256 = self.components.start_pool(spec, wasm, as_filter=bool(label))
                return component, pool, "pure" if eligible else "", sha256
            module = self.compile(spec, wasm)
        except DeployError as error:
            raise DeployError(f"{label}{error}", started_nothing=True) from None
        settings = spec.plugin_settings()
        # Root work of this pool (its ticks, its queue deliveries) goes to the pool's own instances.
        paused = PausedStreams()
        target: list[RootTarget] = []  # set once the pool exists

        def on_background(work: RootWork) -> None:
            if target:
                run_in_background(target[0], work)

        def new_instance() -> ProxyWasmVM:
            # Start-up code (the module's start function, `_initialize`/`_start`, proxy_on_vm_start,
            # proxy_on_configure) runs under the function's deadline (`timeout_ms`), at boot as on a
            # reload: one that never returns is interrupted, and the module rejected saying so.
            try:
                vm = ProxyWasmVM(self.engine, self.linker, module, settings, self.services,
                                 start_deadline_s=spec.timeout_s)
            except GuestTrap as trap:
                if trap.interrupted:
                    raise DeployError(f"{label}{spec.path.name}: the start function {_overran(spec)}") from None
                raise DeployError(f"{label}{spec.path.name}: instantiation failed: {_first_line(trap)}") from None
            except wasmtime.WasmtimeError as error:
                raise DeployError(f"{label}{spec.path.name}: instantiation failed: {_first_line(error)}") from None
            vm.on_background = on_background
            vm.paused_streams = paused
            try:
                vm.start(spec.timeout_s)
            except StartupError as error:
                cause = error.__cause__
                if isinstance(cause, GuestTrap) and cause.interrupted:
                    raise DeployError(f"{label}{spec.path.name}: start-up ({_STARTUP_CALLS}) "
                                      f"{_overran(spec)}") from None
                raise DeployError(f"{label}{spec.path.name}: {error}") from None
            return vm

        # --- pool (issue 16) ---
        # The first instance tells the function id (proxy_get_id), which requests route by; the pool
        # then keeps min_size instances, grows to instance_num under load and retires idle ones
        # beyond the minimum after idle_timeout_s (the first one too, when the minimum is 0).
        try:
            first = new_instance()
        except ResourceLimitError as error:
            raise DeployError(f"{label}{spec.path.name}: refused: {error}") from None
        pool = InstancePool(first.function_id, new_instance, spec.instance_num, self.pool_jobs, spec.max_queue,
                            min_size=spec.min_size, idle_timeout_s=spec.idle_timeout_s)
        target.append(RootTarget(pool, paused, first.tick_period_ms))
        _ROOT_TARGETS[pool] = (paused, first.tick_period_ms)
        pool.add(first)
        try:
            pool.fill()
        except BaseException as error:  # a later instance failed (an engine limit, say): release those started
            pool.close()
            if isinstance(error, ResourceLimitError):
                raise DeployError(f"{label}{spec.path.name}: refused: {error}") from None
            raise
        # --- end pool ---
        kind = "pure" if self.linker.only_pure_imports(module) else \
            "reads" if self.linker.only_replayable_imports(module) else ""
        return first, pool, kind, hashlib.sha256(wasm).hexdigest()


def _policy(kind: str, filters_pure: bool, has_filters: bool) -> ExecutionPolicy:
    """A function may run inline when its imports (and its filters') are pure, or — without filters —
    when they are pure or reads, its blocking reads then bounded by the inline budget
    (host/loop_budget.py)."""
    if kind == "pure" and filters_pure:
        return ExecutionPolicy(True)
    return ExecutionPolicy(kind == "reads" and not has_filters, blocking=True)


_STARTUP_CALLS = "_initialize/_start, proxy_on_vm_start, proxy_on_configure"


def _overran(spec: FunctionSpec) -> str:
    return f"did not return within the {spec.timeout_s:g}s deadline (timeout_ms) and was interrupted"


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__

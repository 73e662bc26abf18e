"""Functions written as WebAssembly components of this host's world (sdk-guest/wit/function.wit),
beside proxy-wasm modules: detection by header, the linker with the `runtime` interface, instances
with the pool's surface, and deploying them. Everything else (router, reloads, admin API, the call
path) treats both kinds alike."""

from host.functions.components.deploy import ComponentDeployer
from host.functions.components.detect import is_component
from host.functions.components.instance import ComponentCode, ComponentInstance, ComponentRefused
from host.functions.components.linker import ComponentLinker

__all__ = ["ComponentCode", "ComponentDeployer", "ComponentInstance", "ComponentLinker", "ComponentRefused",
           "is_component"]

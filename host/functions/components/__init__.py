"""Functions written as WebAssembly components of this host's world (sdk-guest/wit/function.wit),
beside proxy-wasm modules: detection by header, the linker with the `runtime` interface, instances
with the pool's surface, and deploying them. Everything else (router, reloads, admin API, the call
path) treats both kinds alike.

The names below are imported on first use (PEP 562): wasmtime's component-model support costs start-up
time a host serving only proxy-wasm modules need not pay (issue 16)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from host.functions.components.deploy import ComponentDeployer
    from host.functions.components.detect import is_component
    from host.functions.components.instance import ComponentCode, ComponentInstance, ComponentRefused
    from host.functions.components.linker import ComponentLinker

_WHERE = {"ComponentDeployer": "deploy", "is_component": "detect", "ComponentCode": "instance",
          "ComponentInstance": "instance", "ComponentRefused": "instance", "ComponentLinker": "linker"}

__all__ = ["ComponentCode", "ComponentDeployer", "ComponentInstance", "ComponentLinker", "ComponentRefused",
           "is_component"]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value

"""The proxy-wasm 0.2.x ABI plus Layotto's extensions: codes, guest memory, host imports, contexts.

Nothing here knows about HTTP servers, Redis or gRPC: the host passes what the ABI needs through
`HostServices` (see `abi.services`).
"""

from abi.codes import Action, BufferType, LogLevel, MapType, Status
from abi.engine import GuestTrap, WasmEngine
from abi.http import HttpRequest, HttpResponse
from abi.imports import all_host_functions
from abi.services import HostServices, ServiceError
from abi.vm import PluginSettings, ProxyWasmVM, StartupError

__all__ = [
    "Action", "BufferType", "GuestTrap", "HostServices", "HttpRequest", "HttpResponse", "LogLevel", "MapType",
    "PluginSettings", "ProxyWasmVM", "ServiceError", "StartupError", "Status", "WasmEngine", "all_host_functions",
]

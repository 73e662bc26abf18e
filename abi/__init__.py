"""The proxy-wasm 0.2.x ABI plus Layotto's extensions: codes, guest memory, host imports, contexts.

Nothing here knows about HTTP servers, Redis or gRPC: the host passes what the ABI needs through
`HostServices` (see `abi.services`).
"""

from .codes import Action, BufferType, LogLevel, MapType, Status
from .engine import GuestTrap, WasmEngine
from .http import HttpRequest, HttpResponse
from .imports import all_host_functions
from .services import HostServices, ServiceError
from .vm import PluginSettings, ProxyWasmVM, StartupError

__all__ = [
    "Action", "BufferType", "GuestTrap", "HostServices", "HttpRequest", "HttpResponse", "LogLevel", "MapType",
    "PluginSettings", "ProxyWasmVM", "ServiceError", "StartupError", "Status", "WasmEngine", "all_host_functions",
]

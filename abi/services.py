"""What the ABI needs from the embedding host, as small interfaces the host implements."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol


class ServiceError(Exception):
    """A runtime call (state, invoke) failed; the guest gets InternalFailure and the reason is logged."""


class StateReader(Protocol):
    def get_state(self, store_name: str, key: str) -> Optional[bytes]:
        """The value, or None when the key does not exist; raises ServiceError on failure."""


class Invoker(Protocol):
    def invoke(self, function_id: str, method: str, param: bytes) -> bytes:
        """Call another function; returns the body of its 2xx answer or raises ServiceError."""


class _NoState:
    def get_state(self, store_name: str, key: str) -> Optional[bytes]:
        raise ServiceError(f"no state store named {store_name!r}")


class _NoInvoker:
    def invoke(self, function_id: str, method: str, param: bytes) -> bytes:
        raise ServiceError("invoking other functions is not available here")


@dataclass
class HostServices:
    state: StateReader = field(default_factory=_NoState)
    invoker: Invoker = field(default_factory=_NoInvoker)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("wasm.guest"))
    now_ns: Callable[[], int] = time.time_ns

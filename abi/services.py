"""What the ABI needs from the embedding host, as small interfaces the host implements."""

from __future__ import annotations

import concurrent.futures
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

from .foreign import DEFAULT_FOREIGN_FUNCTIONS, ForeignFunction
from .maps import HeaderList
from .shared import Metrics, SharedData, SharedQueues


class ServiceError(Exception):
    """A runtime call (state, invoke) failed; the guest gets InternalFailure and the reason is logged."""


class StateReader(Protocol):
    def get_state(self, store_name: str, key: str) -> Optional[bytes]:
        """The value, or None when the key does not exist; raises ServiceError on failure."""


class Invoker(Protocol):
    def invoke(self, function_id: str, method: str, param: bytes) -> bytes:
        """Call another function; returns the body of its 2xx answer or raises ServiceError."""


@dataclass
class HttpCallResult:
    """What an upstream answered (status 0 and an error message when the call itself failed)."""

    status: int
    headers: HeaderList
    body: bytes
    trailers: HeaderList = field(default_factory=list)
    error: str = ""


class HttpCaller(Protocol):
    def has_upstream(self, name: str) -> bool: ...

    def dispatch(self, upstream: str, headers: HeaderList, body: bytes, trailers: HeaderList,
                 timeout_s: float) -> "concurrent.futures.Future[HttpCallResult]":
        """Start the call (it runs elsewhere); the future resolves with its result, never raises."""


class _NoUpstreams:
    def has_upstream(self, name: str) -> bool:
        return False

    def dispatch(self, upstream: str, headers: HeaderList, body: bytes, trailers: HeaderList,
                 timeout_s: float) -> "concurrent.futures.Future[HttpCallResult]":
        raise ServiceError("no upstreams configured")


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
    http: HttpCaller = field(default_factory=_NoUpstreams)
    shared_data: SharedData = field(default_factory=SharedData)
    queues: SharedQueues = field(default_factory=SharedQueues)
    metrics: Metrics = field(default_factory=Metrics)
    foreign_functions: dict[str, ForeignFunction] = field(default_factory=lambda: dict(DEFAULT_FOREIGN_FUNCTIONS))

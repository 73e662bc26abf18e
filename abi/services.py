"""What the ABI needs from the embedding host, as small interfaces the host implements."""

from __future__ import annotations

import concurrent.futures
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Union

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


@dataclass(frozen=True)
class GrpcInitialMetadata:
    metadata: HeaderList


@dataclass(frozen=True)
class GrpcMessage:
    data: bytes


@dataclass(frozen=True)
class GrpcTrailingMetadata:
    metadata: HeaderList


@dataclass(frozen=True)
class GrpcClose:
    """The call or stream is over: its gRPC status code (0 OK, 4 DEADLINE_EXCEEDED, 14 UNAVAILABLE...)."""

    status: int
    message: str = ""


# What a gRPC call or stream receives, in this order: initial metadata (when there is any), its
# messages, trailing metadata (when there is any), then one close.
GrpcEvent = Union[GrpcInitialMetadata, GrpcMessage, GrpcTrailingMetadata, GrpcClose]
GrpcSink = Callable[[GrpcEvent], None]  # thread-safe; called from whichever thread receives


class GrpcCall(Protocol):
    def cancel(self) -> None:
        """Abandon the call: nothing more reaches the sink."""


class GrpcStream(GrpcCall, Protocol):
    def send(self, message: bytes) -> None: ...

    def close_send(self) -> None:
        """No more messages from this side; the upstream may still answer, then closes."""


class GrpcCaller(Protocol):
    def has_upstream(self, name: str) -> bool: ...

    def call(self, upstream: str, service: str, method: str, metadata: HeaderList, message: bytes,
             timeout_s: float, sink: GrpcSink) -> GrpcCall:
        """Start a unary call (raw bytes in and out); raises ServiceError when it cannot be sent."""

    def stream(self, upstream: str, service: str, method: str, metadata: HeaderList, sink: GrpcSink) -> GrpcStream:
        """Open a bidirectional stream; raises ServiceError when it cannot be opened."""


class _NoGrpcUpstreams:
    def has_upstream(self, name: str) -> bool:
        return False

    def call(self, upstream: str, service: str, method: str, metadata: HeaderList, message: bytes,
             timeout_s: float, sink: GrpcSink) -> GrpcCall:
        raise ServiceError("no gRPC upstreams configured")

    def stream(self, upstream: str, service: str, method: str, metadata: HeaderList, sink: GrpcSink) -> GrpcStream:
        raise ServiceError("no gRPC upstreams configured")


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
    grpc: GrpcCaller = field(default_factory=_NoGrpcUpstreams)
    shared_data: SharedData = field(default_factory=SharedData)
    queues: SharedQueues = field(default_factory=SharedQueues)
    metrics: Metrics = field(default_factory=Metrics)
    foreign_functions: dict[str, ForeignFunction] = field(default_factory=lambda: dict(DEFAULT_FOREIGN_FUNCTIONS))

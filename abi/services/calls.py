"""Outbound calls a guest makes: http calls and gRPC calls/streams to configured upstreams."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from abi.maps import HeaderList
from abi.services.errors import ServiceError


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
                 timeout_s: float) -> concurrent.futures.Future[HttpCallResult]:
        """Start the call (it runs elsewhere); the future resolves with its result, never raises."""


class NoUpstreams:
    def has_upstream(self, name: str) -> bool:
        return False

    def dispatch(self, upstream: str, headers: HeaderList, body: bytes, trailers: HeaderList,
                 timeout_s: float) -> concurrent.futures.Future[HttpCallResult]:
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
GrpcEvent = GrpcInitialMetadata | GrpcMessage | GrpcTrailingMetadata | GrpcClose
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


class NoGrpcUpstreams:
    def has_upstream(self, name: str) -> bool:
        return False

    def call(self, upstream: str, service: str, method: str, metadata: HeaderList, message: bytes,
             timeout_s: float, sink: GrpcSink) -> GrpcCall:
        raise ServiceError("no gRPC upstreams configured")

    def stream(self, upstream: str, service: str, method: str, metadata: HeaderList, sink: GrpcSink) -> GrpcStream:
        raise ServiceError("no gRPC upstreams configured")

"""Outbound calls in flight — http calls, gRPC calls and gRPC streams — and how each hands what it
receives to the guest.

Whatever a call receives is posted, from whichever thread receives it, to its instance's inbox as
`(token, event)`. The instance's drain loop (`ProxyWasmVM.drain_calls`) takes events in arrival
order and gives each to the pending call it belongs to, whose `deliver` runs the guest callback. A
call leaves the table when its last callback is about to run (so the guest may start another from
it), or when the guest cancels it; a late event for a token no longer in the table is dropped.

Calls belong to the root context, as in Envoy: callbacks get the root context id, and a guest that
paused its stream resumes it with `proxy_continue_stream` from a callback.
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from typing import TYPE_CHECKING

from abi.codes import BufferType, MapType
from abi.services import (
    GrpcCall,
    GrpcClose,
    GrpcEvent,
    GrpcInitialMetadata,
    GrpcMessage,
    GrpcStream,
    GrpcTrailingMetadata,
    HttpCallResult,
)

if TYPE_CHECKING:
    from abi.vm import ProxyWasmVM

GRPC_DEADLINE_EXCEEDED = 4
CallEvent = HttpCallResult | GrpcEvent


@dataclass
class PendingCall:
    token: int
    deadline: float  # monotonic time after which the host gives up waiting (inf: only the request's)

    def deliver(self, vm: ProxyWasmVM, event: CallEvent) -> None:
        """Run the guest callback for `event` (on the instance's thread, guest code not running)."""
        raise NotImplementedError

    def expire(self) -> CallEvent:
        """The deadline passed: stop the call and say so with the event the guest then receives."""
        self.cancel()
        return self.timeout_event()

    def timeout_event(self) -> CallEvent:
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError


@dataclass
class PendingHttpCall(PendingCall):
    future: concurrent.futures.Future[HttpCallResult]

    def deliver(self, vm: ProxyWasmVM, event: CallEvent) -> None:
        assert isinstance(event, HttpCallResult)
        vm.pending_calls.pop(self.token, None)
        vm.run_call_callback("proxy_on_http_call_response", self.token,
                             len(event.headers), len(event.body), len(event.trailers),
                             buffers={BufferType.HTTP_CALL_RESPONSE_BODY: event.body},
                             maps={MapType.HTTP_CALL_RESPONSE_HEADERS: event.headers,
                                   MapType.HTTP_CALL_RESPONSE_TRAILERS: event.trailers},
                             status=(event.status, event.error.encode()))

    def timeout_event(self) -> CallEvent:
        return HttpCallResult(0, [], b"", error="timeout")

    def cancel(self) -> None:
        self.future.cancel()


def http_result(future: concurrent.futures.Future[HttpCallResult]) -> HttpCallResult:
    """The result of a finished http-call future; a cancelled or failed one becomes an error result."""
    if future.cancelled():
        return HttpCallResult(0, [], b"", error="cancelled")
    error = future.exception()
    if error is not None:
        return HttpCallResult(0, [], b"", error=f"http call failed: {error}")
    return future.result()


@dataclass
class PendingGrpcCall(PendingCall):
    """A unary gRPC call: initial metadata, the answer, trailing metadata, close — or only a close."""

    handle: GrpcCall

    def deliver(self, vm: ProxyWasmVM, event: CallEvent) -> None:
        if isinstance(event, GrpcInitialMetadata):
            vm.run_call_callback("proxy_on_grpc_receive_initial_metadata", self.token, len(event.metadata),
                                 maps={MapType.GRPC_RECEIVE_INITIAL_METADATA: event.metadata})
        elif isinstance(event, GrpcMessage):
            vm.run_call_callback("proxy_on_grpc_receive", self.token, len(event.data),
                                 buffers={BufferType.GRPC_RECEIVE_BUFFER: event.data})
        elif isinstance(event, GrpcTrailingMetadata):
            vm.run_call_callback("proxy_on_grpc_receive_trailing_metadata", self.token, len(event.metadata),
                                 maps={MapType.GRPC_RECEIVE_TRAILING_METADATA: event.metadata})
        else:
            assert isinstance(event, GrpcClose)
            vm.pending_calls.pop(self.token, None)
            vm.run_call_callback("proxy_on_grpc_close", self.token, event.status,
                                 status=(event.status, event.message.encode("utf-8", "replace")))

    def timeout_event(self) -> CallEvent:
        return GrpcClose(GRPC_DEADLINE_EXCEEDED, "deadline exceeded")

    def cancel(self) -> None:
        self.handle.cancel()


@dataclass
class PendingGrpcStream(PendingGrpcCall):
    """A bidirectional stream: messages go out with proxy_grpc_send until the guest half-closes it
    (end_of_stream, or proxy_grpc_close); it stays pending until the upstream closes it. It has no
    deadline of its own (math.inf): the request's deadline bounds it."""

    handle: GrpcStream
    sending_closed: bool = False

    def send(self, message: bytes, end_of_stream: bool) -> None:
        self.handle.send(message)
        if end_of_stream:
            self.close_send()

    def close_send(self) -> None:
        if not self.sending_closed:
            self.sending_closed = True
            self.handle.close_send()

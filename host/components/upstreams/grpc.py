"""gRPC upstreams for `proxy_grpc_call` / `proxy_grpc_stream`: a name -> HOST:PORT map from config,
one insecure grpcio channel per upstream (created on first use, closed when the host stops).

Calls are generic — raw bytes in and out, no protobuf: the guest names the service and method, the
host calls `/{service}/{method}`. What arrives is handed to the caller's sink as ABI events (in
order: initial metadata, messages, trailing metadata, close) from grpcio's threads: a unary call's
done-callback, or one reader thread per stream.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from abi.maps import HeaderList
from abi.services import (
    GrpcClose,
    GrpcEvent,
    GrpcInitialMetadata,
    GrpcMessage,
    GrpcSink,
    GrpcTrailingMetadata,
    ServiceError,
)
from host.lazy import lazy_module
from host.tracing.current import end_call, start_call

if TYPE_CHECKING:
    import grpc
else:
    grpc = lazy_module("grpc")  # imported with the first grpc_upstreams call (start-up time)

log = logging.getLogger(__name__)

GRPC_INTERNAL = 13


class GrpcUpstreams:
    def __init__(self, targets: dict[str, str]):
        self.targets = dict(targets)
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()
        self._closed = False

    def has_upstream(self, name: str) -> bool:
        return name in self.targets

    def call(self, upstream: str, service: str, method: str, metadata: HeaderList, message: bytes,
             timeout_s: float, sink: GrpcSink) -> _UnaryCall:
        rpc = self._channel(upstream).unary_unary(_path(service, method), request_serializer=None,
                                                  response_deserializer=None)
        metadata, sink, span = _traced(metadata, upstream, service, method, sink)
        try:
            future = rpc.future(message, timeout=timeout_s, metadata=_to_grpc(metadata))
        except (TypeError, ValueError) as error:
            end_call(span, str(error))
            raise ServiceError(f"{upstream}: {error}") from None
        call = _UnaryCall(future, sink)
        future.add_done_callback(call.finished)
        return call

    def stream(self, upstream: str, service: str, method: str, metadata: HeaderList, sink: GrpcSink) -> _Stream:
        rpc = self._channel(upstream).stream_stream(_path(service, method), request_serializer=None,
                                                    response_deserializer=None)
        outbox = _Outbox()
        metadata, sink, span = _traced(metadata, upstream, service, method, sink)
        try:
            rendezvous = rpc(iter(outbox), metadata=_to_grpc(metadata))
        except (TypeError, ValueError) as error:
            end_call(span, str(error))
            raise ServiceError(f"{upstream}: {error}") from None
        stream = _Stream(rendezvous, outbox, sink)
        threading.Thread(target=stream.read, name=f"grpc-stream-{upstream}", daemon=True).start()
        return stream

    def close(self) -> None:
        """Close every channel (calls still running end CANCELLED); later calls are refused."""
        with self._lock:
            self._closed = True
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()

    def _channel(self, upstream: str) -> grpc.Channel:
        with self._lock:
            if self._closed:
                raise ServiceError("gRPC upstreams are closed")
            channel = self._channels.get(upstream)
            if channel is None:
                channel = self._channels[upstream] = grpc.insecure_channel(self.targets[upstream])
            return channel


class _UnaryCall:
    """Success: initial metadata (if any), the answer, trailing metadata (if any), close 0.
    Failure: only the close, with the gRPC status code and its details as the status message."""

    def __init__(self, future: grpc.Future, sink: GrpcSink):
        self._future = future
        self._sink = sink
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True
        self._future.cancel()

    def finished(self, future: grpc.Future) -> None:
        if self._cancelled:
            return
        try:
            code = future.code()
            if code is grpc.StatusCode.OK:
                initial = _from_grpc(future.initial_metadata())
                if initial:
                    self._sink(GrpcInitialMetadata(initial))
                self._sink(GrpcMessage(future.result()))
                trailing = _from_grpc(future.trailing_metadata())
                if trailing:
                    self._sink(GrpcTrailingMetadata(trailing))
            self._sink(GrpcClose(code.value[0], future.details() or ""))
        except Exception as error:  # noqa: BLE001 - the guest must still hear that the call ended
            log.exception("gRPC call result could not be read")
            self._sink(GrpcClose(GRPC_INTERNAL, f"host error: {error}"))


class _Outbox:
    """The request iterator grpcio reads a stream's messages from; None ends it."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

    def put(self, message: bytes) -> None:
        self._queue.put(message)

    def end(self) -> None:
        self._queue.put(None)

    def __iter__(self) -> Iterator[bytes]:
        while (message := self._queue.get()) is not None:
            yield message


class _Stream:
    def __init__(self, rendezvous, outbox: _Outbox, sink: GrpcSink):
        self._rendezvous = rendezvous  # a grpc.Call that also iterates the answers
        self._outbox = outbox
        self._sink = sink
        self._cancelled = False

    def send(self, message: bytes) -> None:
        self._outbox.put(message)

    def close_send(self) -> None:
        self._outbox.end()

    def cancel(self) -> None:
        self._cancelled = True
        self._rendezvous.cancel()
        self._outbox.end()  # releases grpcio's thread waiting for the next message

    def read(self) -> None:
        """The stream's reader thread: every answer as it comes, then trailing metadata and close."""
        call = self._rendezvous
        try:
            initial = _from_grpc(call.initial_metadata())
            if initial:
                self._emit(GrpcInitialMetadata(initial))
            for message in call:
                self._emit(GrpcMessage(message))
        except grpc.RpcError:
            pass  # the status below says why
        except Exception:  # noqa: BLE001 - the guest must still hear that the stream ended
            log.exception("gRPC stream failed while reading")
            call.cancel()
        finally:
            self._outbox.end()  # the upstream is done: stop waiting for messages to send
        trailing = _from_grpc(call.trailing_metadata())
        if trailing:
            self._emit(GrpcTrailingMetadata(trailing))
        self._emit(GrpcClose(call.code().value[0], call.details() or ""))

    def _emit(self, event) -> None:
        if not self._cancelled:
            self._sink(event)


def _path(service: str, method: str) -> str:
    return f"/{service}/{method}"


def _traced(metadata: HeaderList, upstream: str, service: str, method: str,
            sink: GrpcSink) -> tuple[HeaderList, GrpcSink, object]:
    """Called from the guest's thread: the request's trace context goes along as metadata (issue 14);
    a recorded call's span (returned, None when not recorded) ends with the call's close."""
    metadata, span = start_call(metadata, "client", lambda: (f"{service}/{method}", {
        "rpc.system": "grpc", "rpc.service": service, "rpc.method": method, "wasm_faas.upstream": upstream}))
    if span is None:
        return metadata, sink, None

    def closing(event: GrpcEvent) -> None:
        if isinstance(event, GrpcClose):
            end_call(span, event.message if event.status else "", {"rpc.grpc.status_code": event.status})
        sink(event)

    return metadata, closing, span


def _to_grpc(metadata: HeaderList) -> list[tuple[str, object]]:
    """Guest metadata for grpcio: lower-case keys, pseudo-headers dropped, `-bin` values as bytes."""
    pairs: list[tuple[str, object]] = []
    for key, value in metadata:
        key = key.lower()
        if key.startswith(":"):
            continue
        pairs.append((key, value.encode("utf-8", "surrogateescape") if key.endswith("-bin") else value))
    return pairs


def _from_grpc(metadata) -> HeaderList:
    """grpcio metadata for the guest (binary values keep their bytes through the map encoding)."""
    return [(key, value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value)
            for key, value in (metadata or ())]

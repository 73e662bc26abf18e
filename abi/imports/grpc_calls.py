"""gRPC calls to upstreams: proxy_grpc_call (unary), proxy_grpc_stream and proxy_grpc_send (a
bidirectional stream), proxy_grpc_cancel and proxy_grpc_close.

What the upstream answers reaches the guest later, from the drain loop (abi/outbound.py), through
proxy_on_grpc_receive_initial_metadata (map 4), proxy_on_grpc_receive (buffer 5),
proxy_on_grpc_receive_trailing_metadata (map 5) and proxy_on_grpc_close (proxy_get_status).
Every pointer is read or checked before anything else, so a bad one answers InvalidMemoryAccess.
"""

from __future__ import annotations

from abi.codes import Status
from abi.imports._registry import ImportGroup, refused
from abi.maps import HeaderList, decode_map
from abi.outbound import PendingGrpcStream
from abi.services import ServiceError

hostcall = ImportGroup()

DEFAULT_TIMEOUT_S = 10.0  # timeout 0, as for proxy_http_call


def _refusal(vm, name: str, upstream: str, service: str, method: str) -> int | None:
    """The status refusing a call to `upstream`, or None when it may go."""
    if not vm.services.grpc.has_upstream(upstream):
        vm.log.warning("function %s: %s to unknown gRPC upstream %r", vm.function_id, name, upstream)
        return Status.BAD_ARGUMENT
    if refused(vm, "allowed_upstreams", upstream, name):
        return Status.BAD_ARGUMENT
    if not service or not method:
        return Status.BAD_ARGUMENT
    return None


def _metadata(raw: bytes) -> HeaderList | None:
    """The guest's serialized initial metadata (an empty map may be 0 bytes or one NUL); None if malformed."""
    if raw in (b"", b"\0"):
        return []
    try:
        return decode_map(raw)
    except ValueError:
        return None


def _started(vm, name: str, start, token_ptr: int) -> int:
    try:
        token = start()
    except ServiceError as error:
        vm.log.warning("function %s: %s failed: %s", vm.function_id, name, error)
        return Status.INTERNAL_FAILURE
    vm.guest.write_u32(token_ptr, token)
    return Status.OK


@hostcall("iiiiiiiiiiii")
def proxy_grpc_call(vm, upstream_ptr: int, upstream_size: int, service_ptr: int, service_size: int, method_ptr: int,
                    method_size: int, metadata_ptr: int, metadata_size: int, message_ptr: int, message_size: int,
                    timeout_ms: int, token_ptr: int) -> int:
    upstream = vm.read_str(upstream_ptr, upstream_size)
    service = vm.read_str(service_ptr, service_size)
    method = vm.read_str(method_ptr, method_size)
    raw_metadata = vm.guest.read(metadata_ptr, metadata_size)
    message = vm.guest.read(message_ptr, message_size)
    vm.guest.check_writable((token_ptr, 4))
    refused = _refusal(vm, "proxy_grpc_call", upstream, service, method)
    if refused is not None:
        return refused
    metadata = _metadata(raw_metadata)
    if metadata is None:
        return Status.BAD_ARGUMENT
    timeout_s = timeout_ms / 1000 if timeout_ms else DEFAULT_TIMEOUT_S
    return _started(vm, "proxy_grpc_call", lambda: vm.start_grpc_call(upstream, service, method, metadata, message,
                                                                       timeout_s), token_ptr)


@hostcall("iiiiiiiii")
def proxy_grpc_stream(vm, upstream_ptr: int, upstream_size: int, service_ptr: int, service_size: int,
                      method_ptr: int, method_size: int, metadata_ptr: int, metadata_size: int, token_ptr: int) -> int:
    upstream = vm.read_str(upstream_ptr, upstream_size)
    service = vm.read_str(service_ptr, service_size)
    method = vm.read_str(method_ptr, method_size)
    raw_metadata = vm.guest.read(metadata_ptr, metadata_size)
    vm.guest.check_writable((token_ptr, 4))
    refused = _refusal(vm, "proxy_grpc_stream", upstream, service, method)
    if refused is not None:
        return refused
    metadata = _metadata(raw_metadata)
    if metadata is None:
        return Status.BAD_ARGUMENT
    return _started(vm, "proxy_grpc_stream", lambda: vm.start_grpc_stream(upstream, service, method, metadata),
                    token_ptr)


@hostcall("iiii")
def proxy_grpc_send(vm, token: int, message_ptr: int, message_size: int, end_of_stream: int) -> int:
    message = vm.guest.read(message_ptr, message_size)
    call = vm.grpc_call(token)
    if call is None:
        return Status.NOT_FOUND
    if not isinstance(call, PendingGrpcStream) or call.sending_closed:
        return Status.BAD_ARGUMENT  # a unary call, or a stream this side already closed
    call.send(message, bool(end_of_stream))
    return Status.OK


@hostcall("i")
def proxy_grpc_cancel(vm, token: int) -> int:
    """Stop the call or stream at once: no callback runs for it any more."""
    call = vm.grpc_call(token)
    if call is None:
        return Status.NOT_FOUND
    del vm.pending_calls[token]
    call.cancel()
    return Status.OK


@hostcall("i")
def proxy_grpc_close(vm, token: int) -> int:
    """A stream: no more messages from this side (the upstream's answers and close still arrive).
    A unary call: the same as cancelling it."""
    call = vm.grpc_call(token)
    if call is None:
        return Status.NOT_FOUND
    if isinstance(call, PendingGrpcStream):
        call.close_send()
        return Status.OK
    return proxy_grpc_cancel(vm, token)

"""Stream control: local responses, continue/close, proxy_done, effective context (+ the 0.1.0 names).

Each acts on `vm.stream`: the stream whose callback runs, or the paused stream a root callback selected
with proxy_set_effective_context (abi/vm.py `select_context`); in a root callback without one, NotFound.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from abi.codes import Status, StreamType
from abi.http import HttpResponse
from abi.imports._registry import ImportGroup
from abi.maps import decode_map

if TYPE_CHECKING:
    from abi.vm import ProxyWasmVM

hostcall = ImportGroup(pure=True)

_NO_GRPC_STATUS = 0xFFFFFFFF


@hostcall("iiiiiiii")
def proxy_send_local_response(vm: ProxyWasmVM, status_code: int, details_ptr: int, details_size: int,
                              body_ptr: int, body_size: int, headers_ptr: int, headers_size: int,
                              grpc_status: int) -> int:
    stream = vm.stream
    details = vm.read_str(details_ptr, details_size)
    body = vm.guest.read(body_ptr, body_size)
    raw_headers = vm.guest.read(headers_ptr, headers_size)
    if stream is None:
        return Status.NOT_FOUND
    if not 100 <= status_code <= 599:
        return Status.BAD_ARGUMENT
    try:
        headers = [(k.lower(), v) for k, v in decode_map(raw_headers)] if raw_headers else []
    except ValueError:
        return Status.BAD_ARGUMENT
    if grpc_status != _NO_GRPC_STATUS and grpc_status <= 16:
        headers.append(("grpc-status", str(grpc_status)))
    stream.local_response = HttpResponse(status=status_code, headers=headers, body=body,
                                         local_reply_details=details)
    return Status.OK


def _check_stream_type(vm: ProxyWasmVM, stream_type: int) -> int:
    if stream_type > max(StreamType):
        return Status.BAD_ARGUMENT
    if vm.stream is None:
        return Status.NOT_FOUND
    return Status.OK


@hostcall("i")
def proxy_continue_stream(vm: ProxyWasmVM, stream_type: int) -> int:
    status = _check_stream_type(vm, stream_type)
    if status == Status.OK and vm.stream is not None:
        vm.stream.resumed = True  # takes effect when the callback now running, and the calls in flight, are done
    return status


@hostcall("i")
def proxy_close_stream(vm: ProxyWasmVM, stream_type: int) -> int:
    status = _check_stream_type(vm, stream_type)
    if status == Status.OK and vm.stream is not None:
        vm.stream.closed = True
    return status


@hostcall("")
def proxy_done(vm: ProxyWasmVM) -> int:
    stream = vm.stream
    if stream is None or not stream.done_pending:
        return Status.NOT_FOUND
    stream.done_pending = False
    return Status.OK


@hostcall("i")
def proxy_set_effective_context(vm: ProxyWasmVM, context_id: int) -> int:
    # The root context, the running stream, or — from a tick or queue delivery — the paused stream
    # of this instance's request, which the calls that follow then act on (as in Envoy).
    return Status.OK if vm.select_context(context_id) else Status.BAD_ARGUMENT


# ABI 0.1.0 spellings, so modules built by older SDKs link.
@hostcall("")
def proxy_continue_request(vm: ProxyWasmVM) -> int:
    return proxy_continue_stream(vm, StreamType.HTTP_REQUEST)


@hostcall("")
def proxy_continue_response(vm: ProxyWasmVM) -> int:
    return proxy_continue_stream(vm, StreamType.HTTP_RESPONSE)


@hostcall("")
def proxy_clear_route_cache(vm: ProxyWasmVM) -> int:
    return Status.OK


@hostcall("ii")
def proxy_get_configuration(vm: ProxyWasmVM, ptr_ptr: int, size_ptr: int) -> int:
    vm.return_bytes(vm.settings.plugin_config, ptr_ptr, size_ptr)
    return Status.OK

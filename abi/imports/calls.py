"""Outbound calls and their status: proxy_http_call (and its 0.2.0 name proxy_dispatch_http_call),
proxy_get_status, proxy_call_foreign_function, and the tick timer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from abi.codes import Status
from abi.imports._registry import ImportGroup, refused
from abi.imports.state import failed
from abi.maps import decode_map
from abi.services import ServiceError

if TYPE_CHECKING:
    from abi.vm import ProxyWasmVM

hostcall = ImportGroup()
RUNTIME_PREFIX = "runtime.v1."  # proxy_call_foreign_function names served by HostServices.runtime


def _http_call(vm, upstream_ptr: int, upstream_size: int, headers_ptr: int, headers_size: int, body_ptr: int,
               body_size: int, trailers_ptr: int, trailers_size: int, timeout_ms: int, token_ptr: int) -> int:
    upstream = vm.read_str(upstream_ptr, upstream_size)
    raw_headers = vm.guest.read(headers_ptr, headers_size)
    body = vm.guest.read(body_ptr, body_size)
    raw_trailers = vm.guest.read(trailers_ptr, trailers_size)
    vm.guest.check_writable((token_ptr, 4))
    if not vm.services.http.has_upstream(upstream):
        vm.log.warning("function %s: proxy_http_call to unknown upstream %r", vm.function_id, upstream)
        return Status.BAD_ARGUMENT
    if refused(vm, "allowed_upstreams", upstream, "proxy_http_call"):
        return Status.BAD_ARGUMENT
    try:
        headers = decode_map(raw_headers) if raw_headers else []
        trailers = decode_map(raw_trailers) if raw_trailers else []
    except ValueError:
        return Status.BAD_ARGUMENT
    token = vm.start_http_call(upstream, headers, body, trailers, timeout_ms / 1000 if timeout_ms else 10.0)
    vm.guest.write_u32(token_ptr, token)
    return Status.OK


hostcall("iiiiiiiiii", name="proxy_http_call")(_http_call)
hostcall("iiiiiiiiii", name="proxy_dispatch_http_call")(_http_call)


@hostcall("iii")
def proxy_get_status(vm, code_ptr: int, message_ptr_ptr: int, message_size_ptr: int) -> int:
    vm.guest.check_writable((code_ptr, 4), (message_ptr_ptr, 4), (message_size_ptr, 4))
    code, message = vm.last_status
    vm.guest.write_u32(code_ptr, code)
    vm.return_bytes(message, message_ptr_ptr, message_size_ptr)
    return Status.OK


@hostcall("iiiiii")
def proxy_call_foreign_function(vm, name_ptr: int, name_size: int, args_ptr: int, args_size: int,
                                ret_ptr_ptr: int, ret_size_ptr: int) -> int:
    name = vm.read_str(name_ptr, name_size)
    args = vm.guest.read(args_ptr, args_size)
    vm.guest.check_writable((ret_ptr_ptr, 4), (ret_size_ptr, 4))
    if name.startswith(RUNTIME_PREFIX):  # the runtime API (abi/IMPORTS.md): the host parses the message
        return _runtime_call(vm, name, args, ret_ptr_ptr, ret_size_ptr)
    function = vm.services.foreign_functions.get(name)
    if function is None:
        return Status.NOT_FOUND
    try:
        result = function(args)
    except ValueError as error:
        vm.log.info("function %s: foreign function %r refused its arguments: %s", vm.function_id, name, error)
        return Status.BAD_ARGUMENT
    vm.return_bytes(result, ret_ptr_ptr, ret_size_ptr)
    return Status.OK


def _runtime_call(vm: ProxyWasmVM, name: str, args: bytes, ret_ptr_ptr: int, ret_size_ptr: int) -> int:
    def permitted(allow_list: str, target: str) -> bool:
        return not refused(vm, allow_list, target, name)

    try:
        result = vm.services.runtime.call(name[len(RUNTIME_PREFIX):], args, permitted)
    except ServiceError as error:
        return failed(vm, name, error)
    vm.return_bytes(result, ret_ptr_ptr, ret_size_ptr)
    return Status.OK


@hostcall("i")
def proxy_set_tick_period_milliseconds(vm, period_ms: int) -> int:
    vm.set_tick_period(period_ms)
    return Status.OK

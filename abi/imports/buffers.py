"""Buffers: proxy_get_buffer_bytes, proxy_set_buffer_bytes, proxy_get_buffer_status."""

from __future__ import annotations

from abi.codes import BufferType, Status
from abi.imports._registry import ImportGroup
from abi.limits import check_body

hostcall = ImportGroup(pure=True)

_MAX_BUFFER_TYPE = max(BufferType)
_NAMES: dict[int, str] = {BufferType.HTTP_REQUEST_BODY: "the request body",
                          BufferType.HTTP_RESPONSE_BODY: "the response body",
                          BufferType.CALL_DATA: "the call data buffer"}


def _buffer(vm, buffer_type: int) -> bytearray | bytes | int:
    """The buffer, or the status to answer when it is unknown or not available here."""
    if buffer_type > _MAX_BUFFER_TYPE:
        return Status.BAD_ARGUMENT
    stream = vm.stream
    if buffer_type == BufferType.HTTP_REQUEST_BODY and stream is not None:
        return stream.request_body
    if buffer_type == BufferType.HTTP_RESPONSE_BODY and stream is not None:
        return stream.response_body
    received = vm.call_buffers.get(buffer_type)  # buffer 4 or 5, in an http/gRPC call callback
    if received is not None:
        return received
    if buffer_type == BufferType.VM_CONFIGURATION:
        return vm.settings.vm_config
    if buffer_type == BufferType.PLUGIN_CONFIGURATION:
        return vm.settings.plugin_config
    if buffer_type == BufferType.CALL_DATA:
        return vm.call_data
    return Status.NOT_FOUND


@hostcall("iiiii")
def proxy_get_buffer_bytes(vm, buffer_type: int, start: int, max_size: int, ptr_ptr: int, size_ptr: int) -> int:
    buffer = _buffer(vm, buffer_type)
    if isinstance(buffer, int):
        return buffer
    if start > len(buffer):
        return Status.BAD_ARGUMENT
    vm.return_bytes(bytes(buffer[start:start + max_size]), ptr_ptr, size_ptr)
    return Status.OK


@hostcall("iiiii")
def proxy_set_buffer_bytes(vm, buffer_type: int, start: int, size: int, ptr: int, length: int) -> int:
    buffer = _buffer(vm, buffer_type)
    if isinstance(buffer, int):
        return buffer
    if not isinstance(buffer, bytearray):
        return Status.BAD_ARGUMENT  # configuration buffers are read-only
    value = vm.guest.read(ptr, length)
    current = len(buffer)
    if start >= current:
        check_body(vm, _NAMES.get(buffer_type, "a buffer"), current + len(value))
        buffer += value  # append (start may be the maximum size_t)
    else:
        check_body(vm, _NAMES.get(buffer_type, "a buffer"), current - min(size, current - start) + len(value))
        buffer[start:start + size] = value  # replace `size` bytes at `start` (size 0: insert)
    return Status.OK


@hostcall("iii")
def proxy_get_buffer_status(vm, buffer_type: int, size_ptr: int, flags_ptr: int) -> int:
    buffer = _buffer(vm, buffer_type)
    if isinstance(buffer, int):
        return buffer
    vm.guest.check_writable((size_ptr, 4), (flags_ptr, 4))
    vm.guest.write_u32(size_ptr, len(buffer))
    vm.guest.write_u32(flags_ptr, 0)
    return Status.OK

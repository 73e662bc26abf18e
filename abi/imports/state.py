"""State for functions: Layotto's proxy_get_state, and reads with ETags, writes and deletes
(abi/IMPORTS.md documents each). Every pointer is read or checked before the store is called, so a
bad one answers InvalidMemoryAccess and nothing happens."""

from __future__ import annotations

from typing import TYPE_CHECKING

from abi.codes import Status
from abi.imports._registry import ImportGroup, refused
from abi.services import ServiceError

if TYPE_CHECKING:
    from abi.vm import ProxyWasmVM

hostcall = ImportGroup()


def failed(vm: ProxyWasmVM, call: str, error: ServiceError, *names: str) -> int:
    """Log a refused or failed runtime call with the function id; the status the guest gets."""
    vm.log.warning("function %s: %s(%s) failed: %s", vm.function_id, call, ", ".join(map(repr, names)), error)
    return error.status


@hostcall("iiiiii", reads=True)
def proxy_get_state(vm: ProxyWasmVM, store_ptr: int, store_size: int, key_ptr: int, key_size: int,
                    ptr_ptr: int, size_ptr: int) -> int:
    store = vm.read_str(store_ptr, store_size)
    key = vm.read_str(key_ptr, key_size)
    vm.guest.check_u32_pair(ptr_ptr, size_ptr)
    # Layotto's import answers InternalFailure for any failure, an unknown store included.
    if refused(vm, "allowed_state_stores", store, "proxy_get_state"):
        return Status.INTERNAL_FAILURE
    try:
        entry = vm.services.state.get(store, key)
    except ServiceError as error:
        failed(vm, "proxy_get_state", error, store, key)
        return Status.INTERNAL_FAILURE
    vm.return_bytes(entry.value if entry else b"", ptr_ptr, size_ptr)  # a missing key is OK + empty, as in Layotto
    return Status.OK


@hostcall("iiiiiiii", reads=True)
def proxy_get_state_with_etag(vm: ProxyWasmVM, store_ptr: int, store_size: int, key_ptr: int, key_size: int,
                              ptr_ptr: int, size_ptr: int, etag_ptr_ptr: int, etag_size_ptr: int) -> int:
    store = vm.read_str(store_ptr, store_size)
    key = vm.read_str(key_ptr, key_size)
    vm.guest.check_u32_pair(ptr_ptr, size_ptr)
    vm.guest.check_u32_pair(etag_ptr_ptr, etag_size_ptr)
    if refused(vm, "allowed_state_stores", store, "proxy_get_state_with_etag"):
        return Status.NOT_FOUND
    try:
        entry = vm.services.state.get(store, key)
    except ServiceError as error:
        return failed(vm, "proxy_get_state_with_etag", error, store, key)
    vm.return_bytes(entry.value if entry else b"", ptr_ptr, size_ptr)  # missing: empty value, empty etag (Dapr)
    vm.return_bytes(entry.etag.encode() if entry else b"", etag_ptr_ptr, etag_size_ptr)
    return Status.OK


@hostcall("iiiiiiii")
def proxy_set_state(vm: ProxyWasmVM, store_ptr: int, store_size: int, key_ptr: int, key_size: int,
                    value_ptr: int, value_size: int, etag_ptr: int, etag_size: int) -> int:
    store = vm.read_str(store_ptr, store_size)
    key = vm.read_str(key_ptr, key_size)
    value = vm.guest.read(value_ptr, value_size)
    etag = vm.read_str(etag_ptr, etag_size)
    if refused(vm, "allowed_state_stores", store, "proxy_set_state"):
        return Status.NOT_FOUND
    try:
        vm.services.state.set(store, key, value, etag or None)
    except ServiceError as error:
        return failed(vm, "proxy_set_state", error, store, key)
    return Status.OK


@hostcall("iiiiii")
def proxy_delete_state(vm: ProxyWasmVM, store_ptr: int, store_size: int, key_ptr: int, key_size: int,
                       etag_ptr: int, etag_size: int) -> int:
    store = vm.read_str(store_ptr, store_size)
    key = vm.read_str(key_ptr, key_size)
    etag = vm.read_str(etag_ptr, etag_size)
    if refused(vm, "allowed_state_stores", store, "proxy_delete_state"):
        return Status.NOT_FOUND
    try:
        vm.services.state.delete(store, key, etag or None)
    except ServiceError as error:
        return failed(vm, "proxy_delete_state", error, store, key)
    return Status.OK

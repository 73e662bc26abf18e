"""Properties: proxy_get_property, proxy_set_property."""

from __future__ import annotations

from abi.codes import Status
from abi.imports._registry import ImportGroup
from abi.limits import check_properties
from abi.properties import get_property, split_path

hostcall = ImportGroup(pure=True)


@hostcall("iiii")
def proxy_get_property(vm, path_ptr: int, path_size: int, ptr_ptr: int, size_ptr: int) -> int:
    segments = split_path(vm.guest.read(path_ptr, path_size))
    value = get_property(vm, segments)
    if value is None:
        return Status.NOT_FOUND
    vm.return_bytes(value, ptr_ptr, size_ptr)
    return Status.OK


@hostcall("iiii")
def proxy_set_property(vm, path_ptr: int, path_size: int, value_ptr: int, value_size: int) -> int:
    key = ".".join(split_path(vm.guest.read(path_ptr, path_size)))
    if not key:
        return Status.BAD_ARGUMENT
    value = vm.guest.read(value_ptr, value_size)
    target = vm.stream.properties if vm.stream is not None else vm.properties
    check_properties(vm, target, key, value)  # traps past the function's memory limit (abi/limits.py)
    target[key] = value
    return Status.OK

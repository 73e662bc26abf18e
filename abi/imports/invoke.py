"""Layotto's proxy_invoke_service: call another function by id (in-process, see host/functions/invoker.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from abi.codes import Status
from abi.imports._registry import ImportGroup, refused
from abi.imports.state import failed
from abi.services import ServiceError

if TYPE_CHECKING:
    from abi.vm import ProxyWasmVM

hostcall = ImportGroup()


@hostcall("iiiiiiii", reads=True)  # the target may run inline only if it is replayable too
def proxy_invoke_service(vm: ProxyWasmVM, id_ptr: int, id_size: int, method_ptr: int, method_size: int,
                         param_ptr: int, param_size: int, ptr_ptr: int, size_ptr: int) -> int:
    target = vm.read_str(id_ptr, id_size)
    method = vm.read_str(method_ptr, method_size)
    param = vm.guest.read(param_ptr, param_size)
    vm.guest.check_u32_pair(ptr_ptr, size_ptr)
    # As in Layotto, every failure (an unknown or refused target included) is InternalFailure.
    if refused(vm, "allowed_invoke_targets", target, "proxy_invoke_service"):
        return Status.INTERNAL_FAILURE
    try:
        result = vm.services.invoker.invoke(target, method, param)
    except ServiceError as error:
        failed(vm, "proxy_invoke_service", error, target, method)
        return Status.INTERNAL_FAILURE
    vm.return_bytes(result, ptr_ptr, size_ptr)
    return Status.OK

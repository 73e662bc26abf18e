"""Layotto's runtime imports: proxy_get_state and proxy_invoke_service (reference §2)."""

from __future__ import annotations

from typing import Optional

from ..codes import Status
from ..services import ServiceError
from ._registry import ImportGroup

hostcall = ImportGroup()


def _refused(vm, call: str, name: str, allowed: Optional[tuple[str, ...]], setting: str) -> bool:
    """A capability check: refused calls are answered like unknown names, so nothing can be probed."""
    if allowed is None or name in allowed:
        return False
    vm.log.warning("function %s: %s(%r) refused: not in %s", vm.function_id, call, name, setting)
    return True


@hostcall("iiiiii")
def proxy_get_state(vm, store_ptr: int, store_size: int, key_ptr: int, key_size: int,
                    ptr_ptr: int, size_ptr: int) -> int:
    store = vm.read_str(store_ptr, store_size)
    key = vm.read_str(key_ptr, key_size)
    vm.guest.check_writable((ptr_ptr, 4), (size_ptr, 4))
    if _refused(vm, "proxy_get_state", store, vm.settings.allowed_state_stores, "allowed_state_stores"):
        return Status.INTERNAL_FAILURE
    try:
        value = vm.services.state.get_state(store, key)
    except ServiceError as error:
        vm.log.warning("function %s: proxy_get_state(%r, %r) failed: %s", vm.function_id, store, key, error)
        return Status.INTERNAL_FAILURE
    vm.return_bytes(value or b"", ptr_ptr, size_ptr)  # a missing key is OK + empty, as in Layotto
    return Status.OK


@hostcall("iiiiiiii")
def proxy_invoke_service(vm, id_ptr: int, id_size: int, method_ptr: int, method_size: int, param_ptr: int,
                         param_size: int, ptr_ptr: int, size_ptr: int) -> int:
    target = vm.read_str(id_ptr, id_size)
    method = vm.read_str(method_ptr, method_size)
    param = vm.guest.read(param_ptr, param_size)
    vm.guest.check_writable((ptr_ptr, 4), (size_ptr, 4))
    if _refused(vm, "proxy_invoke_service", target, vm.settings.allowed_invoke_targets, "allowed_invoke_targets"):
        return Status.INTERNAL_FAILURE
    try:
        result = vm.services.invoker.invoke(target, method, param)
    except ServiceError as error:
        vm.log.warning("function %s: proxy_invoke_service(%r, %r) failed: %s", vm.function_id, target, method, error)
        return Status.INTERNAL_FAILURE
    vm.return_bytes(result, ptr_ptr, size_ptr)
    return Status.OK

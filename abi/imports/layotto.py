"""Layotto's runtime imports: proxy_get_state and proxy_invoke_service (reference §2)."""

from __future__ import annotations

from ..codes import Status
from ..services import ServiceError
from ._registry import ImportGroup

hostcall = ImportGroup()


@hostcall("iiiiii")
def proxy_get_state(vm, store_ptr: int, store_size: int, key_ptr: int, key_size: int,
                    ptr_ptr: int, size_ptr: int) -> int:
    store = vm.read_str(store_ptr, store_size)
    key = vm.read_str(key_ptr, key_size)
    vm.guest.check_writable((ptr_ptr, 4), (size_ptr, 4))
    allowed = vm.settings.allowed_state_stores
    if allowed is not None and store not in allowed:
        # Answered like an unknown store, so a function cannot probe what exists.
        vm.log.warning("function %s: proxy_get_state(%r) refused: store not in allowed_state_stores",
                       vm.function_id, store)
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
    allowed = vm.settings.allowed_invoke_targets
    if allowed is not None and target not in allowed:
        vm.log.warning("function %s: proxy_invoke_service(%r) refused: not in allowed_invoke_targets",
                       vm.function_id, target)
        return Status.INTERNAL_FAILURE
    try:
        result = vm.services.invoker.invoke(target, method, param)
    except ServiceError as error:
        vm.log.warning("function %s: proxy_invoke_service(%r, %r) failed: %s", vm.function_id, target, method, error)
        return Status.INTERNAL_FAILURE
    vm.return_bytes(result, ptr_ptr, size_ptr)
    return Status.OK

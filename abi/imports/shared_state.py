"""Shared data (with compare-and-swap) and shared queues, across every instance of the host process.

What a function writes or enqueues is charged to it (its function id) against its memory limit; a
write past it is refused with InternalFailure (abi/shared.py), and logged (rate limited)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from abi.codes import Status
from abi.imports._registry import ImportGroup
from abi.imports.logging_time import host_warning
from abi.limits import limit_of

if TYPE_CHECKING:
    from abi.vm import ProxyWasmVM

hostcall = ImportGroup()


@hostcall("iiiii")
def proxy_get_shared_data(vm: ProxyWasmVM, key_ptr: int, key_size: int, value_ptr_ptr: int, value_size_ptr: int,
                          cas_ptr: int) -> int:
    key = vm.guest.read(key_ptr, key_size)
    vm.guest.check_writable((value_ptr_ptr, 4), (value_size_ptr, 4), (cas_ptr, 4))
    item = vm.services.shared_data.get(key)
    if item is None:
        return Status.NOT_FOUND
    value, cas = item
    vm.return_bytes(value, value_ptr_ptr, value_size_ptr)
    vm.guest.write_u32(cas_ptr, cas)
    return Status.OK


@hostcall("iiiii")
def proxy_set_shared_data(vm: ProxyWasmVM, key_ptr: int, key_size: int, value_ptr: int, value_size: int,
                          cas: int) -> int:
    key = vm.guest.read(key_ptr, key_size)
    value = vm.guest.read(value_ptr, value_size)
    status = vm.services.shared_data.set(key, value, cas, vm.function_id, limit_of(vm))
    if status == Status.INTERNAL_FAILURE:
        _refused(vm, f"proxy_set_shared_data of {len(key) + len(value)} bytes",
                 vm.services.shared_data.held_by(vm.function_id))
    return status


@hostcall("iii")
def proxy_register_shared_queue(vm: ProxyWasmVM, name_ptr: int, name_size: int, queue_id_ptr: int) -> int:
    name = vm.read_str(name_ptr, name_size)
    vm.guest.check_writable((queue_id_ptr, 4))
    queue_id = vm.services.queues.register(vm.settings.vm_id, name, vm.queue_listener(), vm.function_id)
    if queue_id is None:
        host_warning(vm, f"proxy_register_shared_queue({name[:100]!r}) refused: too many shared queues")
        return Status.INTERNAL_FAILURE
    vm.guest.write_u32(queue_id_ptr, queue_id)
    return Status.OK


@hostcall("iiiii")
def proxy_resolve_shared_queue(vm: ProxyWasmVM, vm_id_ptr: int, vm_id_size: int, name_ptr: int, name_size: int,
                               queue_id_ptr: int) -> int:
    vm_id = vm.read_str(vm_id_ptr, vm_id_size)
    name = vm.read_str(name_ptr, name_size)
    vm.guest.check_writable((queue_id_ptr, 4))
    queue_id = vm.services.queues.resolve(vm_id, name)
    if queue_id is None:
        return Status.NOT_FOUND
    vm.guest.write_u32(queue_id_ptr, queue_id)
    return Status.OK


@hostcall("iii")
def proxy_enqueue_shared_queue(vm: ProxyWasmVM, queue_id: int, value_ptr: int, value_size: int) -> int:
    value = vm.guest.read(value_ptr, value_size)
    status = vm.services.queues.enqueue(queue_id, value, vm.function_id, limit_of(vm))
    if status == Status.INTERNAL_FAILURE:
        _refused(vm, f"proxy_enqueue_shared_queue of {len(value)} bytes", vm.services.queues.held_by(vm.function_id))
    return status


@hostcall("iii")
def proxy_dequeue_shared_queue(vm: ProxyWasmVM, queue_id: int, value_ptr_ptr: int, value_size_ptr: int) -> int:
    vm.guest.check_writable((value_ptr_ptr, 4), (value_size_ptr, 4))
    status, value = vm.services.queues.dequeue(queue_id)
    if status != Status.OK:
        return status
    vm.return_bytes(value, value_ptr_ptr, value_size_ptr)
    return Status.OK


def _refused(vm: ProxyWasmVM, what: str, held: int) -> None:
    host_warning(vm, f"{what} refused: it holds {held} bytes of shared data or queue items, its memory limit "
                     f"is {limit_of(vm)} (memory_limit_mb)")

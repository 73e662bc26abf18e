"""Shared data (with compare-and-swap) and shared queues, across every instance of the host process."""

from __future__ import annotations

from abi.codes import Status
from abi.imports._registry import ImportGroup

hostcall = ImportGroup()


@hostcall("iiiii")
def proxy_get_shared_data(vm, key_ptr: int, key_size: int, value_ptr_ptr: int, value_size_ptr: int,
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
def proxy_set_shared_data(vm, key_ptr: int, key_size: int, value_ptr: int, value_size: int, cas: int) -> int:
    key = vm.guest.read(key_ptr, key_size)
    value = vm.guest.read(value_ptr, value_size)
    return vm.services.shared_data.set(key, value, cas)


@hostcall("iii")
def proxy_register_shared_queue(vm, name_ptr: int, name_size: int, queue_id_ptr: int) -> int:
    name = vm.read_str(name_ptr, name_size)
    vm.guest.check_writable((queue_id_ptr, 4))
    queue_id = vm.services.queues.register(vm.settings.vm_id, name, vm.queue_listener())
    vm.guest.write_u32(queue_id_ptr, queue_id)
    return Status.OK


@hostcall("iiiii")
def proxy_resolve_shared_queue(vm, vm_id_ptr: int, vm_id_size: int, name_ptr: int, name_size: int,
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
def proxy_enqueue_shared_queue(vm, queue_id: int, value_ptr: int, value_size: int) -> int:
    return vm.services.queues.enqueue(queue_id, vm.guest.read(value_ptr, value_size))


@hostcall("iii")
def proxy_dequeue_shared_queue(vm, queue_id: int, value_ptr_ptr: int, value_size_ptr: int) -> int:
    vm.guest.check_writable((value_ptr_ptr, 4), (value_size_ptr, 4))
    status, value = vm.services.queues.dequeue(queue_id)
    if status != Status.OK:
        return status
    vm.return_bytes(value, value_ptr_ptr, value_size_ptr)
    return Status.OK

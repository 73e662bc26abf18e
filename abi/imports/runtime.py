"""The rest of the runtime for functions: publish an event, locks, ids, configuration
(abi/IMPORTS.md documents each). Pointers are read or checked before the component is called."""

from __future__ import annotations

from typing import TYPE_CHECKING

from abi.codes import Status
from abi.imports._registry import ImportGroup, refused
from abi.imports.state import failed
from abi.services import ServiceError

if TYPE_CHECKING:
    from abi.vm import ProxyWasmVM

hostcall = ImportGroup()


@hostcall("iiiiiiii")
def proxy_publish_event(vm: ProxyWasmVM, pubsub_ptr: int, pubsub_size: int, topic_ptr: int, topic_size: int,
                        data_ptr: int, data_size: int, type_ptr: int, type_size: int) -> int:
    pubsub = vm.read_str(pubsub_ptr, pubsub_size)
    topic = vm.read_str(topic_ptr, topic_size)
    data = vm.guest.read(data_ptr, data_size)
    content_type = vm.read_str(type_ptr, type_size)
    if refused(vm, "allowed_pubsubs", pubsub, "proxy_publish_event"):
        return Status.NOT_FOUND
    try:
        vm.services.pubsub.publish(pubsub, topic, data, content_type)
    except ServiceError as error:
        return failed(vm, "proxy_publish_event", error, pubsub, topic)
    return Status.OK


@hostcall("iiiiiiii")
def proxy_try_lock(vm: ProxyWasmVM, store_ptr: int, store_size: int, resource_ptr: int, resource_size: int,
                   owner_ptr: int, owner_size: int, expire_s: int, acquired_ptr: int) -> int:
    store = vm.read_str(store_ptr, store_size)
    resource = vm.read_str(resource_ptr, resource_size)
    owner = vm.read_str(owner_ptr, owner_size)
    vm.guest.check_writable((acquired_ptr, 4))
    if refused(vm, "allowed_lock_stores", store, "proxy_try_lock"):
        return Status.NOT_FOUND
    try:
        acquired = vm.services.lock.try_lock(store, resource, owner, _signed(expire_s))
    except ServiceError as error:
        return failed(vm, "proxy_try_lock", error, store, resource)
    vm.guest.write_u32(acquired_ptr, int(acquired))
    return Status.OK


@hostcall("iiiiiii")
def proxy_unlock(vm: ProxyWasmVM, store_ptr: int, store_size: int, resource_ptr: int, resource_size: int,
                 owner_ptr: int, owner_size: int, result_ptr: int) -> int:
    store = vm.read_str(store_ptr, store_size)
    resource = vm.read_str(resource_ptr, resource_size)
    owner = vm.read_str(owner_ptr, owner_size)
    vm.guest.check_writable((result_ptr, 4))
    if refused(vm, "allowed_lock_stores", store, "proxy_unlock"):
        return Status.NOT_FOUND
    try:
        outcome = vm.services.lock.unlock(store, resource, owner)
    except ServiceError as error:
        return failed(vm, "proxy_unlock", error, store, resource)
    vm.guest.write_u32(result_ptr, outcome)
    return Status.OK


@hostcall("iiiii")
def proxy_get_next_id(vm: ProxyWasmVM, store_ptr: int, store_size: int, key_ptr: int, key_size: int,
                      id_ptr: int) -> int:
    store = vm.read_str(store_ptr, store_size)
    key = vm.read_str(key_ptr, key_size)
    vm.guest.check_writable((id_ptr, 8))
    if refused(vm, "allowed_sequencers", store, "proxy_get_next_id"):
        return Status.NOT_FOUND
    try:
        next_id = vm.services.sequencer.next_id(store, key)
    except ServiceError as error:
        return failed(vm, "proxy_get_next_id", error, store, key)
    vm.guest.write(id_ptr, next_id.to_bytes(8, "little"))
    return Status.OK


# The same name as ABI 0.1.0's 2-argument proxy_get_configuration (plugin configuration); the
# linker gives each module the signature it imports (abi/engine HostLinker).
@hostcall("iiiiii", name="proxy_get_configuration")
def proxy_get_configuration_value(vm: ProxyWasmVM, store_ptr: int, store_size: int, key_ptr: int, key_size: int,
                                  ptr_ptr: int, size_ptr: int) -> int:
    store = vm.read_str(store_ptr, store_size)
    key = vm.read_str(key_ptr, key_size)
    vm.guest.check_u32_pair(ptr_ptr, size_ptr)
    if refused(vm, "allowed_configuration_stores", store, "proxy_get_configuration"):
        return Status.NOT_FOUND
    try:
        value = vm.services.configuration.get(store, key)
    except ServiceError as error:
        return failed(vm, "proxy_get_configuration", error, store, key)
    if value is None:
        return Status.NOT_FOUND
    vm.return_bytes(value.encode(), ptr_ptr, size_ptr)
    return Status.OK


def _signed(value: int) -> int:
    """An i32 parameter arrives as its unsigned bit pattern."""
    return value - (1 << 32) if value >= 1 << 31 else value

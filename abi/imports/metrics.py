"""Metrics (counter, gauge, histogram), kept per host process and readable by the host."""

from __future__ import annotations

from abi.codes import Status
from abi.imports._registry import ImportGroup

hostcall = ImportGroup()


@hostcall("iiii")
def proxy_define_metric(vm, kind: int, name_ptr: int, name_size: int, id_ptr: int) -> int:
    name = vm.read_str(name_ptr, name_size)
    vm.guest.check_writable((id_ptr, 4))
    metric_id = vm.services.metrics.define(kind, name)
    if metric_id is None:
        return Status.BAD_ARGUMENT
    vm.guest.write_u32(id_ptr, metric_id)
    return Status.OK


@hostcall("iI")
def proxy_increment_metric(vm, metric_id: int, offset: int) -> int:
    return vm.services.metrics.increment(metric_id, offset)


@hostcall("iI")
def proxy_record_metric(vm, metric_id: int, value: int) -> int:
    return vm.services.metrics.record(metric_id, value & 0xFFFFFFFFFFFFFFFF)


@hostcall("ii")
def proxy_get_metric(vm, metric_id: int, value_ptr: int) -> int:
    vm.guest.check_writable((value_ptr, 8))
    value = vm.services.metrics.get(metric_id)
    if value is None:
        return Status.NOT_FOUND
    vm.guest.write_u64(value_ptr, value)
    return Status.OK

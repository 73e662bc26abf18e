"""Logging and clocks: proxy_log, proxy_get_log_level, proxy_get_current_time_nanoseconds."""

from __future__ import annotations

import logging

from abi.codes import LogLevel, Status
from abi.imports._registry import ImportGroup

hostcall = ImportGroup(pure=True)


def _abi_level(python_level: int) -> int:
    if python_level <= 5:
        return LogLevel.TRACE
    if python_level <= logging.DEBUG:
        return LogLevel.DEBUG
    if python_level <= logging.INFO:
        return LogLevel.INFO
    if python_level <= logging.WARNING:
        return LogLevel.WARN
    if python_level <= logging.ERROR:
        return LogLevel.ERROR
    return LogLevel.CRITICAL


@hostcall("iii")
def proxy_log(vm, level: int, ptr: int, size: int) -> int:
    if level > LogLevel.CRITICAL:
        return Status.BAD_ARGUMENT
    vm.guest_log(level, vm.read_str(ptr, size))
    return Status.OK


@hostcall("i")
def proxy_get_log_level(vm, ptr: int) -> int:
    vm.guest.write_u32(ptr, _abi_level(vm.log.getEffectiveLevel()))
    return Status.OK


@hostcall("i")
def proxy_get_current_time_nanoseconds(vm, ptr: int) -> int:
    vm.guest.write_u64(ptr, vm.services.now_ns())
    return Status.OK

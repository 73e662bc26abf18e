"""WASI preview1, offered under both `wasi_snapshot_preview1` and `wasi_unstable`.

A guest gets stdout/stderr (to the log), clocks, randomness, empty args and environment, and
`proc_exit` (ends the current call as a trap). There is no file system and no network: every
file, path and socket call answers BADF, everything else NOSYS/NOTSUP.
"""

from __future__ import annotations

import os
import struct
import time

from abi.codes import LogLevel, WasiErrno
from abi.engine import GuestExit, HostFunction
from abi.imports._registry import ImportGroup

_STDIN, _STDOUT, _STDERR = 0, 1, 2
_FILETYPE_CHARACTER_DEVICE = 2
_RIGHT_FD_READ, _RIGHT_FD_WRITE = 1 << 1, 1 << 6
_ESPIPE = 70
_MAX_RANDOM = 1 << 20
_CLOCKS = {0: time.time_ns, 1: time.monotonic_ns, 2: time.process_time_ns, 3: time.thread_time_ns}

_iovec = struct.Struct("<II")

hostcall = ImportGroup(module="wasi_snapshot_preview1", on_memory_error=WasiErrno.FAULT, pure=True)


def _read_iovecs(vm, iovs: int, count: int) -> bytes:
    raw = vm.guest.read(iovs, 8 * count)
    return b"".join(vm.guest.read(ptr, length) for ptr, length in _iovec.iter_unpack(raw))


@hostcall("iiii")
def fd_write(vm, fd: int, iovs: int, iovs_len: int, written_ptr: int) -> int:
    if fd not in (_STDOUT, _STDERR):
        return WasiErrno.BADF
    data = _read_iovecs(vm, iovs, iovs_len)
    vm.guest.check_writable((written_ptr, 4))
    text = data.decode("utf-8", "replace").rstrip("\n")
    if text:
        vm.guest_log(LogLevel.INFO if fd == _STDOUT else LogLevel.ERROR, text)
    vm.guest.write_u32(written_ptr, len(data))
    return WasiErrno.SUCCESS


@hostcall("iiii")
def fd_read(vm, fd: int, iovs: int, iovs_len: int, read_ptr: int) -> int:
    if fd != _STDIN:
        return WasiErrno.BADF
    vm.guest.write_u32(read_ptr, 0)  # stdin is empty
    return WasiErrno.SUCCESS


@hostcall("ii")
def fd_fdstat_get(vm, fd: int, ptr: int) -> int:
    if fd not in (_STDIN, _STDOUT, _STDERR):
        return WasiErrno.BADF
    rights = _RIGHT_FD_READ if fd == _STDIN else _RIGHT_FD_WRITE
    vm.guest.write(ptr, struct.pack("<BxHxxxxQQ", _FILETYPE_CHARACTER_DEVICE, 0, rights, 0))
    return WasiErrno.SUCCESS


@hostcall("iIii")
def fd_seek(vm, fd: int, offset: int, whence: int, new_offset_ptr: int) -> int:
    return _ESPIPE if fd in (_STDIN, _STDOUT, _STDERR) else WasiErrno.BADF


@hostcall("i")
def fd_close(vm, fd: int) -> int:
    return WasiErrno.SUCCESS if fd in (_STDIN, _STDOUT, _STDERR) else WasiErrno.BADF


def _write_zero_sizes(vm, count_ptr: int, size_ptr: int) -> int:
    vm.guest.check_writable((count_ptr, 4), (size_ptr, 4))
    vm.guest.write_u32(count_ptr, 0)
    vm.guest.write_u32(size_ptr, 0)
    return WasiErrno.SUCCESS


@hostcall("ii")
def args_sizes_get(vm, count_ptr: int, size_ptr: int) -> int:
    return _write_zero_sizes(vm, count_ptr, size_ptr)


@hostcall("ii")
def environ_sizes_get(vm, count_ptr: int, size_ptr: int) -> int:
    return _write_zero_sizes(vm, count_ptr, size_ptr)


@hostcall("ii")
def args_get(vm, argv: int, buf: int) -> int:
    return WasiErrno.SUCCESS


@hostcall("ii")
def environ_get(vm, environ: int, buf: int) -> int:
    return WasiErrno.SUCCESS


@hostcall("ii")
def clock_res_get(vm, clock_id: int, ptr: int) -> int:
    if clock_id not in _CLOCKS:
        return WasiErrno.NOTSUP
    vm.guest.write_u64(ptr, 1)
    return WasiErrno.SUCCESS


@hostcall("iIi")
def clock_time_get(vm, clock_id: int, precision: int, ptr: int) -> int:
    clock = _CLOCKS.get(clock_id)
    if clock is None:
        return WasiErrno.NOTSUP
    vm.guest.write_u64(ptr, vm.services.now_ns() if clock_id == 0 else clock())
    return WasiErrno.SUCCESS


@hostcall("ii")
def random_get(vm, ptr: int, size: int) -> int:
    if not 0 <= size <= _MAX_RANDOM:  # negative: a u32 above 2**31 seen as a signed i32
        return WasiErrno.INVAL
    vm.guest.write(ptr, os.urandom(size))
    return WasiErrno.SUCCESS


@hostcall("i", result=False)
def proc_exit(vm, code: int) -> None:
    raise GuestExit(code)


@hostcall("")
def sched_yield(vm) -> int:
    return WasiErrno.SUCCESS


def _answer(errno: int):
    return lambda vm, *args: errno


# Everything that needs a file, a directory or a socket: there are none.
_BADF_CALLS = {
    "fd_advise": "iIIi", "fd_allocate": "iII", "fd_datasync": "i", "fd_fdstat_set_flags": "ii",
    "fd_fdstat_set_rights": "iII", "fd_filestat_get": "ii", "fd_filestat_set_size": "iI",
    "fd_filestat_set_times": "iIIi", "fd_pread": "iiiIi", "fd_prestat_get": "ii", "fd_prestat_dir_name": "iii",
    "fd_pwrite": "iiiIi", "fd_readdir": "iiiIi", "fd_renumber": "ii", "fd_sync": "i", "fd_tell": "ii",
    "path_create_directory": "iii", "path_filestat_get": "iiiii", "path_filestat_set_times": "iiiiIIi",
    "path_link": "iiiiiii", "path_open": "iiiiiIIii", "path_readlink": "iiiiii", "path_remove_directory": "iii",
    "path_rename": "iiiiii", "path_symlink": "iiiii", "path_unlink_file": "iii",
    "sock_accept": "iii", "sock_recv": "iiiiii", "sock_send": "iiiii", "sock_shutdown": "ii",
}
for _name, _params in _BADF_CALLS.items():
    hostcall(_params, name=_name)(_answer(WasiErrno.BADF))
hostcall("iiii", name="poll_oneoff")(_answer(WasiErrno.NOTSUP))
hostcall("i", name="proc_raise")(_answer(WasiErrno.NOSYS))


def functions() -> list[HostFunction]:
    """The WASI imports under both module names."""
    from dataclasses import replace

    return hostcall.functions + [replace(f, module="wasi_unstable") for f in hostcall.functions]

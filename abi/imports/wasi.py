"""WASI preview 1, offered under both `wasi_snapshot_preview1` and `wasi_unstable` (snapshot 0).

What SDK runtimes (Go's wasip1, TinyGo, Rust std, wasi-libc, emscripten's standalone mode) call at
start-up, on timers and on panics is answered the way wasmtime's WASI answers a module given no
preopened directories, no arguments, no environment and an empty stdin: stdout/stderr go to the log
(stderr at error level), stdin reads end of file, clocks and randomness work, `poll_oneoff` sleeps on
clock subscriptions (bounded by the deadline of what is running: past it the guest is interrupted),
`proc_exit` ends the current call as a trap. Every file, directory and socket call fails as it would on
such a host: BADF for a descriptor that does not exist or is of the wrong kind, SPIPE for seeking on
stdio, NOTSOCK for a socket call on stdio. Only the realtime and monotonic clocks exist: the host has
no per-instance CPU clock, and its own would show other tenants' load (NOTSUP, as the reference host).

Everything here is pure (no effect outside the instance, never blocks) except `poll_oneoff`, which
sleeps: a module importing it never runs inline on the event loop.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from abi.codes import LogLevel, WasiErrno
from abi.engine import GuestExit, GuestTrap, HostFunction
from abi.imports._registry import ImportGroup
from abi.imports.logging_time import emit

if TYPE_CHECKING:
    from abi.vm import ProxyWasmVM

_STDIN, _STDOUT, _STDERR = 0, 1, 2
_STDIO = (_STDIN, _STDOUT, _STDERR)
_OUTPUTS = (_STDOUT, _STDERR)
_FILETYPE_UNKNOWN = 0  # what wasmtime reports for stdio that is not a terminal (the log is not one)
_RIGHT_FD_READ, _RIGHT_FD_WRITE = 1 << 1, 1 << 6
_NOTDIR, _NOTSOCK, _SPIPE = 54, 57, 70
_MAX_RANDOM = 1 << 20
_REALTIME, _MONOTONIC = 0, 1

_iovec = struct.Struct("<II")
_fdstat = struct.Struct("<BxHxxxxQQ")  # filetype, flags, rights_base, rights_inheriting (24 bytes)
_FILESTAT_SIZE = {"wasi_snapshot_preview1": 64, "wasi_unstable": 56}  # snapshot 0's nlink is a u32

# poll_oneoff: a subscription is userdata, a tag (0 clock, 1 fd_read, 2 fd_write) and its union at
# offset 16: a descriptor, or a clock (id, timeout, precision, flags) — which in snapshot 0 starts with
# an extra u64 `identifier`. An event is userdata, errno, type and (nbytes, flags).
_EVENT = struct.Struct("<QHB5xQH6x")  # 32 bytes, the same in both snapshots
_SUBSCRIPTION_HEAD = struct.Struct("<QB7xI")  # userdata, tag, the descriptor of an fd subscription
_CLOCK_SUBSCRIPTION = struct.Struct("<I4xQQH")  # clock id, timeout, precision, flags
_SUBSCRIPTION = {"wasi_snapshot_preview1": (48, 16), "wasi_unstable": (56, 24)}  # (size, clock offset)
_CLOCK, _FD_READ, _FD_WRITE = 0, 1, 2
_ABSTIME = 1

hostcall = ImportGroup(module="wasi_snapshot_preview1", on_memory_error=WasiErrno.FAULT, pure=True)


def _read_iovecs(vm: ProxyWasmVM, iovs: int, count: int) -> list[tuple[int, int]]:
    return list(_iovec.iter_unpack(vm.guest.read(iovs, 8 * count)))


@hostcall("iiii")
def fd_write(vm: ProxyWasmVM, fd: int, iovs: int, iovs_len: int, written_ptr: int) -> int:
    if fd not in _OUTPUTS:
        return WasiErrno.BADF
    data = b"".join(vm.guest.read(ptr, length) for ptr, length in _read_iovecs(vm, iovs, iovs_len))
    vm.guest.check_writable((written_ptr, 4))
    # One escaped, rate-limited log line per line written (abi/imports/logging_time.py).
    emit(vm, LogLevel.INFO if fd == _STDOUT else LogLevel.ERROR, data.decode("utf-8", "surrogateescape"),
         split_lines=True)
    vm.guest.write_u32(written_ptr, len(data))
    return WasiErrno.SUCCESS


@hostcall("iiii")
def fd_read(vm: ProxyWasmVM, fd: int, iovs: int, iovs_len: int, read_ptr: int) -> int:
    if fd != _STDIN:
        return WasiErrno.BADF
    for ptr, length in _read_iovecs(vm, iovs, iovs_len):
        vm.guest.check_writable((ptr, length))
    vm.guest.write_u32(read_ptr, 0)  # stdin is empty: end of file
    return WasiErrno.SUCCESS


@hostcall("ii")
def fd_fdstat_get(vm: ProxyWasmVM, fd: int, ptr: int) -> int:
    if fd not in _STDIO:
        return WasiErrno.BADF
    rights = _RIGHT_FD_READ if fd == _STDIN else _RIGHT_FD_WRITE
    vm.guest.write(ptr, _fdstat.pack(_FILETYPE_UNKNOWN, 0, rights, rights))
    return WasiErrno.SUCCESS


def _fd_filestat_get(size: int) -> Callable[..., int]:
    def fd_filestat_get(vm: ProxyWasmVM, fd: int, ptr: int) -> int:
        if fd not in _STDIO:
            return WasiErrno.BADF
        vm.guest.write(ptr, bytes(size))  # device 0, inode 0, filetype unknown, size 0, no times
        return WasiErrno.SUCCESS

    return fd_filestat_get


hostcall("ii", name="fd_filestat_get")(_fd_filestat_get(_FILESTAT_SIZE["wasi_snapshot_preview1"]))


def _on_stdio(errno: int) -> Callable[..., int]:
    """A call that `errno` answers on stdin/stdout/stderr and BADF on any other descriptor."""
    return lambda vm, fd, *args: errno if fd in _STDIO else WasiErrno.BADF


hostcall("iIii", name="fd_seek")(_on_stdio(_SPIPE))
hostcall("ii", name="fd_tell")(_on_stdio(_SPIPE))
hostcall("i", name="fd_close")(_on_stdio(WasiErrno.SUCCESS))  # stdio stays open: nothing else uses it
hostcall("iii", name="fd_prestat_dir_name")(_on_stdio(_NOTDIR))  # a descriptor, but not a preopen
for _name, _params in {"sock_accept": "iii", "sock_recv": "iiiiii", "sock_send": "iiiii",
                       "sock_shutdown": "ii"}.items():
    hostcall(_params, name=_name)(_on_stdio(_NOTSOCK))


@hostcall("iiiIi")
def fd_pread(vm: ProxyWasmVM, fd: int, iovs: int, iovs_len: int, offset: int, read_ptr: int) -> int:
    return _SPIPE if fd == _STDIN else WasiErrno.BADF


@hostcall("iiiIi")
def fd_pwrite(vm: ProxyWasmVM, fd: int, iovs: int, iovs_len: int, offset: int, written_ptr: int) -> int:
    return _SPIPE if fd in _OUTPUTS else WasiErrno.BADF


@hostcall("ii")
def fd_renumber(vm: ProxyWasmVM, fd: int, to: int) -> int:
    if fd not in _STDIO:
        return WasiErrno.BADF
    return WasiErrno.SUCCESS if fd == to else WasiErrno.NOTSUP  # the three stdio descriptors are fixed


def _write_zero_sizes(vm: ProxyWasmVM, count_ptr: int, size_ptr: int) -> int:
    vm.guest.check_writable((count_ptr, 4), (size_ptr, 4))
    vm.guest.write_u32(count_ptr, 0)
    vm.guest.write_u32(size_ptr, 0)
    return WasiErrno.SUCCESS


@hostcall("ii")
def args_sizes_get(vm: ProxyWasmVM, count_ptr: int, size_ptr: int) -> int:
    return _write_zero_sizes(vm, count_ptr, size_ptr)


@hostcall("ii")
def environ_sizes_get(vm: ProxyWasmVM, count_ptr: int, size_ptr: int) -> int:
    return _write_zero_sizes(vm, count_ptr, size_ptr)


@hostcall("ii")
def args_get(vm: ProxyWasmVM, argv: int, buf: int) -> int:
    return WasiErrno.SUCCESS  # no arguments: nothing to write


@hostcall("ii")
def environ_get(vm: ProxyWasmVM, environ: int, buf: int) -> int:
    return WasiErrno.SUCCESS  # no environment: nothing to write


@hostcall("ii")
def clock_res_get(vm: ProxyWasmVM, clock_id: int, ptr: int) -> int:
    if clock_id not in (_REALTIME, _MONOTONIC):
        return WasiErrno.NOTSUP
    vm.guest.write_u64(ptr, 1)
    return WasiErrno.SUCCESS


@hostcall("iIi")
def clock_time_get(vm: ProxyWasmVM, clock_id: int, precision: int, ptr: int) -> int:
    if clock_id == _REALTIME:
        vm.guest.write_u64(ptr, vm.services.now_ns())
    elif clock_id == _MONOTONIC:
        vm.guest.write_u64(ptr, time.monotonic_ns())  # the clock poll_oneoff's absolute deadlines use
    else:
        return WasiErrno.NOTSUP
    return WasiErrno.SUCCESS


@hostcall("ii")
def random_get(vm: ProxyWasmVM, ptr: int, size: int) -> int:
    if not 0 <= size <= _MAX_RANDOM:  # negative: a u32 above 2**31 seen as a signed i32
        return WasiErrno.INVAL
    vm.guest.write(ptr, os.urandom(size))
    return WasiErrno.SUCCESS


@hostcall("i", result=False)
def proc_exit(vm: ProxyWasmVM, code: int) -> None:
    raise GuestExit(code)


@hostcall("i")
def proc_raise(vm: ProxyWasmVM, signal: int) -> int:
    return WasiErrno.NOTSUP  # there are no signals (wasi-libc's abort() traps instead)


@hostcall("")
def sched_yield(vm: ProxyWasmVM) -> int:
    return WasiErrno.SUCCESS  # one thread per instance: there is nobody to yield to


# -- poll_oneoff ---------------------------------------------------------------------------------

def _poll_oneoff(module: str) -> Callable[..., int]:
    size, clock_offset = _SUBSCRIPTION[module]

    def poll_oneoff(vm: ProxyWasmVM, in_ptr: int, out_ptr: int, count: int, nevents_ptr: int) -> int:
        if count == 0:
            return WasiErrno.INVAL  # waiting forever is not a thing in preview 1
        raw = vm.guest.read(in_ptr, size * count)
        vm.guest.check_writable((out_ptr, _EVENT.size * count), (nevents_ptr, 4))
        now = time.monotonic_ns()
        subscriptions = []  # (userdata, tag, monotonic ns when it is ready)
        for offset in range(0, len(raw), size):
            userdata, tag, fd = _SUBSCRIPTION_HEAD.unpack_from(raw, offset)
            if tag == _CLOCK:
                clock_id, timeout, _precision, flags = _CLOCK_SUBSCRIPTION.unpack_from(raw, offset + clock_offset)
                if clock_id == _MONOTONIC:
                    ready = timeout if flags & _ABSTIME else now + timeout
                elif clock_id == _REALTIME:
                    ready = now + (max(0, timeout - vm.services.now_ns()) if flags & _ABSTIME else timeout)
                else:
                    return WasiErrno.INVAL
            elif tag == _FD_READ:
                if fd != _STDIN:
                    return WasiErrno.BADF
                ready = now  # stdin is at end of file: readable at once
            elif tag == _FD_WRITE:
                if fd not in _OUTPUTS:
                    return WasiErrno.BADF
                ready = now  # the log always takes more
            else:
                return WasiErrno.INVAL
            subscriptions.append((userdata, tag, ready))
        _sleep_until(vm, min(ready for _, _, ready in subscriptions))
        now = time.monotonic_ns()
        # Every subscription ready by now gets an event, in subscription order (as wasmtime does).
        events = [_EVENT.pack(userdata, WasiErrno.SUCCESS, tag, 0 if tag == _CLOCK else 1, 0)
                  for userdata, tag, ready in subscriptions if ready <= now]
        vm.guest.write(out_ptr, b"".join(events))
        vm.guest.write_u32(nevents_ptr, len(events))
        return WasiErrno.SUCCESS

    return poll_oneoff


def _sleep_until(vm: ProxyWasmVM, wake_ns: int) -> None:
    """Sleep until `wake_ns` (monotonic); a wake-up past the deadline of what is running is not
    waited for beyond that deadline: the guest is interrupted there, as if it had been computing."""
    now = time.monotonic_ns()
    if wake_ns <= now:
        return  # something is ready already: no waiting, whatever the deadline
    deadline_ns = int(vm.deadline_at * 1e9)
    wait_ns = min(wake_ns, deadline_ns) - now
    if wait_ns > 0:
        time.sleep(wait_ns / 1e9)  # the GIL is released meanwhile
    if wake_ns > deadline_ns:
        raise GuestTrap("the deadline passed while the guest slept in poll_oneoff", interrupted=True)


hostcall("iiii", name="poll_oneoff", pure=False)(_poll_oneoff("wasi_snapshot_preview1"))


# -- everything that needs a file, a directory or a socket: there are none -------------------------

def _answer(errno: int) -> Callable[..., int]:
    return lambda vm, *args: errno


_BADF_CALLS = {
    "fd_advise": "iIIi", "fd_allocate": "iII", "fd_datasync": "i", "fd_fdstat_set_flags": "ii",
    "fd_fdstat_set_rights": "iII", "fd_filestat_set_size": "iI", "fd_filestat_set_times": "iIIi",
    "fd_prestat_get": "ii", "fd_readdir": "iiiIi", "fd_sync": "i",
    "path_create_directory": "iii", "path_filestat_get": "iiiii", "path_filestat_set_times": "iiiiIIi",
    "path_link": "iiiiiii", "path_open": "iiiiiIIii", "path_readlink": "iiiiii", "path_remove_directory": "iii",
    "path_rename": "iiiiii", "path_symlink": "iiiii", "path_unlink_file": "iii",
}
for _name, _params in _BADF_CALLS.items():
    hostcall(_params, name=_name)(_answer(WasiErrno.BADF))

# Snapshot 0 lays out a few structures differently; the rest is shared.
_UNSTABLE: dict[str, Any] = {"poll_oneoff": _poll_oneoff("wasi_unstable"),
                             "fd_filestat_get": _fd_filestat_get(_FILESTAT_SIZE["wasi_unstable"])}


def functions() -> list[HostFunction]:
    """The WASI imports under both module names."""
    return hostcall.functions + [replace(f, module="wasi_unstable", impl=_UNSTABLE.get(f.name, f.impl))
                                 for f in hostcall.functions]

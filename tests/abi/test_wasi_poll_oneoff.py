"""WASI as SDK runtimes expect it: `poll_oneoff` sleeps on clock subscriptions (relative, absolute,
several at once), bounded by the deadline of what runs (a guest sleeping past it is interrupted: 504),
and the rest of preview 1 answers as wasmtime's WASI with no preopens, no arguments, no environment
and an empty stdin would (abi/imports/wasi.py). Sleeps are measured from the client's side.
"""

from __future__ import annotations

import struct
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from abi import GuestTrap, HostServices, PluginSettings, ProxyWasmVM, WasmEngine, all_host_functions
from tests.conftest import ENGINE_BACKENDS, functions_dir, make_config
from tests.guest_wat import PAGE, U32_A, U32_B, U64, Results, WatGuest, write_guest

WASI = "wasi_snapshot_preview1"
SUCCESS, BADF, FAULT, INVAL, NOSYS, NOTDIR, NOTSOCK, NOTSUP, SPIPE = 0, 8, 21, 28, 52, 54, 57, 58, 70
CLOCK, FD_READ, FD_WRITE = 0, 1, 2
REALTIME, MONOTONIC = 0, 1
ABSTIME = 1
MS = 1_000_000


def clock_sub(userdata: int, timeout_ns: int, clock_id: int = MONOTONIC, flags: int = 0) -> bytes:
    """A preview-1 subscription_t (48 bytes): userdata, tag, then the clock at offset 16."""
    return struct.pack("<QB7xI4xQQH6x", userdata, CLOCK, clock_id, timeout_ns, 0, flags)


def fd_sub(userdata: int, tag: int, fd: int) -> bytes:
    return struct.pack("<QB7xI28x", userdata, tag, fd)


def unstable_clock_sub(userdata: int, timeout_ns: int) -> bytes:
    """Snapshot 0's subscription (56 bytes): the clock union starts with a u64 identifier."""
    return struct.pack("<QB7xQI4xQQH6x", userdata, CLOCK, 0xABCDEF, MONOTONIC, timeout_ns, 0, 0)


class Poller:
    """Builds a guest whose request calls poll_oneoff on data-segment subscriptions and records the
    errno, the event count and the first events (userdata, errno, type, nbytes)."""

    def __init__(self, module: str = WASI) -> None:
        self.g = WatGuest()
        self.module = module
        self.g.extra.append("""  (func $emit_event (param $p i32)
    (call $emit (i32.load (local.get $p)))
    (call $emit (i32.load16_u (i32.add (local.get $p) (i32.const 8))))
    (call $emit (i32.load8_u (i32.add (local.get $p) (i32.const 10))))
    (call $emit (i32.load (i32.add (local.get $p) (i32.const 16)))))""")
        self.body: list[str] = []
        self._polls = 0

    def poll(self, subscriptions: list[bytes], *, count: int | None = None, recorded: int = 2,
             prologue: str = "") -> int:
        """Append one poll; returns the subscriptions' address (for a prologue of later polls)."""
        self._polls += 1
        subs = self.g.addr(b"".join(subscriptions) + b"#%d" % self._polls)
        events = self.g.addr(bytes(32 * max(recorded, 1)) + b"events#%d" % self._polls)
        n = len(subscriptions) if count is None else count
        call = self.g.call("poll_oneoff", subs, events, n, U32_A, module=self.module)
        self.body.append(f"{prologue}(i32.store (i32.const {U32_A}) (i32.const 99)) (call $emit {call})")
        self.body.append(f"(call $emit (i32.load (i32.const {U32_A})))")
        self.body.extend(f"(call $emit_event (i32.const {events + 32 * i}))" for i in range(recorded))
        return subs

    def wat(self) -> str:
        return self.g.module(proxy_on_request_headers="\n    ".join(self.body) + "\n    (call $flush) (i32.const 0)")


def read_poll(r: Results, recorded: int = 2) -> tuple[int, int, list[tuple[int, int, int, int]]]:
    errno, count = r.u32(), r.u32()
    return errno, count, [(r.u32(), r.u32(), r.u32(), r.u32()) for _ in range(recorded)]


async def serve_guests(serve, tmp_path: Path, **guests: str):
    folder = functions_dir(tmp_path)
    for name, wat in guests.items():
        write_guest(folder, name, wat)
    (folder / "deadline.toml").write_text("timeout_ms = 300\n")  # only used by the guest named so
    return await serve(make_config(tmp_path, folder, function_defaults={"instance_num": 1}))


async def timed(client, function_id: str) -> tuple[int, bytes, float]:
    started = time.monotonic()
    status, _, body = await client.call(function_id)
    return status, body, time.monotonic() - started


# -- sleeping --------------------------------------------------------------------------------------

async def test_relative_and_absolute_clock_sleeps(serve, tmp_path: Path) -> None:
    relative = Poller()
    relative.poll([clock_sub(0x1234, 200 * MS)])
    # Absolute: 150 ms after the monotonic clock_time_get the guest reads (the clock the deadline uses).
    absolute = Poller()
    g = absolute.g
    now = g.call("clock_time_get", MONOTONIC, 1, U64, module=WASI)
    subs_at = absolute.g.addr(clock_sub(0x77, 0, MONOTONIC, ABSTIME) + b"#1")  # the address poll() will use
    prologue = (f"(drop {now}) (i64.store (i32.const {subs_at + 24}) "
                f"(i64.add (i64.load (i32.const {U64})) (i64.const {150 * MS}))) ")
    assert absolute.poll([clock_sub(0x77, 0, MONOTONIC, ABSTIME)], prologue=prologue) == subs_at
    # Absolute realtime: a deadline in the past is ready at once.
    past = Poller()
    past.poll([clock_sub(5, 1_000_000_000, REALTIME, ABSTIME)])
    client = await serve_guests(serve, tmp_path, relative=relative.wat(), absolute=absolute.wat(), past=past.wat())

    status, body, elapsed = await timed(client, "relative")
    assert status == 200, body
    assert 0.2 <= elapsed < 2.0
    assert read_poll(Results(body)) == (SUCCESS, 1, [(0x1234, SUCCESS, CLOCK, 0), (0, 0, 0, 0)])

    status, body, elapsed = await timed(client, "absolute")
    assert status == 200, body
    assert 0.15 <= elapsed < 2.0
    assert read_poll(Results(body)) == (SUCCESS, 1, [(0x77, SUCCESS, CLOCK, 0), (0, 0, 0, 0)])

    status, body, elapsed = await timed(client, "past")
    assert status == 200 and elapsed < 0.5
    assert read_poll(Results(body))[:2] == (SUCCESS, 1)


async def test_several_subscriptions_wake_at_the_first(serve, tmp_path: Path) -> None:
    p = Poller()
    p.poll([clock_sub(22, 5000 * MS), clock_sub(11, 150 * MS)])  # the earlier one wins
    p.poll([clock_sub(1, 0), clock_sub(2, 5000 * MS), clock_sub(3, 0)], recorded=3)  # ready ones, in order
    p.poll([clock_sub(9, 5000 * MS), fd_sub(33, FD_WRITE, 1), fd_sub(44, FD_READ, 0)], recorded=3)
    client = await serve_guests(serve, tmp_path, several=p.wat())
    status, body, elapsed = await timed(client, "several")
    assert status == 200, body
    assert 0.15 <= elapsed < 2.0  # one 150 ms sleep in all: the fd subscriptions are ready at once
    r = Results(body)
    assert read_poll(r) == (SUCCESS, 1, [(11, SUCCESS, CLOCK, 0), (0, 0, 0, 0)])
    assert read_poll(r, 3) == (SUCCESS, 2, [(1, SUCCESS, CLOCK, 0), (3, SUCCESS, CLOCK, 0), (0, 0, 0, 0)])
    # stdout takes writes, stdin is at end of file: both ready (nbytes 1, as wasmtime reports).
    assert read_poll(r, 3) == (SUCCESS, 2, [(33, SUCCESS, FD_WRITE, 1), (44, SUCCESS, FD_READ, 1), (0, 0, 0, 0)])
    assert r.done()


async def test_a_sleep_past_the_deadline_is_interrupted(serve, tmp_path: Path) -> None:
    sleeper = Poller()
    sleeper.poll([clock_sub(1, 10_000 * MS)])
    client = await serve_guests(serve, tmp_path, deadline=sleeper.wat(), nap=_nap())
    status, body, elapsed = await timed(client, "deadline")
    assert status == 504, body
    assert 0.3 <= elapsed < 2.0  # waited until its 300 ms deadline, not its 10 s sleep
    status, body, elapsed = await timed(client, "deadline")  # a fresh instance answers the same way
    assert status == 504 and elapsed < 2.0
    status, body, _ = await timed(client, "nap")  # other functions keep sleeping and answering
    assert status == 200 and read_poll(Results(body))[:2] == (SUCCESS, 1)


def _nap() -> str:
    p = Poller()
    p.poll([clock_sub(1, 10 * MS)])
    return p.wat()


async def test_wasi_unstable_layout(serve, tmp_path: Path) -> None:
    p = Poller("wasi_unstable")
    p.poll([unstable_clock_sub(0x55, 150 * MS)])
    client = await serve_guests(serve, tmp_path, unstable=p.wat())
    status, body, elapsed = await timed(client, "unstable")
    assert status == 200, body
    assert 0.15 <= elapsed < 2.0  # the timeout was read after the identifier, not from it
    assert read_poll(Results(body)) == (SUCCESS, 1, [(0x55, SUCCESS, CLOCK, 0), (0, 0, 0, 0)])


async def test_poll_oneoff_refusals(serve, tmp_path: Path) -> None:
    p = Poller()
    p.poll([clock_sub(1, 0)], count=0)  # no subscription: waiting forever is refused
    p.poll([clock_sub(1, 0, clock_id=2)])  # the process CPU-time clock does not exist here
    p.poll([clock_sub(1, 0, clock_id=99)])
    p.poll([fd_sub(1, FD_READ, 5)])  # no such descriptor
    p.poll([fd_sub(1, FD_READ, 1)])  # stdout cannot be read
    p.poll([fd_sub(1, FD_WRITE, 0)])  # stdin cannot be written
    p.poll([struct.pack("<QB39x", 1, 7)])  # an unknown tag
    p.poll([clock_sub(1, 0)], count=4096)  # subscriptions running past the end of memory
    g = p.g
    events_past_end = g.call("poll_oneoff", g.addr(clock_sub(1, 0) + b"#x"), PAGE - 16, 1, U32_A, module=WASI)
    nevents_past_end = g.call("poll_oneoff", g.addr(clock_sub(1, 0) + b"#y"), U32_B, 1, PAGE - 2, module=WASI)
    p.body.append(f"(call $emit {events_past_end}) (call $emit {nevents_past_end})")
    client = await serve_guests(serve, tmp_path, refusals=p.wat())
    status, body, elapsed = await timed(client, "refusals")
    assert status == 200, body
    assert elapsed < 1.0
    r = Results(body)
    expected = [INVAL, INVAL, INVAL, BADF, BADF, BADF, INVAL, FAULT]
    got = [read_poll(r) for _ in expected]
    assert [errno for errno, _, _ in got] == expected
    assert all(count == 99 for _, count, _ in got)  # nevents untouched on a refusal
    assert (r.u32(), r.u32()) == (FAULT, FAULT) and r.done()


def test_a_module_importing_poll_oneoff_is_never_inline() -> None:
    """Sleeping blocks: such a module must run in a guest thread, never on the event loop."""
    engine = WasmEngine(ENGINE_BACKENDS[0])
    linker = engine.linker(all_host_functions())
    for module_name in (WASI, "wasi_unstable"):
        g = WatGuest()
        poll = g.call("poll_oneoff", 0, 0, 0, 0, module=module_name)
        sleeper = g.module(proxy_on_request_headers=f"(drop {poll}) (i32.const 0)")
        printer = WatGuest()
        write = printer.call("fd_write", 1, 0, 0, U32_A, module=module_name)
        writer = printer.module(proxy_on_request_headers=f"(drop {write}) (i32.const 0)")
        assert not linker.only_pure_imports(engine.compile(wasmtime.wat2wasm(sleeper)))
        assert linker.only_pure_imports(engine.compile(wasmtime.wat2wasm(writer)))


# -- the rest of preview 1 -------------------------------------------------------------------------

async def test_preview1_answers_like_wasmtime_without_preopens(serve, tmp_path: Path) -> None:
    g = WatGuest()
    iovec = g.addr(struct.pack("<II", g.addr(b"buffer-for-reads"), 16))
    stat = g.addr(b"\xff" * 64 + b"stat")
    fdstat = g.addr(b"\xff" * 24 + b"fdstat")

    def w(name: str, *args: int | str | tuple[int, int]) -> str:
        return g.call(name, *args, module=WASI)

    calls = [
        (w("fd_read", 0, iovec, 1, U32_A), SUCCESS), (f"(i32.load (i32.const {U32_A}))", 0),  # stdin: end of file
        (w("fd_read", 1, iovec, 1, U32_A), BADF), (w("fd_read", 9, iovec, 1, U32_A), BADF),
        (w("fd_write", 0, iovec, 1, U32_A), BADF),
        (w("fd_close", 1), SUCCESS), (w("fd_close", 9), BADF),
        (w("fd_seek", 1, 0, 0, U64), SPIPE), (w("fd_seek", 9, 0, 0, U64), BADF),
        (w("fd_tell", 2, U64), SPIPE), (w("fd_tell", 9, U64), BADF),
        (w("fd_pread", 0, iovec, 1, 0, U32_A), SPIPE), (w("fd_pread", 1, iovec, 1, 0, U32_A), BADF),
        (w("fd_pwrite", 1, iovec, 1, 0, U32_A), SPIPE), (w("fd_pwrite", 0, iovec, 1, 0, U32_A), BADF),
        (w("fd_prestat_get", 3, U32_A), BADF),  # no preopened directory: wasi-libc's scan ends here
        (w("fd_prestat_dir_name", 1, U32_A, 4), NOTDIR), (w("fd_prestat_dir_name", 3, U32_A, 4), BADF),
        (w("fd_renumber", 1, 1), SUCCESS), (w("fd_renumber", 1, 2), NOTSUP), (w("fd_renumber", 7, 1), BADF),
        (w("fd_fdstat_set_flags", 1, 4), BADF),
        (w("path_open", 3, 0, U32_A, 1, 0, 0, 0, 0, U32_B), BADF),
        (w("sock_recv", 0, iovec, 1, 0, U32_A, U32_B), NOTSOCK), (w("sock_recv", 9, iovec, 1, 0, U32_A, U32_B), BADF),
        (w("environ_get", U32_A, U32_B), SUCCESS), (w("args_get", U32_A, U32_B), SUCCESS),
        (w("proc_raise", 6), NOTSUP), (w("sched_yield"), SUCCESS),
        (w("clock_time_get", 2, 1, U64), NOTSUP), (w("clock_res_get", 3, U64), NOTSUP),
        (w("clock_res_get", MONOTONIC, U64), SUCCESS),
        (w("fd_filestat_get", 1, stat), SUCCESS), (w("fd_filestat_get", 9, stat), BADF),
        (f"(i32.load (i32.const {stat}))", 0), (f"(i32.load (i32.const {stat + 60}))", 0),  # 64 bytes zeroed
        (w("fd_fdstat_get", 2, fdstat), SUCCESS),
        (f"(i32.load8_u (i32.const {fdstat}))", 0),  # filetype unknown: not a terminal (Rust's is_terminal)
        (f"(i32.load (i32.const {fdstat + 8}))", 1 << 6), (f"(i32.load (i32.const {fdstat + 16}))", 1 << 6),
    ]
    body = "\n    ".join(f"(call $emit {call})" for call, _ in calls)
    guest = g.module(proxy_on_request_headers=f"{body}\n    (call $flush) (i32.const 0)")
    client = await serve_guests(serve, tmp_path, preview1=guest)
    status, _, answer = await client.call("preview1")
    assert status == 200, answer
    r = Results(answer)
    assert [r.u32() for _ in calls] == [expected for _, expected in calls]
    assert r.done()


async def test_snapshot0_filestat_is_its_own_size(serve, tmp_path: Path) -> None:
    """wasi_unstable's filestat is 56 bytes (nlink is a u32): the 8 bytes after it stay untouched."""
    g = WatGuest()
    stat = g.addr(b"\xff" * 64 + b"stat0")
    calls = [g.call("fd_filestat_get", 1, stat, module="wasi_unstable"),
             f"(i32.load (i32.const {stat + 52}))", f"(i32.load (i32.const {stat + 56}))"]
    body = "\n    ".join(f"(call $emit {call})" for call in calls)
    guest = g.module(proxy_on_request_headers=f"{body}\n    (call $flush) (i32.const 0)")
    client = await serve_guests(serve, tmp_path, stat0=guest)
    r = Results((await client.call("stat0"))[2])
    assert [r.u32() for _ in calls] == [SUCCESS, 0, 0xFFFFFFFF]


# -- any arguments ---------------------------------------------------------------------------------

EDGES = [0, 1, 2, 3, 7, 8, 16, 48, 255, 4096, PAGE - 48, PAGE - 1, PAGE, 0x7FFFFFFF, 0xFFFFFFFF]
U32S = st.one_of(st.sampled_from(EDGES), st.integers(0, 0xFFFFFFFF))
TIMEOUTS = st.sampled_from([0, 1, 5 * MS, 50 * MS, 10**18, 2**64 - 1])
SIZES = {WASI: 48, "wasi_unstable": 56}


def _subscription(module_name: str, userdata: int, tag: int, ident: int, timeout: int, flags: int) -> bytes:
    """Any subscription in `module_name`'s layout: a clock's fields after the tag, or a descriptor."""
    raw = bytearray(struct.pack("<QB", userdata, tag).ljust(SIZES[module_name], b"\0"))
    if tag == CLOCK:
        struct.pack_into("<I4xQQH", raw, 16 if module_name == WASI else 24, ident, timeout, 0, flags)
    else:
        struct.pack_into("<I", raw, 16, ident)
    return bytes(raw)


def poller_vm(module_name: str) -> tuple[ProxyWasmVM, Any]:
    """A started instance exporting `poll`, a direct forwarder to poll_oneoff."""
    engine = WasmEngine(ENGINE_BACKENDS[0])
    wat = f"""(module
      (import "{module_name}" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "poll") (param i32 i32 i32 i32) (result i32)
        (call $poll (local.get 0) (local.get 1) (local.get 2) (local.get 3))))"""
    vm = ProxyWasmVM(engine, engine.linker(all_host_functions()), engine.compile(wasmtime.wat2wasm(wat)),
                     PluginSettings(name="poller"), HostServices())
    vm.start()
    poll = vm.guest.func("poll")
    assert poll is not None
    return vm, poll


def test_past_the_deadline_only_a_wait_is_interrupted() -> None:
    """Once the deadline has passed, a subscription that is ready still answers at once; only one
    that would need waiting interrupts the guest (at once: there is no time left to wait)."""
    vm, poll = poller_vm(WASI)
    vm._set_deadline(-1.0)
    vm.guest.write(0, clock_sub(1, 0) + fd_sub(2, FD_WRITE, 2))
    assert poll(0, 8192, 1, U32_A) == SUCCESS and vm.guest.read_u32(U32_A) == 1
    assert poll(48, 8192, 1, U32_A) == SUCCESS and vm.guest.read_u32(U32_A) == 1
    vm.guest.write(0, clock_sub(1, 50 * MS))
    started = time.monotonic()
    with pytest.raises(GuestTrap) as trap:
        poll(0, 8192, 1, U32_A)
    assert trap.value.interrupted and time.monotonic() - started < 0.04


@pytest.mark.parametrize("module_name", [WASI, "wasi_unstable"])
def test_any_arguments_give_an_errno_or_an_interruption_at_the_deadline(module_name: str) -> None:
    """Whatever the guest passes (random bytes, or subscriptions of any tag, clock, descriptor,
    timeout and flags), poll_oneoff answers an errno, or sleeps no longer than the deadline armed for
    the call and interrupts the guest there."""
    vm, poll = poller_vm(module_name)
    one = st.builds(partial(_subscription, module_name), st.integers(0, 2**64 - 1), st.integers(0, 3),
                    st.integers(0, 4), TIMEOUTS, st.sampled_from([0, ABSTIME, 0xFFFF]))
    long_sleep = _subscription(module_name, 1, CLOCK, MONOTONIC, 10**18, 0)
    ready = _subscription(module_name, 2, CLOCK, REALTIME, 0, 0)
    outcomes: dict[str, int] = {}

    # in_ptr / count None: where the subscriptions were written / as many as were written.
    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(memory=st.one_of(st.lists(one, min_size=1, max_size=3).map(b"".join), st.binary(min_size=1, max_size=256)),
           at=st.sampled_from([0, 48, 4096]), in_ptr=st.one_of(st.none(), U32S), count=st.one_of(st.none(), U32S),
           out_ptr=st.one_of(st.just(8192), U32S), nevents_ptr=st.one_of(st.just(U32_A), U32S))
    @example(memory=long_sleep, at=0, in_ptr=None, count=None, out_ptr=8192, nevents_ptr=U32_A)  # interrupted
    @example(memory=long_sleep, at=0, in_ptr=None, count=0, out_ptr=8192, nevents_ptr=U32_A)  # INVAL
    @example(memory=ready, at=48, in_ptr=None, count=None, out_ptr=8192, nevents_ptr=U32_A)  # at once
    @example(memory=long_sleep, at=0, in_ptr=None, count=None, out_ptr=PAGE, nevents_ptr=U32_A)  # FAULT
    def check(memory: bytes, at: int, in_ptr: int | None, count: int | None, out_ptr: int,
              nevents_ptr: int) -> None:
        vm.guest.write(at, memory)
        subscriptions = max(1, len(memory) // SIZES[module_name]) if count is None else count
        vm._set_deadline(0.02)
        started = time.monotonic()
        try:
            result = poll(at if in_ptr is None else in_ptr, out_ptr, subscriptions, nevents_ptr)
        except GuestTrap as trap:
            assert trap.interrupted, trap
            assert time.monotonic() - started < 0.5
            outcomes["interrupted"] = outcomes.get("interrupted", 0) + 1
        else:
            assert result in (SUCCESS, BADF, FAULT, INVAL)
            outcomes[str(result)] = outcomes.get(str(result), 0) + 1

    check()
    assert {"interrupted", str(SUCCESS), str(INVAL), str(FAULT)} <= set(outcomes), outcomes

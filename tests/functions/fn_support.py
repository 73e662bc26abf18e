"""Shared by the function-core unit tests: WAT guests with one behaviour each, and a real App started
in-process (no listener, no watcher), so a test drives the dispatcher and deployments directly."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from abi import HttpRequest
from host.app import App
from host.config import HostConfig
from tests.functions.fn_wait import wait_for
from tests.guest_wat import RET, U32_A, U64, WatGuest, write_guest

__all__ = ["wait_for"]  # re-exported for the tests that drive an App


def request(headers: list[tuple[str, str]] | None = None) -> HttpRequest:
    return HttpRequest.build("GET", "/", headers or [], authority="localhost")


@contextlib.asynccontextmanager
async def running_app(config: HostConfig) -> AsyncIterator[App]:
    app = App(config)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


def _spin(g: WatGuest, nanoseconds: int) -> str:
    """Busy-wait `nanoseconds` of wall time, reading the host clock (uses local $t)."""
    clock = g.call("proxy_get_current_time_nanoseconds", U64)
    return f"""(drop {clock})
    (local.set $t (i64.load (i32.const {U64})))
    (block $done (loop $again
      (drop {clock})
      (br_if $done (i64.ge_u (i64.sub (i64.load (i32.const {U64})) (local.get $t)) (i64.const {nanoseconds})))
      (br $again)))"""


def answering(folder: Path, name: str, value: int = 7, *, startup_ms: int = 0) -> None:
    """Answers 200 with the u32 `value`; with `startup_ms`, proxy_on_vm_start busy-waits that long."""
    g = WatGuest()
    callbacks = {"proxy_on_request_headers": f"(call $emit (i32.const {value})) (call $flush) (i32.const 0)"}
    if startup_ms:
        callbacks["proxy_on_vm_start"] = f"(local $t i64)\n    {_spin(g, startup_ms * 1_000_000)}\n    (i32.const 1)"
    write_guest(folder, name, g.module(**callbacks))


def passthrough(folder: Path, name: str) -> None:
    """A filter that lets every request through unchanged."""
    write_guest(folder, name, WatGuest().module(proxy_on_request_headers="(i32.const 0)"))


def trapping(folder: Path, name: str) -> None:
    write_guest(folder, name, WatGuest().module(proxy_on_request_headers="unreachable"))


def spinning(folder: Path, name: str) -> None:
    """Never returns from a request: only its deadline stops it."""
    write_guest(folder, name, WatGuest().module(proxy_on_request_headers="(loop $forever (br $forever)) (i32.const 0)"))


def spinning_on_header(folder: Path, name: str, spin_ms: int) -> None:
    """Answers 1 at once, or after `spin_ms` of busy work when the request has an `x-spin` header."""
    g = WatGuest()
    found = g.call("proxy_get_header_map_value", 0, g.s("x-spin"), RET)
    write_guest(folder, name, g.module(proxy_on_request_headers=f"""(local $t i64)
    (if (i32.eqz {found}) (then {_spin(g, spin_ms * 1_000_000)}))
    (call $emit (i32.const 1)) (call $flush) (i32.const 0)"""))


def starting_once(folder: Path, name: str) -> None:
    """Only the first instance starts (shared data remembers it); every request traps. So once the
    first instance is gone, its pool cannot start a replacement."""
    g = WatGuest()
    key = g.s(f"started:{name}")
    seen = g.call("proxy_get_shared_data", key, RET, U32_A)
    remember = g.call("proxy_set_shared_data", key, g.s("1"), 0)
    write_guest(folder, name, g.module(
        proxy_on_vm_start=f"(if (i32.eqz {seen}) (then (return (i32.const 0)))) (drop {remember}) (i32.const 1)",
        proxy_on_request_headers="unreachable"))


def invoking(folder: Path, name: str, target: str) -> None:
    """Calls `target` through proxy_invoke_service and answers (status, returned bytes) of that call."""
    g = WatGuest()
    call = g.call("proxy_invoke_service", g.s(target), g.s("/nested"), g.s("p"), RET)
    write_guest(folder, name, g.module(proxy_on_request_headers=f"(call $emit_ret {call}) (call $flush) (i32.const 0)"))

"""Graceful shutdown: on SIGTERM the host stops accepting, lets in-flight requests finish (for at most
`server.shutdown_grace_ms`), retires every instance's root context (proxy_on_done/proxy_on_delete),
closes state stores, and exits 0."""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from host.config import ConfigError, load_config
from tests.conftest import functions_dir, make_config
from tests.guest_wat import WatGuest, write_guest
from tests.host_process import HostProcess, get_json, request, wait_until

RETIRED = "root context retired"


def retiring_guest(folder: Path) -> None:
    """A function that logs when its root context (id 1) is deleted."""
    g = WatGuest()
    message = g.s(RETIRED)
    write_guest(folder, "retiring", g.module(
        proxy_on_request_headers="(i32.const 0)",
        proxy_on_delete=f"(if (i32.eq (local.get $ctx) (i32.const 1)) (then (drop {g.call('proxy_log', 2, message)})))"))


def _config(tmp_path: Path, c_guests: Path, grace_ms: int | None = None) -> Path:
    folder = functions_dir(tmp_path, c_guests / "slow.wasm")
    retiring_guest(folder)
    grace = f"shutdown_grace_ms = {grace_ms}\n" if grace_ms is not None else ""
    path = tmp_path / "host.toml"
    path.write_text(f'functions_dirs = ["functions"]\n[server]\nlisten = "127.0.0.1:0"\nadmin = "127.0.0.1:0"\n'
                    f'grpc = "127.0.0.1:0"\ndapr_http = "127.0.0.1:0"\ncache_dir = "cache"\n{grace}[function_defaults]\ninstance_num = 1\n')
    return path


def _start(tmp_path: Path, config: Path) -> tuple[HostProcess, int, int]:
    host = HostProcess(tmp_path, "--config", str(config))
    match = host.wait_for_log(r"functions listening on \S+ \(port (\d+)\), admin on \S+ \(port (\d+)\)")
    listen, admin = int(match[1]), int(match[2])
    host.wait_ready(admin)
    return host, listen, admin


def _slow_request_in_flight(listen: int, admin: int, sleep_ms: int) -> tuple[threading.Thread, list]:
    answers: list = []

    def call() -> None:
        try:
            answers.append(request(f"http://127.0.0.1:{listen}/", headers={"id": "slow", "x-sleep-ms": str(sleep_ms)},
                                   timeout=30)[::2])
        except OSError as error:
            answers.append(error)

    thread = threading.Thread(target=call)
    thread.start()

    def busy() -> bool:
        _, body = get_json(f"http://127.0.0.1:{admin}/functions/slow")
        return body["versions"][0]["instances"]["busy"] == 1
    wait_until(busy, 5, "the slow request running")
    return thread, answers


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_finishes_the_request_in_flight_refuses_new_ones_and_retires_roots(
        tmp_path: Path, c_guests: Path) -> None:
    host, listen, admin = _start(tmp_path, _config(tmp_path, c_guests))
    try:
        assert request(f"http://127.0.0.1:{listen}/", headers={"id": "retiring"})[0] == 200
        thread, answers = _slow_request_in_flight(listen, admin, 1500)
        host.signal(signal.SIGTERM)
        host.wait_for_log(r"stopped accepting connections; waiting up to 10\.0s for 1 in-flight request", 5)
        assert _refused(listen)  # new connections are refused while the request still runs
        assert host.process.poll() is None and thread.is_alive()
        thread.join(10)
        assert answers == [(200, b"slept 1500\n")]
        assert host.wait(timeout=5) == 0
        log = host.log()
        steps = ["shutting down (SIGTERM)", "shutdown: stopped accepting connections", "shutdown: file watcher stopped",
                 "shutdown: in-flight requests finished", RETIRED, "2 function pool(s) closed, root contexts retired",
                 "shutdown: components closed", "shutdown: complete"]
        positions = [log.find(step) for step in steps]
        assert -1 not in positions and positions == sorted(positions), list(zip(steps, positions, strict=False))
        assert log.count(RETIRED) == 1  # one instance of `retiring`, retired once
    finally:
        host.close()


def test_the_grace_period_bounds_the_drain(tmp_path: Path, c_guests: Path) -> None:
    host, listen, admin = _start(tmp_path, _config(tmp_path, c_guests, grace_ms=300))
    try:
        thread, answers = _slow_request_in_flight(listen, admin, 20000)
        started = time.monotonic()
        host.signal(signal.SIGTERM)
        assert host.wait(timeout=10) == 0
        assert time.monotonic() - started < 3  # not the 20 s the guest wanted
        thread.join(10)
        assert len(answers) == 1 and not (isinstance(answers[0], tuple) and answers[0][0] == 200), answers
        assert "shutdown: grace period of 0.3s over; unfinished requests were cut" in host.log()
    finally:
        host.close()


async def test_stop_retires_every_root_context(serve, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "functions"
    retiring_guest(folder)
    client = await serve(make_config(tmp_path, folder, function_defaults={"instance_num": 3},
                                     server={"watch": False}))
    assert (await client.call("retiring"))[0] == 200
    caplog.set_level(logging.INFO)
    assert not [r for r in caplog.records if RETIRED in r.getMessage()]
    await client.server.stop()
    retired = [r for r in caplog.records if r.name == "wasm.guest" and RETIRED in r.getMessage()]
    assert len(retired) == 3  # every instance's root context, once
    with pytest.raises(OSError):  # and the admin listener is gone too
        await client.admin_get("/actuator/health/readiness")
    await client.server.stop()  # a second stop is harmless
    assert len([r for r in caplog.records if RETIRED in r.getMessage()]) == 3


def test_shutdown_grace_ms_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nshutdown_grace_ms = -1\n")
    with pytest.raises(ConfigError, match="server.shutdown_grace_ms"):
        load_config(path)

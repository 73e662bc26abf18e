"""Issue 15 item 11: an operator cannot get these wrong silently.

- an admin listener reachable from other hosts without `server.admin_token` refuses to start (in
  process, from the command line, and under the supervisor) unless `server.admin_allow_insecure`;
- every listener (functions, admin, gRPC, Dapr HTTP) refuses a port another process holds — even one
  holding it with SO_REUSEPORT, which the host sets only for its own workers to share a port;
- a stopped (SIGSTOP) worker is detected by its heartbeat and replaced.

(Guest log lines escaped and rate limited: tests/hardening/test_hardening_limits.py.)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.process.safety import StartupRefused, is_loopback
from host.process.serve import start_server
from tests.conftest import EXAMPLES, REPO, make_config
from tests.host_process import HostProcess, get_json, pid_alive, wait_until

TOKEN = "t0ken"


# -- the admin listener and its token -----------------------------------------------------------------------

def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("") and not is_loopback("0.0.0.0") and not is_loopback("::")


async def test_a_tokenless_admin_on_all_interfaces_refuses_to_start(serve, tmp_path: Path) -> None:
    with pytest.raises(StartupRefused, match="admin_token"):
        await start_server(make_config(tmp_path, server={"admin": "0.0.0.0:0"}))
    for allowed in ({"admin_token": TOKEN}, {"admin_allow_insecure": True}):
        client = await serve(make_config(tmp_path, server={"admin": "0.0.0.0:0", **allowed}))
        status, _ = await client.admin_get("/actuator/health/liveness")
        assert status == 200, allowed


def _config_file(tmp_path: Path, **server: str) -> Path:
    lines = "\n".join(f'{key} = "{value}"' for key, value in {"listen": "127.0.0.1:0", "admin": "127.0.0.1:0",
                                                                "grpc": "", "dapr_http": "", **server}.items())
    path = tmp_path / "host.toml"
    path.write_text(f'functions_dirs = ["functions"]\n[server]\ncache_dir = "cache"\n{lines}\n')
    (tmp_path / "functions").mkdir(exist_ok=True)
    return path


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_command_line_refuses_it_too(tmp_path: Path, workers: str) -> None:
    config = _config_file(tmp_path)
    result = subprocess.run([sys.executable, "-m", "host", "serve", "--config", str(config), "--admin", "0.0.0.0:0",
                             "--workers", workers], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "reachable from other hosts" in result.stderr and "admin_allow_insecure" in result.stderr


# -- ports another process holds -----------------------------------------------------------------------------

_HOLDER = """
import socket, sys
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # a sharer: SO_REUSEPORT would let us join
sock.bind(("127.0.0.1", 0))
sock.listen()
print(sock.getsockname()[1], flush=True)
sys.stdin.read()
"""


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port a separate process listens on, with SO_REUSEPORT."""
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_HOLDER)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        yield int(holder.stdout.readline())
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("listener", ["listen", "admin", "grpc", "dapr_http"])
async def test_every_listener_refuses_a_port_another_process_holds(tmp_path: Path, held_port: int,
                                                                   listener: str) -> None:
    config = make_config(tmp_path, server={listener: f"127.0.0.1:{held_port}"})
    with pytest.raises(OSError):
        server = await start_server(config)
        await server.stop()  # only reached if it wrongly started


def test_the_supervisor_refuses_a_port_another_process_holds(tmp_path: Path, held_port: int) -> None:
    config = _config_file(tmp_path, listen=f"127.0.0.1:{held_port}")
    result = subprocess.run([sys.executable, "-m", "host", "serve", "--config", str(config), "--workers", "2"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and f"cannot bind 127.0.0.1:{held_port}" in result.stderr, result.stderr[-2000:]


# -- a stopped worker ---------------------------------------------------------------------------------------------

def test_a_stopped_worker_is_detected_and_replaced(tmp_path: Path) -> None:
    config = _config_file(tmp_path, admin_token=TOKEN)
    config.write_text(config.read_text() + "worker_heartbeat_timeout_ms = 1500\n")
    shutil.copy(EXAMPLES / "hello.wasm", tmp_path / "functions" / "hello.wasm")
    host = HostProcess(tmp_path, "--config", str(config), "--workers", "2")
    try:
        match = host.wait_for_log(r"admin on 127\.0\.0\.1:(\d+)")
        admin = f"http://127.0.0.1:{match[1]}"
        workers = host.wait_ready(int(match[1]))["details"]["workers"]
        stopped = workers[1]["pid"]
        os.kill(stopped, signal.SIGSTOP)

        def replaced() -> bool:
            status, body = get_json(admin + "/actuator/health/readiness")
            pids = [w.get("pid") for w in body.get("details", {}).get("workers", [])]
            return status == 200 and len(pids) == 2 and stopped not in pids

        wait_until(replaced, 20, "the stopped worker replaced")
        assert not pid_alive(stopped)
        assert f"worker 1 (pid {stopped}) stopped answering" in host.log()
    finally:
        host.close()

"""Processes started inside a network namespace (`ip netns exec` execs the command, so the pid we
hold is the program's own): a private redis-server for the backends' namespace and
`python -m host serve` for each host, each in its own session with its output in a log file, so
the test can SIGKILL one mid-load and kill whatever is left at the end."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.host_process import pid_alive, wait_until
from tests.multihost.multihost_net import Topology


class NsProcess:
    """One program in `role`'s namespace; stdout and stderr in `log_path`."""

    def __init__(self, topology: Topology, role: str, argv: list[str], log_path: Path,
                 env: dict[str, str] | None = None):
        self.role = role
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen([*topology.exec_prefix(role), *argv], cwd=REPO,
                                        env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
                                        stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        os.killpg(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole session and reap it (no shutdown code of the host runs)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def close(self) -> None:
        if self.process.poll() is None or pid_alive(self.pid):
            self.kill()
        self._log.close()


def start_redis(topology: Topology, workdir: Path) -> NsProcess:
    """A throwaway redis-server on the backends' address: no persistence, nothing shared."""
    workdir.mkdir(parents=True, exist_ok=True)
    argv = ["redis-server", "--bind", topology.address["back"], "--port", "6379", "--protected-mode", "no",
            "--save", "", "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no"]
    return NsProcess(topology, "back", argv, workdir / "redis.log")


def start_host(topology: Topology, role: str, config: Path, workdir: Path) -> NsProcess:
    """`python -m host serve --config CONFIG` in `role`'s namespace, with its own module cache."""
    return NsProcess(topology, role, [sys.executable, "-m", "host", "serve", "--config", str(config)],
                     workdir / "host.log", env={"XDG_CACHE_HOME": str(workdir / "cache")})


def http_get(address: str, port: int, path: str, timeout: float = 5) -> tuple[int, bytes]:
    """One GET without urllib (which would honour a proxy from the environment)."""
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_ready(host: NsProcess, address: str, admin_port: int, timeout: float) -> None:
    """Readiness UP on the host's admin listener (reached over the veth network)."""

    def ready() -> bool:
        assert host.process.poll() is None, f"{host.role} exited with {host.process.returncode}:\n{host.log()}"
        return http_get(address, admin_port, "/actuator/health/readiness")[0] == 200

    wait_until(ready, timeout, f"{host.role} readiness UP", interval=0.1)

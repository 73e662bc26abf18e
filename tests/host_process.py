"""`python -m host serve` as a real process tree, for tests that need signals, several processes or
the real command line: start it, read its log, talk to it over loopback HTTP, stop it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import REPO

Answer = tuple[int, dict[str, str], bytes]


def request(url: str, *, method: str = "GET", headers: dict[str, str] | None = None,
            data: bytes | None = None, timeout: float = 10) -> Answer:
    """One HTTP exchange on a fresh connection (urllib does not pool)."""
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def get_json(url: str, token: str = "") -> tuple[int, Any]:
    status, _, body = request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    return status, json.loads(body)


def post_json(url: str, body: Any, token: str = "") -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    status, _, answer = request(url, method="POST", headers=headers, data=json.dumps(body).encode())
    return status, answer


def free_ports(count: int) -> list[int]:
    """`count` ports free on 127.0.0.1 now (for a host process told to listen on them)."""
    ports = []
    for _ in range(count):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    return ports


def write_host_config(tmp_path: Path, folder: Path, listen: int, admin: int, *, server: str = "", rest: str = "",
                      name: str = "host.toml") -> Path:
    """A config for `python -m host serve` on the given ports, with the runtime API listeners off and
    a module cache of the test's own; `server`: more [server] lines, `rest`: the tables after it."""
    config = tmp_path / name
    config.write_text(f"""functions_dirs = ["{folder}"]
[server]
listen = "127.0.0.1:{listen}"
admin = "127.0.0.1:{admin}"
cache_dir = "{tmp_path / 'cache'}"
grpc = ""
dapr_http = ""
{server}
{rest}""")
    return config


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            value = predicate()
            if value:
                return value
        assert time.monotonic() < deadline, f"{what}: not reached within {timeout:.0f}s"
        time.sleep(interval)


class HostProcess:
    """The host started as `python -m host serve ARGS` in its own session (so the whole tree can be
    killed at the end), with stdout and stderr in one log file."""

    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None):
        self.log_path = tmp_path / f"host-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("w")
        environment = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"), **(env or {})}
        self.process = subprocess.Popen([sys.executable, "-m", "host", "serve", *args], cwd=REPO, env=environment,
                                        stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self.pid = self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 60) -> re.Match:
        def found() -> re.Match | None:
            assert self.process.poll() is None or re.search(pattern, self.log()), \
                f"host exited with {self.process.returncode}:\n{self.log()}"
            return re.search(pattern, self.log())

        return wait_until(found, timeout, f"log line /{pattern}/")

    def wait_ready(self, admin_port: int, timeout: float = 60) -> dict:
        url = f"http://127.0.0.1:{admin_port}/actuator/health/readiness"

        def ready() -> dict | None:
            assert self.process.poll() is None, f"host exited with {self.process.returncode}:\n{self.log()}"
            status, body = get_json(url)
            return body if status == 200 else None

        return wait_until(ready, timeout, "readiness UP", interval=0.1)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"host still running {timeout:.0f}s later:\n{self.log()}") from None

    def close(self) -> None:
        """Kill whatever is left of the tree (a test that failed half-way)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.process.wait()
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)  # orphaned workers, if any
        self._log.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): look at its state.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    return True

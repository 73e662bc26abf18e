"""`serve --workers N`: N processes on one port (SO_REUSEPORT) under a supervisor; worker 0's admin
port speaks for all of them; every worker watches the functions folder; a dead worker is restarted
and catches up with the admin calls it missed; SIGTERM stops the whole tree."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tests.host_process import HostProcess, get_json, pid_alive, post_json, request, wait_until

TOKEN = "s3cret"
PORTS = r"functions on 127\.0\.0\.1:(\d+), admin on 127\.0\.0\.1:(\d+)"

CONFIG = """\
functions_dirs = ["functions"]

[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
grpc = "127.0.0.1:0"
dapr_http = "127.0.0.1:0"
cache_dir = "cache"
admin_token = "s3cret"
watch_debounce_ms = 50

[function_defaults]
instance_num = 1

[state.state_demo]
type = "memory"
seed = { book1 = "100" }
"""


class Cluster:
    def __init__(self, tmp_path: Path, workers: int = 2, config: str = CONFIG):
        self.folder = tmp_path / "functions"
        self.folder.mkdir(exist_ok=True)
        for name in ("function_1.wasm", "function_2.wasm"):
            shutil.copy(EXAMPLES / name, self.folder / name)
        self.config = tmp_path / "host.toml"
        self.config.write_text(config)
        self.host = HostProcess(tmp_path, "--config", str(self.config), "--workers", str(workers))
        match = self.host.wait_for_log(PORTS)
        self.listen, self.admin_port = int(match[1]), int(match[2])
        self.base = f"http://127.0.0.1:{self.listen}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"

    def call(self, function_id: str, path: str = "/") -> tuple[int, bytes]:
        status, _, body = request(self.base + path, headers={"id": function_id})
        return status, body

    def workers(self) -> list[dict]:
        status, listing = get_json(self.admin + "/functions", TOKEN)
        assert status == 200, listing
        return listing["workers"]


def _function(worker: dict, function_id: str) -> dict | None:
    return next((f for f in worker.get("functions", []) if f.get("id") == function_id), None)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    started = Cluster(tmp_path)
    try:
        yield started
    finally:
        started.host.close()


def test_two_workers_share_the_port_and_one_admin_api_speaks_for_both(cluster: Cluster) -> None:
    readiness = cluster.host.wait_ready(cluster.admin_port)
    workers = readiness["details"]["workers"]
    assert [(w["index"], w["status"]) for w in workers] == [(0, "UP"), (1, "UP")]
    pids = [w["pid"] for w in workers]
    assert len(set(pids)) == 2 and cluster.host.pid not in pids  # two processes besides the supervisor
    assert all(pid_alive(pid) for pid in pids)

    assert cluster.call("id_1", "/?name=book1") == (200, b"There are 100 inventories for book1.")
    # Every urllib request is a new connection: the kernel spreads them over both workers.
    answers = [cluster.call("id_1", f"/?name=book{i % 2 + 1}") for i in range(200)]
    assert all(status == 200 for status, _ in answers), answers[:5]

    assert request(cluster.admin + "/functions")[0] == 401  # the token guards the aggregate too
    listing = cluster.workers()
    assert [w["pid"] for w in listing] == pids and [w["status"] for w in listing] == ["UP", "UP"]
    served = [_function(w, "id_1")["requests"] for w in listing]  # type: ignore[index]
    assert all(count > 0 for count in served), served
    assert sum(served) == 201

    # A module dropped into the folder is deployed by every worker's own watcher.
    partial = cluster.folder / "hello.wasm.partial"
    shutil.copy(EXAMPLES / "hello.wasm", partial)
    os.replace(partial, cluster.folder / "hello.wasm")
    wait_until(lambda: all(_function(w, "hello") for w in cluster.workers()), 15, "hello deployed in both workers")
    assert all(cluster.call("hello")[0] == 200 for _ in range(100))
    hello = [_function(w, "hello")["requests"] for w in cluster.workers()]  # type: ignore[index]
    assert all(count > 0 for count in hello) and sum(hello) == 100, hello
    status, body = get_json(cluster.admin + "/functions/hello", TOKEN)
    assert status == 200 and [len(w["versions"]) for w in body["workers"]] == [1, 1]

    # Layotto's admin calls are applied on every worker, and carry the token to them.
    assert post_json(cluster.admin + "/wasm/update", {"name": "function_1", "instance_num": 3})[0] == 401
    assert post_json(cluster.admin + "/wasm/update", {"name": "function_1", "instance_num": 3}, TOKEN) == (200, b"")

    def resized() -> bool:
        def counts(worker: dict) -> tuple[int, int, int]:
            instances = _function(worker, "id_1")["instances"]  # type: ignore[index]
            return instances["total"], instances["busy"], instances["configured"]

        return all(counts(w) == (3, 0, 3) for w in cluster.workers())
    wait_until(resized, 10, "function_1 at 3 instances in both workers")
    status, body = post_json(cluster.admin + "/wasm/update", {"name": "nope", "instance_num": 1}, TOKEN)
    assert (status, body) == (500, b'{"error": "no function named \'nope\'"}')  # said once, not per worker

    started = time.monotonic()
    cluster.host.signal(signal.SIGTERM)
    assert cluster.host.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    assert not any(pid_alive(pid) for pid in pids)
    log = cluster.host.log()
    assert "SIGTERM received; stopping 2 worker(s)" in log and "all workers stopped" in log
    assert log.count("shutdown: complete") == 2


def test_a_dead_worker_is_restarted_and_replays_the_admin_calls_it_missed(cluster: Cluster) -> None:
    readiness = cluster.host.wait_ready(cluster.admin_port)
    old_pid = readiness["details"]["workers"][1]["pid"]
    assert post_json(cluster.admin + "/wasm/update", {"name": "function_2", "instance_num": 2}, TOKEN)[0] == 200

    os.kill(old_pid, signal.SIGKILL)
    cluster.host.wait_for_log(rf"worker 1 \(pid {old_pid}\) exited with signal 9 after [\d.]+s; restarting it in", 5)

    def restarted() -> bool:
        status, body = get_json(cluster.admin + "/actuator/health/readiness")
        workers = body["details"]["workers"]
        return status == 200 and workers[1]["pid"] not in (None, old_pid)
    wait_until(restarted, 30, "worker 1 restarted and UP")
    new = cluster.workers()[1]
    assert pid_alive(new["pid"]) and not pid_alive(old_pid)
    assert _function(new, "id_2")["instances"]["configured"] == 2  # type: ignore[index] # replayed
    assert all(cluster.call("id_1", "/?name=book1")[0] == 200 for _ in range(50))

    os.killpg(cluster.host.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole process group
    assert cluster.host.wait(timeout=10) == 0
    assert not pid_alive(new["pid"])
    # The workers got the group's SIGINT too: some may already be gone when the supervisor counts.
    assert re.search(r"SIGINT received; stopping [0-2] worker\(s\)", cluster.host.log())


def test_workers_stop_when_the_supervisor_is_killed(cluster: Cluster) -> None:
    readiness = cluster.host.wait_ready(cluster.admin_port)
    pids = [w["pid"] for w in readiness["details"]["workers"]]
    os.kill(cluster.host.pid, signal.SIGKILL)  # no chance to forward anything
    cluster.host.process.wait(5)
    wait_until(lambda: not any(pid_alive(pid) for pid in pids), 10, "orphaned workers gone")
    assert "the supervisor (pid" in cluster.host.log() and "is gone: shutting down" in cluster.host.log()


def test_a_worker_failing_at_start_up_stops_the_supervisor(tmp_path: Path) -> None:
    (tmp_path / "cache").write_text("a file where the module cache folder should be")
    host = HostProcess(tmp_path, "--config", str(_config(tmp_path)), "--workers", "2")
    try:
        assert host.wait(timeout=60) == 1
        log = host.log()
        assert "during start-up; stopping the other workers" in log
        assert "File exists" in log  # the worker's own error reaches the shared stderr
        pids = [int(pid) for pid in re.findall(r"worker \d started \(pid (\d+)\)", log)]
        assert len(pids) == 2 and not any(pid_alive(pid) for pid in pids)
    finally:
        host.close()


def test_a_taken_port_is_refused_before_any_worker_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        host = HostProcess(tmp_path, "--config", str(_config(tmp_path)), "--workers", "2",
                           "--listen", f"127.0.0.1:{port}")
        try:
            assert host.wait(timeout=30) == 2
            assert f"error: cannot bind 127.0.0.1:{port}" in host.log() and "started (pid" not in host.log()
        finally:
            host.close()


def test_one_worker_is_the_plain_single_process_host(tmp_path: Path) -> None:
    host = HostProcess(tmp_path, "--config", str(_config(tmp_path)), "--workers", "1")
    try:
        match = host.wait_for_log(r"functions listening on 127\.0\.0\.1:0 \(port (\d+)\), admin on "
                                  r"127\.0\.0\.1:0 \(port (\d+)\)")
        admin = f"http://127.0.0.1:{match[2]}"
        assert "workers" not in host.wait_ready(int(match[2]))["details"]
        status, listing = get_json(admin + "/functions", TOKEN)
        assert status == 200 and "workers" not in listing and "worker" not in listing
        assert "supervisor" not in host.log()
        host.signal(signal.SIGTERM)
        assert host.wait(timeout=10) == 0
    finally:
        host.close()


def _config(tmp_path: Path) -> Path:
    (tmp_path / "functions").mkdir(exist_ok=True)
    shutil.copy(EXAMPLES / "function_1.wasm", tmp_path / "functions" / "function_1.wasm")
    path = tmp_path / "host.toml"
    path.write_text(CONFIG)
    return path

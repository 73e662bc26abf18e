"""`serve --workers N`: a small parent process running N copies of the host on one port.

The supervisor loads no functions and serves no requests. It:

1. reserves the listen, admin, gRPC and Dapr HTTP addresses (a bound, non-listening socket each,
   bound without SO_REUSEPORT — so a port any other process holds is refused — and given
   SO_REUSEPORT afterwards for the workers to join), which turns a port 0 into a concrete port every
   worker shares; a tokenless admin address reachable from other hosts is refused too
   (host/process/safety.py);
2. writes the validated configuration into a private runtime folder (`host/cluster.py`) and starts
   `python -m host serve --worker-index i --cluster-dir DIR` N times. Every worker binds the
   function listener with SO_REUSEPORT (the kernel spreads connections over them), runs its own
   file watcher and pools, and registers a private loopback admin port; worker 0 also serves the
   public admin port and speaks for all workers there;
3. waits until every worker serves. A worker that exits during start-up stops the others, and the
   supervisor exits 1 (the worker's own error is on the shared stderr);
4. restarts a worker that dies later, after a back-off that grows while it keeps dying young — and
   kills (then restarts) a serving worker whose heartbeat file (`worker-<i>.alive`, beaten by its
   event loop) is older than `server.worker_heartbeat_timeout_ms`: stopped (SIGSTOP) or hung;
5. on SIGTERM / SIGINT, forwards SIGTERM to every worker (each shuts down gracefully), waits
   twice `shutdown_grace_ms` plus a margin, kills stragglers, and exits 0 only if every worker did.

Workers stay in the supervisor's process group (a `kill -- -PGID` reaches them all) and shut
themselves down if the supervisor disappears.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from host.config import HostConfig, split_address
from host.process.cluster import (
    SERVING,
    heartbeat_age,
    heartbeat_path,
    read_json,
    registration_path,
    write_cluster_file,
)
from host.process.safety import StartupRefused, check_admin_exposure

log = logging.getLogger("host.supervisor")

POLL_S = 0.05
RESTART_BASE_S = 0.5  # first restart delay; doubles for each worker death within STABLE_S of its start
RESTART_MAX_S = 30.0
STABLE_S = 30.0  # a worker that ran this long before dying is restarted after RESTART_BASE_S again
SHUTDOWN_MARGIN_S = 10.0  # on top of a worker's longest drain, before stragglers are killed


def _ignore_sigint() -> None:
    """In the child before exec (the supervisor has no threads, so preexec_fn is safe): an ignored
    signal stays ignored across exec, so Ctrl-C, which reaches the whole process group, cannot
    interrupt a worker's start-up; the supervisor forwards it as SIGTERM, and the running server
    installs its own SIGINT handler."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class SupervisorError(Exception):
    """The cluster cannot start (an address is taken); the message says why."""


def reserve(address: str) -> tuple[socket.socket, str]:
    """Bind (without listening) a socket on `address`, then let the workers share it (SO_REUSEPORT);
    the address with its real port. Bound before SO_REUSEPORT is set, so a port any other process
    holds — with SO_REUSEPORT or not — is refused."""
    host, port = split_address(address)
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as error:
        raise SupervisorError(f"cannot resolve {address}: {error}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # only now: our workers may join
    except OSError as error:
        sock.close()
        raise SupervisorError(f"cannot bind {address}: {error.strerror or error}") from None
    return sock, f"{address.rpartition(':')[0]}:{sock.getsockname()[1]}"


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen | None = None
    started: float = 0.0
    ready: bool = False  # this process registered as serving
    served: bool = False  # some process in this slot has served (start-up is over for the slot)
    quick_deaths: int = 0
    restart_at: float | None = None


class Supervisor:
    def __init__(self, config: HostConfig, workers: int | None = None):
        self.config = config
        self.count = workers or config.server.workers
        self.directory: Path | None = None
        self.workers = [_Worker(i) for i in range(self.count)]
        self._reserved: list[socket.socket] = []
        self._stop_signal: int | None = None

    # -- entry point --------------------------------------------------------------------------------
    def run(self) -> int:
        """Run until a signal; the process exit code."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            try:
                self._prepare()
            except SupervisorError as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
            for worker in self.workers:
                self._spawn(worker)
            if not self._await_start():
                return self._shutdown(failed_start=self._stop_signal is None)
            self._watch()
            return self._shutdown()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for sock in self._reserved:
                sock.close()
            if self.directory is not None:
                shutil.rmtree(self.directory, ignore_errors=True)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum

    # -- start-up -----------------------------------------------------------------------------------
    def _prepare(self) -> None:
        server = self.config.server
        try:
            check_admin_exposure(server)
        except StartupRefused as error:
            raise SupervisorError(str(error)) from None
        addresses = {"listen": server.listen, "admin": server.admin, "grpc": server.grpc,
                     "dapr_http": server.dapr_http}
        concrete = {}
        for field_name, address in addresses.items():
            if not address:  # a runtime API listener switched off
                continue
            sock, concrete[field_name] = reserve(address)
            self._reserved.append(sock)
        self.config = self.config.model_copy(update={"server": server.model_copy(
            update={**concrete, "workers": self.count})})
        listen, admin = concrete["listen"], concrete["admin"]
        self.directory = Path(tempfile.mkdtemp(prefix="wasm-faas-workers-"))
        write_cluster_file(self.directory, self.config, self.count)
        log.info("supervisor (pid %d): starting %d workers; functions on %s, admin on %s", os.getpid(),
                 self.count, listen, admin)

    def _spawn(self, worker: _Worker) -> None:
        assert self.directory is not None
        registration_path(self.directory, worker.index).unlink(missing_ok=True)
        heartbeat_path(self.directory, worker.index).unlink(missing_ok=True)  # a new process beats anew
        command = [sys.executable, "-m", "host", "serve", "--worker-index", str(worker.index),
                   "--cluster-dir", str(self.directory)]
        worker.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, preexec_fn=_ignore_sigint)
        worker.started, worker.ready, worker.restart_at = time.monotonic(), False, None
        log.info("worker %d started (pid %d)", worker.index, worker.process.pid)

    def _is_serving(self, worker: _Worker) -> bool:
        assert self.directory is not None and worker.process is not None
        registration = read_json(registration_path(self.directory, worker.index))
        return bool(registration and registration.get("state") == SERVING
                    and registration.get("pid") == worker.process.pid)

    def _await_start(self) -> bool:
        """True once every worker has served; False if one exited before that, or a signal came."""
        while self._stop_signal is None:
            for worker in self.workers:
                if worker.restart_at is not None:
                    continue  # served, then died: _watch restarts it
                assert worker.process is not None
                if not worker.ready and self._is_serving(worker):  # before poll(): it may serve, then die
                    worker.ready = worker.served = True
                code = worker.process.poll()
                if code is None:
                    continue
                if worker.served:
                    self._died(worker, code, time.monotonic())
                    continue
                print(f"error: worker {worker.index} (pid {worker.process.pid}) exited with code {code} "
                      "during start-up; stopping the other workers", file=sys.stderr)
                return False
            if all(worker.served for worker in self.workers):
                log.info("all %d workers serving (pids %s)", self.count,
                         ", ".join(str(w.process.pid) for w in self.workers if w.process))
                return True
            time.sleep(POLL_S)
        return False

    # -- running ------------------------------------------------------------------------------------
    def _watch(self) -> None:
        """Restart workers that die, until a signal arrives."""
        while self._stop_signal is None:
            now = time.monotonic()
            for worker in self.workers:
                if worker.restart_at is not None:
                    if now >= worker.restart_at:
                        self._spawn(worker)
                    continue
                assert worker.process is not None
                code = worker.process.poll()
                if code is None:
                    if not worker.ready and self._is_serving(worker):
                        worker.ready = worker.served = True
                        log.info("worker %d serving again (pid %d)", worker.index, worker.process.pid)
                    elif worker.ready:
                        self._check_heartbeat(worker)
                    continue
                self._died(worker, code, now)
            time.sleep(POLL_S * 4)

    def _check_heartbeat(self, worker: _Worker) -> None:
        """Kill a serving worker whose event loop stopped beating; its death is then handled (restart)."""
        timeout_s = self.config.server.worker_heartbeat_timeout_ms / 1000
        assert self.directory is not None and worker.process is not None
        if not timeout_s:
            return
        age = heartbeat_age(self.directory, worker.index, time.time())
        if age is None or age <= timeout_s:
            return
        log.error("worker %d (pid %d) stopped answering: its heartbeat is %.1fs old (stopped or hung); killing it",
                  worker.index, worker.process.pid, age)
        try:
            worker.process.kill()  # SIGKILL ends a stopped process too
        except ProcessLookupError:
            pass
        heartbeat_path(self.directory, worker.index).unlink(missing_ok=True)

    def _died(self, worker: _Worker, code: int, now: float) -> None:
        assert self.directory is not None and worker.process is not None
        registration_path(self.directory, worker.index).unlink(missing_ok=True)
        lived = now - worker.started
        worker.quick_deaths = worker.quick_deaths + 1 if lived < STABLE_S else 0
        delay = min(RESTART_MAX_S, RESTART_BASE_S * 2 ** worker.quick_deaths)
        how = f"signal {-code}" if code < 0 else f"code {code}"
        log.error("worker %d (pid %d) exited with %s after %.1fs; restarting it in %.1fs", worker.index,
                  worker.process.pid, how, lived, delay)
        worker.ready, worker.restart_at = False, now + delay

    # -- shutdown -----------------------------------------------------------------------------------
    def _shutdown(self, failed_start: bool = False) -> int:
        running = [w for w in self.workers if w.process is not None and w.process.poll() is None
                   and w.restart_at is None]
        if self._stop_signal is not None:
            log.info("supervisor: %s received; stopping %d worker(s)", signal.Signals(self._stop_signal).name,
                     len(running))
        for worker in running:
            assert worker.process is not None
            try:
                worker.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        # A worker's drain takes at most twice the grace period (see host/server.py).
        deadline = time.monotonic() + 2 * self.config.server.shutdown_grace_ms / 1000 + SHUTDOWN_MARGIN_S
        clean = not failed_start
        for worker in running:
            assert worker.process is not None
            try:
                code = worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d (pid %d) did not stop in time: killed", worker.index, worker.process.pid)
                worker.process.kill()
                code = worker.process.wait()
            # Ended by our SIGTERM is a clean stop too: a worker still starting, or already past its
            # drain (Ctrl-C reaches the workers directly), has no handler for it.
            if code not in (0, -signal.SIGTERM) and not failed_start:
                log.error("worker %d (pid %d) exited with code %d while stopping", worker.index,
                          worker.process.pid, code)
                clean = False
        if failed_start:
            return 1
        log.info("supervisor: all workers stopped")
        return 0 if clean else 1

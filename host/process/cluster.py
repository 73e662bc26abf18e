"""One of N worker processes (`serve --workers N`): the files the supervisor and the workers share.

The supervisor creates a private runtime folder and passes it to every worker. It holds:

- `cluster.json`: the validated configuration (with concrete ports), the worker count and the
  supervisor's pid — so every worker runs exactly the same settings;
- `worker-<i>.json`: written by worker i (atomically) when its private admin listener is up
  (`"state": "starting"`) and again when its function listener is up (`"state": "serving"`). Peers
  find each other's private admin port here; the supervisor waits for every worker to be serving;
- `worker-<i>.alive`: touched by worker i's event loop every half second once it serves; the
  supervisor replaces a worker whose heartbeat is older than `server.worker_heartbeat_timeout_ms`
  (stopped with SIGSTOP, or its loop stuck);
- `admin-journal.jsonl`: every Layotto admin call (`/wasm/install|update|uninstall`) applied through
  the public admin port, so a worker restarted after a crash replays them and matches its peers.

No aiohttp here: the HTTP fan-out lives in `host/http/peers.py`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host.config import HostConfig, validate_config

CLUSTER_FILE = "cluster.json"
JOURNAL_FILE = "admin-journal.jsonl"
STARTING, SERVING = "starting", "serving"


def registration_path(directory: Path, index: int) -> Path:
    return directory / f"worker-{index}.json"


def heartbeat_path(directory: Path, index: int) -> Path:
    return directory / f"worker-{index}.alive"


def heartbeat_age(directory: Path, index: int, now: float) -> float | None:
    """Seconds since worker `index` last beat (wall clock), or None when it has not beaten yet."""
    try:
        return now - heartbeat_path(directory, index).stat().st_mtime
    except OSError:
        return None


def write_atomically(path: Path, data: Any) -> None:
    """Readers never see half a file: write a temporary file beside it, then rename."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        json.dump(data, tmp)
    os.replace(tmp.name, path)


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_cluster_file(directory: Path, config: HostConfig, workers: int) -> None:
    write_atomically(directory / CLUSTER_FILE, {"config": config.model_dump(mode="json"), "workers": workers,
                                                "supervisor_pid": os.getpid()})


@dataclass(frozen=True)
class WorkerRole:
    """This process is worker `index` of `count`; worker 0 also serves the public admin port."""

    index: int
    count: int
    directory: Path
    supervisor_pid: int

    @classmethod
    def load(cls, directory: Path, index: int) -> tuple[WorkerRole, HostConfig]:
        data = read_json(directory / CLUSTER_FILE)
        if data is None:
            raise RuntimeError(f"no readable {CLUSTER_FILE} in {directory}")
        count = int(data["workers"])
        if not 0 <= index < count:
            raise RuntimeError(f"worker index {index} is outside 0..{count - 1}")
        config = validate_config(data["config"], str(directory / CLUSTER_FILE))
        return cls(index, count, directory, int(data["supervisor_pid"])), config

    @property
    def primary(self) -> bool:
        return self.index == 0

    # -- registration -----------------------------------------------------------------------------
    def register(self, state: str, admin_port: int, listen_port: int | None = None) -> None:
        write_atomically(registration_path(self.directory, self.index),
                         {"index": self.index, "pid": os.getpid(), "state": state, "admin_port": admin_port,
                          "listen_port": listen_port})

    def heartbeat(self) -> None:
        """Tell the supervisor this worker's event loop still runs."""
        path = heartbeat_path(self.directory, self.index)
        try:
            os.utime(path)
        except FileNotFoundError:
            with contextlib.suppress(OSError):  # the folder is gone: so is the supervisor, and this worker ends
                path.touch()
        except OSError:
            pass

    def peers(self) -> list[tuple[int, dict | None]]:
        """Every other worker's index and registration (None: not registered, e.g. restarting)."""
        return [(i, read_json(registration_path(self.directory, i))) for i in range(self.count) if i != self.index]

    # -- admin journal ----------------------------------------------------------------------------
    def journal_append(self, action: str, body: dict) -> None:
        line = json.dumps({"action": action, "body": body}) + "\n"
        with open(self.directory / JOURNAL_FILE, "a") as journal:  # one writer: worker 0
            journal.write(line)

    def journal(self) -> list[tuple[str, dict]]:
        try:
            lines = (self.directory / JOURNAL_FILE).read_text().splitlines()
        except OSError:
            return []
        entries = []
        for line in lines:
            try:
                entry = json.loads(line)
                entries.append((str(entry["action"]), dict(entry["body"])))
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line (worker 0 died while writing): skip it
        return entries

"""A deployed version of one function: its module, settings, instance pool and counters."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host.functions.policy import ExecutionPolicy
from host.functions.pool import InstancePool


@dataclass
class FunctionStats:
    requests: int = 0
    errors: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, ok: bool) -> None:
        with self._lock:
            self.requests += 1
            if not ok:
                self.errors += 1


class RateLimitedLog:
    """At most `per_second` lines a second; the rest are counted and reported with the next line,
    so a function that traps on every request cannot flood the log."""

    def __init__(self, logger: logging.Logger, per_second: int = 5):
        self.logger = logger
        self.per_second = per_second
        self._window = 0
        self._lines = 0
        self._suppressed = 0
        self._lock = threading.Lock()

    def warning(self, message: str, *args: object) -> None:
        now = int(time.monotonic())
        with self._lock:
            if now != self._window:
                self._window, self._lines = now, 0
            if self._lines >= self.per_second:
                self._suppressed += 1
                return
            self._lines += 1
            suppressed, self._suppressed = self._suppressed, 0
        if suppressed:
            message += f" ({suppressed} similar lines suppressed)"
        self.logger.warning(message, *args)


@dataclass
class FunctionVersion:
    name: str  # configured name (plugin_name)
    function_id: str  # the id requests route by
    source: Path
    sha256: str
    pool: InstancePool
    timeout_s: float
    policy: ExecutionPolicy
    filter_pools: tuple[InstancePool, ...] = ()  # proxy-wasm filters in front of the function, in order
    abi_version: str = "0.2.1"
    tick_period_ms: int = 0
    deployed_at: float = field(default_factory=time.time)
    stats: FunctionStats = field(default_factory=FunctionStats)
    failure_log: RateLimitedLog = field(default_factory=lambda: RateLimitedLog(logging.getLogger("host.functions")))

    def close(self) -> None:
        """Retire the version: idle instances now, busy ones when their request ends."""
        self.pool.close()
        for pool in self.filter_pools:
            pool.close()

    def describe(self) -> dict[str, Any]:
        pool = self.pool.stats()
        # `configured` is the most instances (max); min, idle timeout and on-demand starts: issue 16.
        instances = {"total": pool["instances"], "busy": pool["busy"], "idle": pool["idle"],
                     "configured": pool["size"], **self.pool.scaling()}
        return {
            "id": self.function_id, "name": self.name, "source": str(self.source), "sha256": self.sha256,
            "abi_version": self.abi_version if self.abi_version != "unknown" else "0.2.1 (no marker)",
            "instances": instances,
            "requests": self.stats.requests, "errors": self.stats.errors, "replaced_instances": pool["replaced"],
            "deployed_at": self.deployed_at,
            "filters": [p.name for p in self.filter_pools],
            "execution": {"inline_eligible": self.policy.eligible, "inline": self.policy.inline,
                          "demotions": self.policy.demotions, "holds_gil": self.policy.cheap},
        }

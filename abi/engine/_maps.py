"""The process's memory-mapping budget: refuse to load a module or start an instance before the
process runs out of memory mappings, instead of letting wasmtime abort it.

Linux caps the mappings of a process at `vm.max_map_count` (65,530 by default). Each compiled module
holds a few (its code: read-only, executable, read-only again) and each instance a few more (its linear
memory's reservation, its copy-on-write data image). When mmap starts failing, wasmtime's infallible
allocations abort the process ("memory allocation of N bytes failed") and thread creation fails — so
the engine asks this budget first, and a refusal is an ordinary exception that names the limit.

Counting the mappings means reading /proc/self/maps, which costs about 1.3 µs per mapping (85 ms at
65,000), so it is counted rarely: the budget adds a conservative estimate for each admitted module or
instance and recounts only when the estimate has used half of what was left (or would cross the
ceiling), and at most every RECOUNT_INTERVAL_S. Mappings freed meanwhile only make the estimate
pessimistic until the next count. `reserve` mappings are always kept free for what the host itself
needs to keep serving: thread stacks and signal stacks, the allocator's arenas, sockets.

Before refusing, the budget calls its `reclaim` hook (the host retires idle instances above their
pools' minimum and collects garbage: a retired instance's mappings go only when Python's cyclic
collector frees it) and counts again: so a burst of deploys that would pass the limit with every
function's first instance still warm goes on, each function then holding only its module.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

MAX_MAP_COUNT = Path("/proc/sys/vm/max_map_count")
SELF_MAPS = "/proc/self/maps"
LIMIT_ENV = "WASM_FAAS_MAX_MAP_COUNT"  # overrides vm.max_map_count (tests, or a stricter budget)
RESERVE_ENV = "WASM_FAAS_MAP_RESERVE"
# Estimates, rounded up from measurements (wasmtime 50, Linux x86-64): a small module adds 2-3
# mappings, an instance 3 (4 before the kernel merges neighbouring reservations).
MODULE_MAPS = 4
INSTANCE_MAPS = 4
RECOUNT_INTERVAL_S = 0.25
RECLAIM_INTERVAL_S = 0.1  # the reclaim hook runs at most this often (it bounds its own cost too)


class ResourceLimitError(Exception):
    """A process limit would be crossed; nothing was allocated. `limit` names it (vm.max_map_count)."""

    def __init__(self, message: str, limit: str):
        super().__init__(message)
        self.limit = limit


def count_maps() -> int | None:
    """The number of memory mappings this process holds, or None where /proc is not available."""
    try:
        fd = os.open(SELF_MAPS, os.O_RDONLY)
    except OSError:
        return None
    lines = 0
    try:
        while chunk := os.read(fd, 1 << 16):
            lines += chunk.count(b"\n")
    finally:
        os.close(fd)
    return lines


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else None


def system_limit() -> int | None:
    try:
        return int(MAX_MAP_COUNT.read_text().strip())
    except (OSError, ValueError):
        return None


class MapBudget:
    """Admits modules and instances while the process stays `reserve` mappings below `limit`."""

    def __init__(self, limit: int | None = None, reserve: int | None = None):
        self._lock = threading.Lock()
        self.refused = 0
        self.last_refusal: str | None = None
        self.last_refusal_at: float | None = None  # time.time()
        # Called (in the admitting thread, no lock held) before a refusal: frees what may go.
        # It returns how much it may have freed (0: nothing, and the budget need not count again).
        self.reclaim: Callable[[], int] | None = None
        self.reclaims = 0
        self._reclaim_lock = threading.Lock()
        self._reclaimed_at: float | None = None
        self._freed_at: float | None = None
        self.configure(limit, reserve)

    def configure(self, limit: int | None = None, reserve: int | None = None,
                  instance_margin: int | None = None) -> None:
        """Set the limit (default: $WASM_FAAS_MAX_MAP_COUNT, else vm.max_map_count), the reserve
        (default: $WASM_FAAS_MAP_RESERVE, else a sixteenth of the limit, at least 256: 4,095 of 65,530
        cover the 512 guest threads' stacks, signal stacks and allocator arenas, about 5 mappings each)
        and the instance margin (default a sixteenth of the limit: 4,095 mappings, some 2,000 instances)."""
        with self._lock:
            self.limit = limit if limit is not None else (_env_int(LIMIT_ENV) or system_limit())
            if reserve is None:
                reserve = _env_int(RESERVE_ENV)
            if reserve is None:
                reserve = max(256, (self.limit or 0) // 16)
            self.reserve = reserve
            # Modules (deploys) stop this far below the ceiling: the rest is for instances, so that
            # functions already deployed, scaled to zero, can still start one when a request comes.
            self.instance_margin = (self.limit or 0) // 16 if instance_margin is None else instance_margin
            self._recount(time.monotonic())

    @property
    def enabled(self) -> bool:
        return self.limit is not None and self._counted is not None

    @property
    def ceiling(self) -> int:
        return (self.limit or 0) - self.reserve

    def _recount(self, now: float) -> None:
        self._counted = count_maps()
        self._counted_at = now
        self._added = 0

    def admit(self, maps: int, what: str, *, module: bool = False) -> None:
        """Account for `maps` new mappings, or raise ResourceLimitError saying `what` was refused.
        A `module` (a deploy) must leave `instance_margin` mappings free for instances as well.
        Before refusing, the `reclaim` hook (if set) may free mappings held by what can go (idle
        instances the host may retire); the budget then counts again."""
        if self.limit is None:
            return
        margin = self.instance_margin if module else 0
        if self._try_admit(maps, margin, recount=False):
            return
        if self.reclaim is not None and self._try_admit(maps, margin, recount=self._reclaim()):
            return
        with self._lock:
            self.refused += 1
            in_use = (self._counted or 0) + self._added
            kept = f"{self.reserve:,} are kept free for the host" + (
                f" and {margin:,} for instances of the functions deployed" if margin else "")
            self.last_refusal = (f"memory-map limit reached: cannot {what}: the process holds about {in_use:,} "
                                 f"memory mappings, vm.max_map_count is {self.limit:,}, {kept}")
            self.last_refusal_at = time.time()
        raise ResourceLimitError(self.last_refusal, "vm.max_map_count")

    def _try_admit(self, maps: int, margin: int, *, recount: bool) -> bool:
        with self._lock:
            if self._counted is None:
                return True
            ceiling = self.ceiling - margin
            projected = self._counted + self._added + maps
            # Recount when the estimate would cross the ceiling, or has used half of what the last
            # count left (mappings made by others, threads, the allocator, are only seen by counting).
            if recount or projected > ceiling or self._added + maps > (ceiling - self._counted) // 2:
                now = time.monotonic()
                if recount or now - self._counted_at >= RECOUNT_INTERVAL_S:
                    self._recount(now)
                    if self._counted is None:
                        return True
                    projected = self._counted + maps
            if projected > ceiling:
                return False
            self._added += maps
            return True

    def _reclaim(self) -> bool:
        """Run the reclaim hook, at most once per RECLAIM_INTERVAL_S whatever it found (callers
        arriving meanwhile do not run it again: a refusal storm at the limit costs ten calls a
        second). Whether it freed something since the last count: then the budget counts again."""
        with self._reclaim_lock:
            now = time.monotonic()
            if self._reclaimed_at is None or now - self._reclaimed_at >= RECLAIM_INTERVAL_S:
                assert self.reclaim is not None
                freed = 0
                try:
                    freed = self.reclaim()
                finally:
                    self._reclaimed_at = time.monotonic()
                    if freed:
                        self._freed_at = self._reclaimed_at
                        self.reclaims += 1
            return self._freed_at is not None and self._freed_at > self._counted_at

    def state(self) -> dict[str, object]:
        """What readiness and the listings report: mappings in use (last count plus estimates since),
        the limit, how many are left before instance starts (`headroom`) and deploys
        (`deploy_headroom`) are refused, reclaims and refusals so far, and the last refusal."""
        with self._lock:
            in_use = None if self._counted is None else self._counted + self._added
            headroom = None if in_use is None or self.limit is None else max(0, self.ceiling - in_use)
            deploys = None if headroom is None else max(0, headroom - self.instance_margin)
            return {"limit": self.limit, "reserve": self.reserve, "in_use": in_use, "headroom": headroom,
                    "instance_margin": self.instance_margin, "deploy_headroom": deploys,
                    "refusing": headroom is not None and headroom < INSTANCE_MAPS,
                    "refusing_deploys": deploys is not None and deploys < MODULE_MAPS, "refused": self.refused,
                    "reclaims": self.reclaims,
                    "last_refusal": self.last_refusal, "last_refusal_at": self.last_refusal_at}

"""Counts by outcome with a latency histogram, as plain integers under one lock, for series recorded
on a hot path (runtime calls, event deliveries). prometheus_client's bound Counter plus Histogram
children cost ~2 µs per call here (a lock per value, a Python loop over the buckets); this costs
~0.5 µs (one lock, `bisect` in C). The numbers become Prometheus families only at scrape time.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SeriesTable(Generic[K, V]):
    """The counts of each label set, created on first use. A key is added with one dict store, so
    the hot path's lookups and the scrape's reads (a list() copy, one step under the GIL) take no lock."""

    def __init__(self, make: Callable[[K], V]):
        self._make = make
        self._items: dict[K, V] = {}
        self._lock = threading.Lock()

    def get(self, key: K) -> V:
        value = self._items.get(key)
        if value is not None:
            return value
        with self._lock:
            value = self._items.get(key)
            if value is None:
                value = self._make(key)
                # Set in place: one store under the GIL, atomic for the lock-free readers (a copy per
                # new key is quadratic: 10,000 functions deployed, issue 16).
                self._items[key] = value
            return value

    def find(self, key: K) -> V | None:
        """The counts of `key` if any were recorded (creates nothing)."""
        return self._items.get(key)

    def items(self) -> list[tuple[K, V]]:
        return list(self._items.items())


class OutcomeCounts:
    """How many times each outcome happened, and how long each took."""

    __slots__ = ("bounds", "_lock", "_outcomes", "_buckets", "_sum")

    def __init__(self, bounds: Sequence[float], outcomes: Sequence[str] = ()):
        """`outcomes`: exported from the start at 0, so a dashboard sees 0 rather than no series."""
        self.bounds = tuple(bounds)
        self._lock = threading.Lock()
        self._outcomes = dict.fromkeys(outcomes, 0)
        self._buckets = [0] * (len(self.bounds) + 1)  # per bucket, not cumulative; the last is +Inf
        self._sum = 0.0

    def add(self, outcome: str, seconds: float) -> None:
        index = bisect_left(self.bounds, seconds)
        with self._lock:
            self._buckets[index] += 1
            self._sum += seconds
            self._outcomes[outcome] = self._outcomes.get(outcome, 0) + 1

    def time(self, seconds: float) -> None:
        """A duration whose outcome is counted elsewhere (event deliveries: settled in another thread)."""
        index = bisect_left(self.bounds, seconds)
        with self._lock:
            self._buckets[index] += 1
            self._sum += seconds

    def snapshot(self) -> tuple[dict[str, int], list[tuple[str, float]], float]:
        """(count by outcome, cumulative (le, count) buckets ending with +Inf, sum of seconds)."""
        with self._lock:
            outcomes, buckets, total = dict(self._outcomes), list(self._buckets), self._sum
        cumulative: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), buckets, strict=True):
            running += count
            cumulative.append((bound, running))
        return outcomes, cumulative, total

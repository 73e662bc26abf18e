"""Per-function request metrics, recorded on the one call path (host/functions/dispatch.py).

Why not prometheus_client's Counter and Histogram children here: measured on this host, a bound
`Counter.inc()` costs ~0.5 µs and a bound `Histogram.observe()` with these 18 buckets ~1.7 µs (a
lock per value, a Python loop over the buckets), i.e. ~2.2 µs per request. `FunctionMetrics` keeps
plain integers under one lock per function and finds the bucket with `bisect` (C): ~0.6 µs. The
numbers become Prometheus families only at scrape time (`RequestCollector`), through
prometheus_client's exposition.

Every function id gets one `FunctionMetrics`, created once (at deploy, or on the first request of
a version the metrics were not told about).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from host.metrics.counts import SeriesTable

# From 100 µs: cheap guests answer in microseconds, so OTel's 5 ms first bucket would hide them.
DURATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                    1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Error kinds exported for each function from the start, so a dashboard sees 0 rather than no series.
ERROR_KINDS = ("trap", "deadline", "fuel", "busy", "down", "timeout", "cycle", "host", "too_large")


class Refusal(Protocol):
    """What the call path raises (host.functions.dispatch.DispatchError): the HTTP status and why."""

    status: int
    kind: str


class FunctionMetrics:
    """The request counts of one function id."""

    __slots__ = ("function_id", "_lock", "_codes", "_buckets", "_sum", "_errors")

    def __init__(self, function_id: str):
        self.function_id = function_id
        self._lock = threading.Lock()
        self._codes: dict[int, int] = {}
        self._buckets = [0] * (len(DURATION_BUCKETS) + 1)  # per bucket, not cumulative; the last is +Inf
        self._sum = 0.0
        self._errors = dict.fromkeys(ERROR_KINDS, 0)

    def answered(self, status: int, seconds: float) -> None:
        """The function produced an answer (whatever its status)."""
        index = bisect_left(DURATION_BUCKETS, seconds)
        with self._lock:
            self._buckets[index] += 1
            self._sum += seconds
            self._codes[status] = self._codes.get(status, 0) + 1

    def refused(self, error: Refusal, seconds: float) -> None:
        """The call path answered for the function: a trap, a deadline, a busy pool..."""
        index = bisect_left(DURATION_BUCKETS, seconds)
        with self._lock:
            self._buckets[index] += 1
            self._sum += seconds
            self._count(error.status, error.kind)

    def counted(self, status: int, kind: str) -> None:
        """A refusal without a duration (the listener answered before the call path saw it)."""
        with self._lock:
            self._count(status, kind)

    def _count(self, status: int, kind: str) -> None:
        self._codes[status] = self._codes.get(status, 0) + 1
        if kind in self._errors:
            self._errors[kind] += 1

    def snapshot(self) -> tuple[dict[int, int], list[int], float, dict[str, int]]:
        """(count by status, per-bucket counts, sum of seconds, count by error kind)."""
        with self._lock:
            return dict(self._codes), list(self._buckets), self._sum, dict(self._errors)


class RequestMetrics:
    """The request counts of every function id, and requests for ids nothing serves."""

    def __init__(self, registry: CollectorRegistry):
        self.unknown = Counter("wasm_faas_unknown_function_requests",
                               "Requests naming a function id that nothing serves (404)", registry=registry)
        self._functions: SeriesTable[str, FunctionMetrics] = SeriesTable(FunctionMetrics)
        self.of = self._functions.get  # the counts of a function id (created on first use)
        registry.register(RequestCollector(self))

    def functions(self) -> list[FunctionMetrics]:
        return sorted((metrics for _, metrics in self._functions.items()), key=lambda f: f.function_id)

    def listener_refused(self, function_id: str | None, status: int = 413, kind: str = "too_large") -> None:
        """A request the listener answered itself (413: body too large). Counted under the function
        only when that id is one this host knows (a client-chosen header must not create series)."""
        bound = self._functions.find(function_id) if function_id else None
        if bound is not None:
            bound.counted(status, kind)


class RequestCollector(Collector):
    """`wasm_faas_requests_total{function,code}`, `wasm_faas_request_duration_seconds{function}`,
    `wasm_faas_errors_total{function,kind}`."""

    def __init__(self, metrics: RequestMetrics):
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("wasm_faas_requests", "Requests answered, by function id and HTTP status",
                                       labels=["function", "code"])
        duration = HistogramMetricFamily("wasm_faas_request_duration_seconds",
                                         "Time from the call path taking a request to its answer (waiting for "
                                         "an instance included)", labels=["function"])
        errors = CounterMetricFamily("wasm_faas_errors", "Requests the host answered for the function, by kind: "
                                     "trap (500), deadline / fuel (504), busy / down (503), timeout (504), "
                                     "cycle (508), host (500), too_large (413)", labels=["function", "kind"])
        for function in self._metrics.functions():
            codes, buckets, total, kinds = function.snapshot()
            for status, count in sorted(codes.items()):
                requests.add_metric([function.function_id, str(status)], count)
            cumulative, running = [], 0
            for bound, count in zip((*map(str, DURATION_BUCKETS), "+Inf"), buckets, strict=True):
                running += count
                cumulative.append((bound, running))
            duration.add_metric([function.function_id], cumulative, total)
            for kind, count in kinds.items():
                errors.add_metric([function.function_id, kind], count)
        yield from (requests, duration, errors)

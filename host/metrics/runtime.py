"""Runtime calls (state, pub/sub, lock, sequencer, configuration, invoke) by caller API, capability,
component and outcome, with their latency.

Callers: functions through host/functions/services.py (api "function"), the gRPC servers
(host/grpc, api "grpc") and Dapr's HTTP API (host/http/dapr, api "http") through
`RuntimeApi.run` and `InvokeApi.forward` (host/api). Each calls `observe` once per call. The
component label is the configured component name (a bounded set; for invoke, the function id); a
name nothing is configured under is counted as component "" with outcome `unknown_component`, so
client or guest input cannot create series.

Counts are plain integers per (api, capability, component), bound once and found with one dict
lookup (host/metrics/counts.py: ~0.5 µs a call instead of ~2 µs for prometheus_client children),
exported at scrape time by `RuntimeCollector`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from abi.services import BadRequest, Conflict, UnknownName
from host.metrics.counts import OutcomeCounts, SeriesTable

RUNTIME_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5, 5.0)
OUTCOMES = ("ok", "unknown_component", "conflict", "bad_request", "error")


def outcome_of(error: BaseException | None) -> str:
    """ok, unknown_component, conflict (ETag), bad_request, or error (the backend failed). The
    runtime API's errors (host/api/errors.py ApiError) carry their outcome as `outcome`."""
    if error is None:
        return "ok"
    outcome = getattr(error, "outcome", None)
    if isinstance(outcome, str) and outcome in OUTCOMES:
        return outcome
    if isinstance(error, UnknownName):
        return "unknown_component"
    if isinstance(error, Conflict):
        return "conflict"
    if isinstance(error, BadRequest):
        return "bad_request"
    return "error"


class CallObserver(Protocol):
    def observe(self, capability: str, component: str, error: BaseException | None, seconds: float) -> None: ...


class _NoObserver:
    def observe(self, capability: str, component: str, error: BaseException | None, seconds: float) -> None:
        return None


NO_OBSERVER: CallObserver = _NoObserver()


class RuntimeCallMetrics:
    """`wasm_faas_runtime_calls_total{api,capability,component,outcome}` and
    `wasm_faas_runtime_call_duration_seconds{api,capability,component}`."""

    def __init__(self, registry: CollectorRegistry):
        self._series: SeriesTable[tuple[str, str, str], OutcomeCounts] = SeriesTable(
            lambda _key: OutcomeCounts(RUNTIME_BUCKETS))
        registry.register(RuntimeCollector(self))

    def for_api(self, api: str) -> CallObserver:
        """An observer that labels its calls with `api` ("function", "grpc", "http")."""
        return _ApiObserver(self, api)

    def series(self, api: str, capability: str, component: str) -> OutcomeCounts:
        """The counts of one (api, capability, component), created on first use."""
        return self._series.get((api, capability, component))

    def all_series(self) -> list[tuple[tuple[str, str, str], OutcomeCounts]]:
        return sorted(self._series.items(), key=lambda item: item[0])


class _ApiObserver:
    """One API's observer: its series bound per (capability, component) on first use."""

    __slots__ = ("_metrics", "_api", "_bound")

    def __init__(self, metrics: RuntimeCallMetrics, api: str):
        self._metrics = metrics
        self._api = api
        self._bound: dict[tuple[str, str], OutcomeCounts] = {}

    def observe(self, capability: str, component: str, error: BaseException | None, seconds: float) -> None:
        outcome = "ok" if error is None else outcome_of(error)
        if outcome == "unknown_component":
            component = ""
        bound = self._bound.get((capability, component))
        if bound is None:
            bound = self._metrics.series(self._api, capability, component)
            self._bound = {**self._bound, (capability, component): bound}  # replaced whole, as above
        bound.add(outcome, seconds)


class RuntimeCollector(Collector):
    def __init__(self, metrics: RuntimeCallMetrics):
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        calls = CounterMetricFamily("wasm_faas_runtime_calls", "Runtime (component) calls, by caller API (function, "
                                    "grpc, http), capability, component and outcome (ok, unknown_component, "
                                    "conflict, bad_request, error)", labels=["api", "capability", "component",
                                                                             "outcome"])
        duration = HistogramMetricFamily("wasm_faas_runtime_call_duration_seconds", "Runtime (component) call "
                                         "latency, by caller API, capability and component (from the API taking the "
                                         "call to its answer)", labels=["api", "capability", "component"])
        for key, counts in self._metrics.all_series():
            outcomes, buckets, total = counts.snapshot()
            for outcome, count in sorted(outcomes.items()):
                calls.add_metric([*key, outcome], count)
            duration.add_metric(list(key), buckets, total)
        yield from (calls, duration)

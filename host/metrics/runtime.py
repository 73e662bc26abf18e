"""Runtime calls (state, pub/sub, lock, sequencer, configuration) by caller API, capability,
component and outcome, with their latency.

Functions reach components through host/functions/services.py, which calls `observe` once per
call; the gRPC and HTTP runtime APIs can call the same method with their own `api` label. The
component label is the configured component name (a bounded set); a name nothing is configured
under is counted as component "" with outcome `unknown_component`, so guest input cannot create
series.
"""

from __future__ import annotations

import threading
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram

from abi.services import BadRequest, Conflict, UnknownName

RUNTIME_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5, 5.0)


def outcome_of(error: BaseException | None) -> str:
    """ok, unknown_component, conflict (ETag), bad_request, or error (the backend failed)."""
    if error is None:
        return "ok"
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
        self.calls = Counter("wasm_faas_runtime_calls", "Runtime (component) calls, by caller API, capability, "
                             "component and outcome", ["api", "capability", "component", "outcome"],
                             registry=registry)
        self.duration = Histogram("wasm_faas_runtime_call_duration_seconds", "Runtime (component) call latency",
                                  ["api", "capability", "component"], buckets=RUNTIME_BUCKETS, registry=registry)
        self._children: dict[tuple[str, str, str, str], tuple[Counter, Histogram]] = {}
        self._lock = threading.Lock()

    def for_api(self, api: str) -> CallObserver:
        """An observer that labels its calls with `api` ("function", "grpc", "http")."""
        return _ApiObserver(self, api)

    def record(self, api: str, capability: str, component: str, error: BaseException | None, seconds: float) -> None:
        outcome = outcome_of(error)
        if outcome == "unknown_component":
            component = ""
        key = (api, capability, component, outcome)
        children = self._children.get(key)
        if children is None:
            with self._lock:
                children = (self.calls.labels(*key), self.duration.labels(api, capability, component))
                self._children = {**self._children, key: children}
        counter, histogram = children
        counter.inc()
        histogram.observe(seconds)


class _ApiObserver:
    __slots__ = ("_metrics", "_api")

    def __init__(self, metrics: RuntimeCallMetrics, api: str):
        self._metrics = metrics
        self._api = api

    def observe(self, capability: str, component: str, error: BaseException | None, seconds: float) -> None:
        self._metrics.record(self._api, capability, component, error, seconds)

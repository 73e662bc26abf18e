"""Prometheus metrics for the host (issue 14): `GET /metrics` on the admin listener.

Series (all prefixed `wasm_faas_`): requests_total{function,code}, request_duration_seconds{function},
errors_total{function,kind}, unknown_function_requests_total, instances{function,state},
instances_max{function}, queue_depth{function}, instance_starts_total{function,reason},
instance_retirements_total{function,reason},
deploys_total{function,outcome}, module_cache_total{result},
runtime_calls_total{api,capability,component,outcome}, runtime_call_duration_seconds{api,capability,
component}, event_deliveries_total{function,pubsub,topic,group,outcome},
event_delivery_duration_seconds{function,pubsub,topic,group}; with `--workers N`, worker_up{worker}
and a `worker` label on everything. Plus the
guests' own metrics under their names, and prometheus_client's process_* / python_* collectors.
"""

from __future__ import annotations

from prometheus_client import disable_created_metrics

from host.metrics.exposition import merge_workers
from host.metrics.registry import CONTENT_TYPE, HostMetrics
from host.metrics.requests import FunctionMetrics, RequestMetrics
from host.metrics.runtime import NO_OBSERVER, CallObserver, RuntimeCallMetrics

# The `*_created` gauges double the exposition and no dashboard here reads them.
disable_created_metrics()

__all__ = ["CONTENT_TYPE", "NO_OBSERVER", "CallObserver", "FunctionMetrics", "HostMetrics", "RequestMetrics",
           "RuntimeCallMetrics", "merge_workers"]

"""Metrics read at scrape time from state the host keeps anyway: instance pools (idle, busy,
waiting, replaced), the compiled-module cache counters, and the metrics guests define with
`proxy_define_metric`. Nothing here costs anything per request.

Guest metrics are process-wide in the ABI (abi/shared.py: one namespace shared by every function,
as in Envoy), so they are exported under the guest's own name — sanitised to a Prometheus name —
without a function label. A guest counter gets the conventional `_total` suffix, a guest histogram
(count and sum only: the ABI keeps no buckets) is exported as a summary. A guest name that would
collide with one of the host's own series is skipped.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

_INVALID = re.compile(r"[^a-zA-Z0-9_:]")
HOST_PREFIXES = ("wasm_faas_", "process_", "python_")


def sanitise(name: str) -> str:
    """A Prometheus metric name for a guest's metric name (`my.filter/hits` -> `my_filter_hits`)."""
    cleaned = _INVALID.sub("_", name.strip())
    if not cleaned or cleaned[0].isdigit():
        cleaned = "_" + cleaned
    return cleaned


class _Version(Protocol):
    function_id: str
    pool: Any
    filter_pools: tuple[Any, ...]


class PoolCollector(Collector):
    """`wasm_faas_instances{function,state}`, `wasm_faas_instances_configured{function}`,
    `wasm_faas_queue_depth{function}` and `wasm_faas_instance_starts_total{function,reason}` from
    the versions currently routed. Replacements of versions that were retired since are carried
    over, so the counter never goes back."""

    def __init__(self, versions: Callable[[], list[Any]]):
        self._versions = versions
        self._lock = threading.Lock()
        self._deploy_starts: dict[str, int] = {}
        self._carried: dict[str, int] = {}  # replacements made by retired versions, per function id
        self._live: dict[int, tuple[str, Any]] = {}  # id(version) -> (function id, version)

    def deployed(self, version: _Version) -> None:
        """A version went live with full pools: its instances count as starts (reason "deploy")."""
        pools = [version.pool, *version.filter_pools]
        started = sum(pool.stats()["instances"] for pool in pools)
        with self._lock:
            self._deploy_starts[version.function_id] = self._deploy_starts.get(version.function_id, 0) + started
            self._live[id(version)] = (version.function_id, version)

    def _replacements(self, routed: list[Any]) -> dict[str, int]:
        """Lock held: replacements per function id, live versions plus retired ones."""
        routed_ids = {id(v) for v in routed}
        for key, (function_id, version) in list(self._live.items()):
            if key not in routed_ids:  # retired: keep its count, drop the reference
                self._carried[function_id] = self._carried.get(function_id, 0) + _replaced(version)
                del self._live[key]
        totals = dict(self._carried)
        for version in routed:
            if id(version) not in self._live:
                self._live[id(version)] = (version.function_id, version)
            totals[version.function_id] = totals.get(version.function_id, 0) + _replaced(version)
        return totals

    def collect(self) -> Iterator[Metric]:
        routed = self._versions()
        instances = GaugeMetricFamily("wasm_faas_instances", "Started instances, by state",
                                      labels=["function", "state"])
        configured = GaugeMetricFamily("wasm_faas_instances_configured", "Configured pool size (instance_num)",
                                       labels=["function"])
        queue = GaugeMetricFamily("wasm_faas_queue_depth", "Requests waiting for a free instance", labels=["function"])
        starts = CounterMetricFamily("wasm_faas_instance_starts", "Instances started, by reason: deploy (a new "
                                     "version's pool) or replace (after a trap or a deadline)",
                                     labels=["function", "reason"])
        totals: dict[str, dict[str, int]] = {}
        for version in routed:
            entry = totals.setdefault(version.function_id, {"idle": 0, "busy": 0, "waiting": 0, "size": 0})
            stats = version.pool.stats()
            for key in ("idle", "busy", "waiting", "size"):
                entry[key] += stats[key]
        for function_id, entry in sorted(totals.items()):
            instances.add_metric([function_id, "idle"], entry["idle"])
            instances.add_metric([function_id, "busy"], entry["busy"])
            configured.add_metric([function_id], entry["size"])
            queue.add_metric([function_id], entry["waiting"])
        with self._lock:
            replaced = self._replacements(routed)
            deploy_starts = dict(self._deploy_starts)
        for function_id in sorted(set(replaced) | set(deploy_starts)):
            starts.add_metric([function_id, "deploy"], deploy_starts.get(function_id, 0))
            starts.add_metric([function_id, "replace"], replaced.get(function_id, 0))
        yield from (instances, configured, queue, starts)


def _replaced(version: Any) -> int:
    return int(version.pool.replaced) + sum(int(pool.replaced) for pool in version.filter_pools)


class CacheCollector(Collector):
    """`wasm_faas_module_cache_total{result=memory_hit|disk_hit|compiled}` from ModuleCache.stats()."""

    def __init__(self, stats: Callable[[], dict[str, int]]):
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        family = CounterMetricFamily("wasm_faas_module_cache", "Compiled-module loads, by where the module came "
                                     "from", labels=["result"])
        family.add_metric(["memory_hit"], stats.get("memory_hits", 0))
        family.add_metric(["disk_hit"], stats.get("disk_hits", 0))
        family.add_metric(["compiled"], stats.get("compiled", 0))
        yield family


class GuestCollector(Collector):
    """The metrics guests define (`proxy_define_metric`), under their own (sanitised) names."""

    def __init__(self, snapshot: Callable[[], Iterable[dict[str, Any]]]):
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        seen: set[str] = set()
        for metric in self._snapshot():
            name = sanitise(str(metric["name"]))
            kind = metric["type"]
            base = name[:-len("_total")] if kind == "counter" and name.endswith("_total") else name
            if base.startswith(HOST_PREFIXES) or base in seen:
                continue  # a host series, or the same name defined as another kind
            seen.add(base)
            text = f"Guest-defined {kind} {metric['name']!r} (proxy_define_metric)"
            if kind == "counter":
                yield CounterMetricFamily(base, text, value=metric["value"])
            elif kind == "gauge":
                yield GaugeMetricFamily(base, text, value=metric["value"])
            else:
                yield SummaryMetricFamily(base, text, count_value=metric["count"], sum_value=metric["value"])

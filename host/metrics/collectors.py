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
    """`wasm_faas_instances{function,state}`, `wasm_faas_instances_max{function}`,
    `wasm_faas_queue_depth{function}`, `wasm_faas_instance_starts_total{function,reason}` and
    `wasm_faas_instance_retirements_total{function,reason}` from the versions currently routed.
    The counts of versions that were retired since are carried over, so a counter never goes back."""

    def __init__(self, versions: Callable[[], list[Any]]):
        self._versions = versions
        self._lock = threading.Lock()
        self._deploy_starts: dict[str, int] = {}
        self._carried: dict[tuple[str, str], int] = {}  # (function id, event) counts of retired versions
        self._live: dict[int, tuple[str, Any]] = {}  # id(version) -> (function id, version)
        self._folded_at = 0  # len(_live) after retired versions were last folded in

    def deployed(self, version: _Version) -> None:
        """A version went live with full pools: its instances count as starts (reason "deploy")."""
        pools = [version.pool, *version.filter_pools]
        started = sum(pool.stats()["instances"] for pool in pools)
        with self._lock:
            self._deploy_starts[version.function_id] = self._deploy_starts.get(version.function_id, 0) + started
            self._live[id(version)] = (version.function_id, version)
            # Retired versions are folded in at deploys too, not only at scrapes: a host nobody scrapes
            # would otherwise keep every version it ever deployed alive (issue 15 item 9).
            if len(self._live) >= 2 * self._folded_at + 64:
                self._events(self._versions())
                self._folded_at = len(self._live)

    def _events(self, routed: list[Any]) -> dict[tuple[str, str], int]:
        """Lock held: (function id, event) -> count, live versions plus retired ones."""
        routed_ids = {id(v) for v in routed}
        for key, (function_id, version) in list(self._live.items()):
            if key not in routed_ids:  # retired: keep its counts, drop the reference
                for event, count in _pool_events(version).items():
                    self._carried[(function_id, event)] = self._carried.get((function_id, event), 0) + count
                del self._live[key]
        totals = dict(self._carried)
        for version in routed:
            if id(version) not in self._live:
                self._live[id(version)] = (version.function_id, version)
            for event, count in _pool_events(version).items():
                totals[(version.function_id, event)] = totals.get((version.function_id, event), 0) + count
        return totals

    def collect(self) -> Iterator[Metric]:
        routed = self._versions()
        instances = GaugeMetricFamily("wasm_faas_instances", "Started instances, by state",
                                      labels=["function", "state"])
        largest = GaugeMetricFamily("wasm_faas_instances_max", "The most instances the pool may start "
                                    "(instance_num, or max_instances)", labels=["function"])
        queue = GaugeMetricFamily("wasm_faas_queue_depth", "Requests waiting for a free instance", labels=["function"])
        starts = CounterMetricFamily("wasm_faas_instance_starts", "Instances started, by reason: deploy (a new "
                                     "version's pool), replace (after a trap or a deadline), scale (on demand)",
                                     labels=["function", "reason"])
        retired = CounterMetricFamily("wasm_faas_instance_retirements", "Instances retired while the version "
                                      "serves, by reason: idle (scaled down)", labels=["function", "reason"])
        totals: dict[str, dict[str, int]] = {}
        for version in routed:
            entry = totals.setdefault(version.function_id, {"idle": 0, "busy": 0, "waiting": 0, "size": 0})
            stats = version.pool.stats()
            for key in ("idle", "busy", "waiting", "size"):
                entry[key] += stats[key]
        for function_id, entry in sorted(totals.items()):
            instances.add_metric([function_id, "idle"], entry["idle"])
            instances.add_metric([function_id, "busy"], entry["busy"])
            largest.add_metric([function_id], entry["size"])
            queue.add_metric([function_id], entry["waiting"])
        with self._lock:
            events = self._events(routed)
            deploy_starts = dict(self._deploy_starts)
        for function_id in sorted({f for f, _ in events} | set(deploy_starts)):
            starts.add_metric([function_id, "deploy"], deploy_starts.get(function_id, 0))
            starts.add_metric([function_id, "replace"], events.get((function_id, "replace"), 0))
            starts.add_metric([function_id, "scale"], events.get((function_id, "scale"), 0))
            retired.add_metric([function_id, "idle"], events.get((function_id, "idle"), 0))
        yield from (instances, largest, queue, starts, retired)


def _pool_events(version: Any) -> dict[str, int]:
    """Replacements, on-demand starts and idle retirements of a version's pools (function and filters)."""
    totals = {"replace": 0, "scale": 0, "idle": 0}
    for pool in (version.pool, *version.filter_pools):
        totals["replace"] += int(pool.replaced)
        scaling = pool.scaling() if hasattr(pool, "scaling") else {}  # pools that scale (min/max instances)
        totals["scale"] += int(scaling.get("started_on_demand", 0))
        totals["idle"] += int(scaling.get("retired_idle", 0))
    return totals


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

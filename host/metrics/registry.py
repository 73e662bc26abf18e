"""The host's metrics: one prometheus_client registry per App (so two Apps in one test process
never share counts), holding the request, runtime-call and deploy series, the scrape-time
collectors (pools, module cache, guest metrics, event deliveries) and the process collectors."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from host.metrics.collectors import CacheCollector, GuestCollector, PoolCollector
from host.metrics.deploys import DeployMetrics
from host.metrics.events import EventCollector, Subscriber
from host.metrics.requests import RequestMetrics
from host.metrics.runtime import RuntimeCallMetrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HostMetrics:
    def __init__(self, *, process_collectors: bool = True):
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = RequestMetrics(self.registry)
        self.runtime = RuntimeCallMetrics(self.registry)
        self.deploys = DeployMetrics(self.registry)
        self.pools: PoolCollector | None = None
        if process_collectors:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

    def watch(self, *, versions: Callable[[], list[Any]], cache_stats: Callable[[], dict[str, int]],
              guest_metrics: Callable[[], Iterable[dict[str, Any]]]) -> None:
        """Register the scrape-time collectors over the App's parts (called once, by the App)."""
        self.pools = PoolCollector(versions)
        for collector in (self.pools, CacheCollector(cache_stats), GuestCollector(guest_metrics)):
            self.registry.register(collector)

    def watch_events(self, subscribers: Callable[[], Iterable[Subscriber]]) -> None:
        """Register the event-delivery collector over the configured subscriptions (once, by the App)."""
        self.registry.register(EventCollector(subscribers))

    def version_deployed(self, version: Any) -> None:
        """A version went live: bind its request children now (not on its first request) and count
        its instance starts."""
        self.requests.of(version.function_id)
        if self.pools is not None:
            self.pools.deployed(version)

    def render(self) -> bytes:
        """The Prometheus text exposition (pure Python, ~ms per 10 functions: run it off the loop)."""
        return generate_latest(self.registry)

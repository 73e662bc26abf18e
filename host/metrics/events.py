"""Event deliveries into functions (host/events), read at scrape time from each subscriber's counts:

- `wasm_faas_event_deliveries_total{function,pubsub,topic,group,outcome}`: each delivery attempt's
  outcome — delivered (2xx, acknowledged), retried (refused, redelivered after its back-off),
  dead_lettered (given up, parked in the dead-letter topic), dropped (given up, no dead-letter
  topic). Retries and dead letters are those outcomes.
- `wasm_faas_event_delivery_duration_seconds{function,pubsub,topic,group}`: each attempt, from
  taking the message to the function's answer (the call path's wait for an instance included).

The labels come from the configured `[[subscriptions]]` (a bounded set); `group` is the consumer
group (default `<app_id>.<function>`), which tells two subscriptions of one topic apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from host.metrics.counts import OutcomeCounts

# From 250 µs: a delivery is at least a function call; redelivery back-offs are not in it.
DELIVERY_BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0)


class _Spec(Protocol):
    @property
    def function(self) -> str: ...
    @property
    def pubsub(self) -> str: ...
    @property
    def topic(self) -> str: ...


class _Stats(Protocol):
    @property
    def delivered(self) -> int: ...
    @property
    def redelivered(self) -> int: ...
    @property
    def dead_lettered(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def latency(self) -> OutcomeCounts: ...


class Subscriber(Protocol):
    """What host/events/delivery.py's Subscriber shows (read-only here)."""

    @property
    def spec(self) -> _Spec: ...
    @property
    def group(self) -> str: ...
    @property
    def stats(self) -> _Stats: ...


class EventCollector(Collector):
    def __init__(self, subscribers: Callable[[], Iterable[Subscriber]]):
        self._subscribers = subscribers

    def collect(self) -> Iterator[Metric]:
        labels = ["function", "pubsub", "topic", "group"]
        deliveries = CounterMetricFamily("wasm_faas_event_deliveries", "Event delivery attempts into functions, by "
                                         "subscription and outcome: delivered (2xx, acknowledged), retried "
                                         "(redelivered after a back-off), dead_lettered (given up, parked in the "
                                         "dead-letter topic), dropped (given up, no dead-letter topic)",
                                         labels=[*labels, "outcome"])
        duration = HistogramMetricFamily("wasm_faas_event_delivery_duration_seconds", "Time of each event delivery "
                                         "attempt, from taking the message to the function's answer", labels=labels)
        for subscriber in self._subscribers():
            spec, stats = subscriber.spec, subscriber.stats
            key = [spec.function, spec.pubsub, spec.topic, subscriber.group]
            for outcome, count in (("delivered", stats.delivered), ("retried", stats.redelivered),
                                   ("dead_lettered", stats.dead_lettered), ("dropped", stats.dropped)):
                deliveries.add_metric([*key, outcome], count)
            _, buckets, total = stats.latency.snapshot()
            duration.add_metric(key, buckets, total)
        yield from (deliveries, duration)

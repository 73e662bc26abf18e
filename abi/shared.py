"""Process-wide ABI state shared by every instance: shared data (with CAS), shared queues, metrics.

Thread-safe: instances run in several guest threads at once.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from abi.codes import Status

QueueListener = Callable[[int], None]  # called with the queue id after each enqueue


class SharedData:
    """Key -> (value, cas). A set with cas 0 is unconditional; otherwise it must match the current cas."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[bytes, tuple[bytes, int]] = {}
        self._next_cas = 1

    def get(self, key: bytes) -> tuple[bytes, int] | None:
        with self._lock:
            return self._items.get(key)

    def set(self, key: bytes, value: bytes, cas: int) -> Status:
        with self._lock:
            current = self._items.get(key)
            if cas and (current is None or current[1] != cas):
                return Status.CAS_MISMATCH
            self._next_cas += 1
            self._items[key] = (value, self._next_cas)
            return Status.OK

    def snapshot(self) -> dict[bytes, bytes]:
        with self._lock:
            return {k: v for k, (v, _) in self._items.items()}


@dataclass
class _Queue:
    vm_id: str
    name: str
    items: collections.deque = field(default_factory=collections.deque)
    listener: QueueListener | None = None


class SharedQueues:
    """Named queues; the registering root context is told (`proxy_on_queue_ready`) about new items."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[int, _Queue] = {}
        self._by_name: dict[tuple[str, str], int] = {}

    def register(self, vm_id: str, name: str, listener: QueueListener | None) -> int:
        with self._lock:
            queue_id = self._by_name.get((vm_id, name))
            if queue_id is None:
                queue_id = len(self._queues) + 1
                self._queues[queue_id] = _Queue(vm_id, name)
                self._by_name[(vm_id, name)] = queue_id
            self._queues[queue_id].listener = listener  # the latest registrant receives the callbacks
            return queue_id

    def resolve(self, vm_id: str, name: str) -> int | None:
        with self._lock:
            return self._by_name.get((vm_id, name))

    def enqueue(self, queue_id: int, data: bytes) -> Status:
        with self._lock:
            queue = self._queues.get(queue_id)
            if queue is None:
                return Status.NOT_FOUND
            queue.items.append(data)
            listener = queue.listener
        if listener is not None:
            listener(queue_id)
        return Status.OK

    def dequeue(self, queue_id: int) -> tuple[Status, bytes]:
        with self._lock:
            queue = self._queues.get(queue_id)
            if queue is None:
                return Status.NOT_FOUND, b""
            if not queue.items:
                return Status.EMPTY, b""
            return Status.OK, queue.items.popleft()


class MetricType:
    COUNTER, GAUGE, HISTOGRAM = 0, 1, 2


@dataclass
class Metric:
    name: str
    kind: int
    value: int = 0  # counter total, gauge value, histogram sum
    count: int = 0  # histogram observations
    samples: list[int] = field(default_factory=list)  # histogram: the latest observations


class Metrics:
    """Counters, gauges and histograms defined by guests, readable by the host (`snapshot`)."""

    MAX_SAMPLES = 1024

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[int, Metric] = {}
        self._by_key: dict[tuple[str, int], int] = {}

    def define(self, kind: int, name: str) -> int | None:
        if kind not in (MetricType.COUNTER, MetricType.GAUGE, MetricType.HISTOGRAM):
            return None
        with self._lock:
            metric_id = self._by_key.get((name, kind))
            if metric_id is None:
                metric_id = len(self._metrics) + 1
                self._metrics[metric_id] = Metric(name, kind)
                self._by_key[(name, kind)] = metric_id
            return metric_id

    def increment(self, metric_id: int, delta: int) -> Status:
        with self._lock:
            metric = self._metrics.get(metric_id)
            if metric is None:
                return Status.NOT_FOUND
            if metric.kind == MetricType.HISTOGRAM:
                return Status.BAD_ARGUMENT
            if metric.kind == MetricType.COUNTER and delta < 0:
                return Status.BAD_ARGUMENT  # counters only go up
            metric.value += delta
            return Status.OK

    def record(self, metric_id: int, value: int) -> Status:
        with self._lock:
            metric = self._metrics.get(metric_id)
            if metric is None:
                return Status.NOT_FOUND
            if metric.kind == MetricType.HISTOGRAM:
                metric.value += value
                metric.count += 1
                metric.samples = (metric.samples + [value])[-self.MAX_SAMPLES:]
            else:
                metric.value = value
            return Status.OK

    def get(self, metric_id: int) -> int | None:
        with self._lock:
            metric = self._metrics.get(metric_id)
            if metric is None:
                return None
            return metric.count if metric.kind == MetricType.HISTOGRAM else metric.value

    def snapshot(self) -> list[dict]:
        kinds = {0: "counter", 1: "gauge", 2: "histogram"}
        with self._lock:
            return [{"name": m.name, "type": kinds[m.kind], "value": m.value, "count": m.count}
                    for m in self._metrics.values()]

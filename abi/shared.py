"""Process-wide ABI state shared by every instance: shared data (with CAS), shared queues, metrics.

Thread-safe: instances run in several guest threads at once.

Bounded (issue 15 item 9): what a function writes into shared data and enqueues is charged to it
(its function id) against its memory limit — a key and value, or a queued item, cost their bytes
plus ENTRY_COST — and a write past it is refused (`Status.INTERNAL_FAILURE`, the status the SDKs
report as a generic failure) instead of growing the host without end. Overwriting or deleting a
value refunds its writer; a dequeued item refunds its producer. The number of queues and metrics is
capped process-wide (MAX_QUEUES, MAX_METRICS), as each costs the host memory a guest chose.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from abi.codes import Status

QueueListener = Callable[[int], None]  # called with the queue id after each enqueue
ENTRY_COST = 96  # host bytes of one item (tuple, bytes objects, dict or deque slot) beyond its own bytes
MAX_QUEUES = 4096  # shared queues in the process (a name registered twice is one queue)
MAX_METRICS = 8192  # metric definitions in the process
MAX_METRIC_NAME = 1024  # bytes of one metric name


class _Ledger:
    """Bytes held per owner (function id); the caller holds the lock of the structure it guards."""

    def __init__(self) -> None:
        self.held: collections.Counter[str] = collections.Counter()

    def fits(self, owner: str, added: int, limit: int | None) -> bool:
        return limit is None or added <= 0 or self.held[owner] + added <= limit

    def charge(self, owner: str, amount: int) -> None:
        self.held[owner] += amount
        if self.held[owner] <= 0:
            del self.held[owner]


class SharedData:
    """Key -> (value, cas). A set with cas 0 is unconditional; otherwise it must match the current cas.

    `owner` and `limit`: the writing function and its memory limit (None: not counted against one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[bytes, tuple[bytes, int, str]] = {}
        self._next_cas = 1
        self._ledger = _Ledger()

    def get(self, key: bytes) -> tuple[bytes, int] | None:
        with self._lock:
            item = self._items.get(key)
            return None if item is None else (item[0], item[1])

    def set(self, key: bytes, value: bytes, cas: int, owner: str = "", limit: int | None = None) -> Status:
        cost = len(key) + len(value) + ENTRY_COST
        with self._lock:
            current = self._items.get(key)
            if cas and (current is None or current[1] != cas):
                return Status.CAS_MISMATCH
            refund = len(key) + len(current[0]) + ENTRY_COST if current is not None else 0
            own_refund = refund if current is not None and current[2] == owner else 0
            if not self._ledger.fits(owner, cost - own_refund, limit):
                return Status.INTERNAL_FAILURE
            if current is not None:
                self._ledger.charge(current[2], -refund)
            self._ledger.charge(owner, cost)
            self._next_cas += 1
            self._items[key] = (value, self._next_cas, owner)
            return Status.OK

    def held_by(self, owner: str) -> int:
        """Bytes `owner` holds in shared data (its keys, values and ENTRY_COST each)."""
        with self._lock:
            return self._ledger.held[owner]

    def snapshot(self) -> dict[bytes, bytes]:
        with self._lock:
            return {k: v for k, (v, _, _) in self._items.items()}


@dataclass
class _Queue:
    vm_id: str
    name: str
    items: collections.deque[tuple[bytes, str]] = field(default_factory=collections.deque)  # (data, producer)
    listener: QueueListener | None = None
    listener_owner: str = ""


class SharedQueues:
    """Named queues; the registering root context is told (`proxy_on_queue_ready`) about new items."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[int, _Queue] = {}
        self._by_name: dict[tuple[str, str], int] = {}
        self._ledger = _Ledger()

    def register(self, vm_id: str, name: str, listener: QueueListener | None, owner: str = "") -> int | None:
        """The queue's id (a new queue past MAX_QUEUES: None)."""
        with self._lock:
            queue_id = self._by_name.get((vm_id, name))
            if queue_id is None:
                if len(self._queues) >= MAX_QUEUES:
                    return None
                queue_id = len(self._queues) + 1
                self._queues[queue_id] = _Queue(vm_id, name)
                self._by_name[(vm_id, name)] = queue_id
            queue = self._queues[queue_id]
            queue.listener, queue.listener_owner = listener, owner  # the latest registrant receives the callbacks
            return queue_id

    def drop_listeners(self, owner: str) -> int:
        """Forget the callbacks `owner`'s instances registered (its function was removed: they hold its
        instances alive). Its queues and their items stay for other consumers. Returns how many."""
        with self._lock:
            dropped = [q for q in self._queues.values() if q.listener is not None and q.listener_owner == owner]
            for queue in dropped:
                queue.listener = None
            return len(dropped)

    def resolve(self, vm_id: str, name: str) -> int | None:
        with self._lock:
            return self._by_name.get((vm_id, name))

    def enqueue(self, queue_id: int, data: bytes, owner: str = "", limit: int | None = None) -> Status:
        cost = len(data) + ENTRY_COST
        with self._lock:
            queue = self._queues.get(queue_id)
            if queue is None:
                return Status.NOT_FOUND
            if not self._ledger.fits(owner, cost, limit):
                return Status.INTERNAL_FAILURE
            self._ledger.charge(owner, cost)
            queue.items.append((data, owner))
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
            data, producer = queue.items.popleft()
            self._ledger.charge(producer, -(len(data) + ENTRY_COST))
            return Status.OK, data

    def held_by(self, owner: str) -> int:
        """Bytes of the items `owner` enqueued that are still queued."""
        with self._lock:
            return self._ledger.held[owner]


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
        """The metric's id; None for an unknown kind, a name over MAX_METRIC_NAME bytes, or a new
        metric past MAX_METRICS."""
        if kind not in (MetricType.COUNTER, MetricType.GAUGE, MetricType.HISTOGRAM) or len(name) > MAX_METRIC_NAME:
            return None
        with self._lock:
            metric_id = self._by_key.get((name, kind))
            if metric_id is None:
                if len(self._metrics) >= MAX_METRICS:
                    return None
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

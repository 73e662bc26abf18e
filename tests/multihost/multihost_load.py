"""Orders sent round-robin to several hosts from client threads, the way a load balancer with
health checks would: a host that refuses connections is taken out of the rotation, a `503 lock
busy` is retried on the next host, and a request whose connection breaks after it was sent is
recorded as an unknown outcome (it may or may not have placed its order) and not retried.

http.client rather than urllib: no proxy from the environment, and a refused connect (nothing was
sent) is told apart from a connection that broke mid-request."""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field

PORT = 2045


@dataclass(frozen=True)
class Outcome:
    index: int
    host: str  # the host that answered, or the one that was asked when the outcome is unknown
    status: int  # 0: unknown (the connection broke after the request was sent)
    body: bytes
    at: float  # monotonic time of the answer


@dataclass
class OrderLoad:
    """`total` orders over `addresses` (host name -> IPv4), `clients` at a time."""

    addresses: dict[str, str]
    total: int
    clients: int
    deadline_s: float
    outcomes: list[Outcome] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)  # hosts taken out of the rotation
    busy_retries: int = 0
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self._deadline = time.monotonic() + self.deadline_s
        self._threads = [threading.Thread(target=self._client, name=f"orders-client-{n}", daemon=True)
                         for n in range(self.clients)]
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        for thread in self._threads:
            thread.join(max(0.0, self._deadline - time.monotonic()) + 15)

    def answered(self, status: int = 200) -> list[Outcome]:
        with self._lock:
            return [outcome for outcome in self.outcomes if outcome.status == status]

    def _take(self) -> int | None:
        with self._lock:
            if self._next >= self.total:
                return None
            self._next += 1
            return self._next - 1

    def _client(self) -> None:
        while (index := self._take()) is not None:
            outcome = self._order(index)
            with self._lock:
                self.outcomes.append(outcome)

    def _order(self, index: int) -> Outcome:
        names = list(self.addresses)
        attempt = 0
        while time.monotonic() < self._deadline:
            name = names[(index + attempt) % len(names)]
            attempt += 1
            if name in self.refused:
                if self.refused.issuperset(names):
                    break
                continue
            connection = http.client.HTTPConnection(self.addresses[name], PORT, timeout=15)
            try:
                try:
                    connection.connect()
                except OSError:
                    with self._lock:
                        self.refused.add(name)
                    continue
                try:
                    connection.request("POST", "/", body=f"item-{index}".encode(), headers={"id": "orders"})
                    response = connection.getresponse()
                    body = response.read()
                except (OSError, http.client.HTTPException):
                    return Outcome(index, name, 0, b"", time.monotonic())
            finally:
                connection.close()
            if response.status == 503:
                with self._lock:
                    self.busy_retries += 1
                time.sleep(0.02)
                continue
            return Outcome(index, name, response.status, body, time.monotonic())
        return Outcome(index, "", -1, b"no host answered in time", time.monotonic())

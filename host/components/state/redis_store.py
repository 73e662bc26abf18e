"""Redis state store: redis-py connections, a bounded pool of them, socket timeouts.

Commands go straight through redis-py's `Connection` (send_command/read_response). Its client
and pool layers (retry policy, observability recording, argument deprecation checks) cost about
as much CPU as the round trip to a local Redis, and a guest thread holds the GIL for all of it.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Optional

import redis

from ...config import RedisStoreConfig
from .base import ComponentError


class _ConnectionPool:
    """At most `size` connections; a caller waits up to `wait_s` for one. Most recently used first,
    so a quiet period leaves the rarely used ones idle rather than every one half-warm. The common
    paths take one C-level lock (threading's semaphores are Python code on every call)."""

    def __init__(self, make: Any, size: int, wait_s: float):
        self._make = make
        self._size = size
        self._wait_s = wait_s
        self._idle: list[redis.Connection] = []
        self._open = 0  # connections handed out or idle
        self._waiting = 0
        self._lock = threading.Lock()  # taken directly on the common paths: Condition's `with` is Python code
        self._freed = threading.Condition(self._lock)

    def acquire(self) -> Optional[redis.Connection]:
        """A connection (connected lazily by its first command), or None after waiting in vain."""
        with self._lock:
            if not self._idle and self._open >= self._size:
                deadline = time.monotonic() + self._wait_s
                self._waiting += 1
                try:
                    while not self._idle and self._open >= self._size:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0 or not self._freed.wait(remaining):
                            if not self._idle and self._open >= self._size:
                                return None
                finally:
                    self._waiting -= 1
            if self._idle:
                return self._idle.pop()
            self._open += 1
        try:
            return self._make()
        except BaseException:
            self._forget_one()
            raise

    def release(self, connection: redis.Connection) -> None:
        with self._lock:
            self._idle.append(connection)
            if self._waiting:
                self._freed.notify()

    def discard(self, connection: redis.Connection) -> None:
        connection.disconnect()
        self._forget_one()

    def _forget_one(self) -> None:
        with self._lock:
            self._open -= 1
            if self._waiting:
                self._freed.notify()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            self._open -= len(idle)
        for connection in idle:
            connection.disconnect()


class RedisStateStore:
    kind = "redis"

    def __init__(self, config: RedisStoreConfig):
        host, _, port = config.address.rpartition(":")
        timeout = config.timeout_ms / 1000
        self.address = config.address
        options = dict(host=host, port=int(port), password=config.password or None, db=config.db,
                       socket_timeout=timeout, socket_connect_timeout=timeout)
        self._pool = _ConnectionPool(lambda: redis.Connection(**options), config.pool_size, timeout)

    def _command(self, *args: str) -> Any:
        """One command; a connection the server dropped since its last use (a restart, an idle
        timeout) is replaced and the command sent once more. Timeouts are not retried."""
        for attempt in (1, 2):
            connection = self._pool.acquire()
            if connection is None:
                raise ComponentError(f"redis {self.address}: every pooled connection is busy")
            try:
                connection.send_command(*args)
                reply = connection.read_response()
            except redis.TimeoutError as error:
                self._pool.discard(connection)
                raise ComponentError(f"redis {self.address}: {error}") from None
            except redis.ConnectionError as error:
                self._pool.discard(connection)
                if attempt == 1:
                    continue
                raise ComponentError(f"redis {self.address}: {error}") from None
            except redis.RedisError as error:  # an error reply: the connection is still good
                self._pool.release(connection)
                raise ComponentError(f"redis {self.address}: {error}") from None
            except BaseException:
                self._pool.discard(connection)  # state unknown (interrupted mid-reply)
                raise
            self._pool.release(connection)
            return reply
        raise AssertionError("unreachable")

    def get(self, key: str) -> Optional[bytes]:
        return self._command("GET", key)

    def health(self) -> tuple[bool, str]:
        try:
            self._command("PING")
            return True, f"redis {self.address}"
        except ComponentError as error:
            return False, str(error)

    def close(self) -> None:
        self._pool.close()

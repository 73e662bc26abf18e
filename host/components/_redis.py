"""The Redis connection every redis backend uses: redis-py connections, a bounded pool of them,
socket timeouts, commands, pipelines and Lua scripts.

Commands go straight through redis-py's `Connection` (send_command/read_response). Its client
and pool layers (retry policy, observability recording, argument deprecation checks) cost about
as much CPU as the round trip to a local Redis, and a guest thread holds the GIL for all of it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from host.components.base import BackendConfig
from host.components.errors import ComponentError
from host.lazy import lazy_module
from host.loop_budget import InlineBusy, LoopBudgetExceeded, inline_remaining

if TYPE_CHECKING:
    import redis
else:
    redis = lazy_module("redis")  # redis-py is imported when a Redis component is first used (start-up time)

Arg = str | bytes | int | float


def check_address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return value


class RedisSettings(BackendConfig):
    """The connection fields every redis backend's Config inherits."""

    address: str = "127.0.0.1:6379"
    password: str = ""
    db: int = Field(0, ge=0)
    timeout_ms: int = Field(1000, gt=0)
    pool_size: int = Field(32, gt=0)

    _check_address = field_validator("address")(check_address)


def settings_from_layotto(metadata: dict[str, str]) -> dict[str, Any]:
    """Layotto's / Dapr's redis metadata keys (`redisHost`, `redisPassword`, `redisDB`/`db`,
    `dialTimeout`/`readTimeout`, `poolSize`) as RedisSettings fields."""
    fields: dict[str, Any] = {}
    if "redisHost" in metadata:
        fields["address"] = metadata["redisHost"]
    if metadata.get("redisPassword"):
        fields["password"] = metadata["redisPassword"]
    db = metadata.get("redisDB", metadata.get("db"))
    if db not in (None, ""):
        fields["db"] = int(db)
    if metadata.get("poolSize"):
        fields["pool_size"] = int(metadata["poolSize"])
    timeout = metadata.get("readTimeout") or metadata.get("dialTimeout")
    if timeout:
        fields["timeout_ms"] = parse_duration_ms(timeout)
    return fields


def parse_duration_ms(value: str | int) -> int:
    """Dapr durations: a bare number is milliseconds (its legacy rule), else `500ms`, `2s`, `1m`, `1h`."""
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    for suffix, scale in (("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)):
        number = text.removesuffix(suffix)
        if number != text:
            try:
                return int(float(number) * scale)
            except ValueError:
                break
    raise ValueError(f"expected a duration such as 500ms, 2s or a number of milliseconds, got {value!r}")


class _ConnectionPool:
    """At most `size` connections; a caller waits up to `wait_s` for one. Most recently used first,
    so a quiet period leaves the rarely used ones idle rather than every one half-warm. The common
    paths take one C-level lock (threading's semaphores are Python code on every call)."""

    def __init__(self, make: Callable[[], redis.Connection], size: int, wait_s: float):
        self._make = make
        self._size = size
        self._wait_s = wait_s
        self._idle: list[redis.Connection] = []
        self._open = 0  # connections handed out or idle
        self._waiting = 0
        self._lock = threading.Lock()  # taken directly on the common paths: Condition's `with` is Python code
        self._freed = threading.Condition(self._lock)

    def acquire(self) -> redis.Connection | None:
        """A connection (connected lazily by its first command), or None after waiting in vain."""
        with self._lock:
            if not self._idle and self._open >= self._size:
                deadline = time.monotonic() + self._wait_s
                self._waiting += 1
                try:
                    while not self._idle and self._open >= self._size:
                        remaining = deadline - time.monotonic()
                        if (remaining <= 0 or not self._freed.wait(remaining)) and \
                                not self._idle and self._open >= self._size:
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

    def take_idle(self) -> redis.Connection | None:
        """An idle connection without waiting or connecting, or None."""
        with self._lock:
            return self._idle.pop() if self._idle else None

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


class Script:
    """A Lua script sent by its SHA (EVALSHA), loaded on the first NOSCRIPT."""

    def __init__(self, source: str):
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class RedisClient:
    """Thread-safe commands over the pool. Every failure is a ComponentError naming the server."""

    def __init__(self, settings: RedisSettings):
        host, _, port = settings.address.rpartition(":")
        timeout = settings.timeout_ms / 1000
        self.address = settings.address
        options: dict[str, Any] = dict(host=host, port=int(port), password=settings.password or None,
                                       db=settings.db, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.connection_options = options
        self._pool = _ConnectionPool(lambda: redis.Connection(**options), settings.pool_size, timeout)

    def _run(self, exchange: Callable[[redis.Connection], Any]) -> Any:
        """Run one exchange on a pooled connection; a connection the server dropped since its last
        use (a restart, an idle timeout) is replaced and the exchange tried once more. Timeouts are
        not retried. On the event loop (an inline run, host/loop_budget.py) see `_run_inline`."""
        remaining = inline_remaining()
        if remaining is not None:
            return self._run_inline(exchange, remaining)
        for attempt in (1, 2):
            connection = self._pool.acquire()
            if connection is None:
                raise ComponentError(f"redis {self.address}: every pooled connection is busy")
            try:
                reply = exchange(connection)
            except redis.TimeoutError as error:
                self._pool.discard(connection)
                raise ComponentError(f"redis {self.address}: {error}") from None
            except redis.ConnectionError as error:
                self._pool.discard(connection)
                if attempt == 1:
                    continue
                raise ComponentError(f"redis {self.address}: {error}") from None
            except redis.ResponseError:  # an error reply: the connection is still good
                self._pool.release(connection)
                raise
            except redis.RedisError as error:
                self._pool.release(connection)
                raise ComponentError(f"redis {self.address}: {error}") from None
            except BaseException:
                self._pool.discard(connection)  # state unknown (interrupted mid-reply)
                raise
            self._pool.release(connection)
            return reply
        raise AssertionError("unreachable")

    def _run_inline(self, exchange: Callable[[redis.Connection], Any], remaining: float) -> Any:
        """The exchange on the event loop: on an idle, connected connection only, waiting at most
        `remaining` seconds. What would wait longer (no such connection, a slow or dropped server)
        raises LoopBudgetExceeded, and the request is replayed in a guest thread."""
        connection = self._pool.take_idle()
        if connection is None:
            raise InlineBusy(f"redis {self.address}: no idle connection")
        sock = getattr(connection, "_sock", None)  # redis-py's socket (None until connected)
        if sock is None:  # never connected, or dropped: connecting may take the connect timeout
            self._pool.release(connection)
            raise InlineBusy(f"redis {self.address}: no connected idle connection")
        sock.settimeout(remaining)
        try:
            reply = exchange(connection)
        except redis.ResponseError:  # an error reply: the connection is still good
            self._release_inline(connection, sock)
            raise
        except (redis.TimeoutError, redis.ConnectionError) as error:
            self._pool.discard(connection)
            raise LoopBudgetExceeded(f"redis {self.address}: {error}") from None
        except redis.RedisError as error:
            self._release_inline(connection, sock)
            raise ComponentError(f"redis {self.address}: {error}") from None
        except BaseException:
            self._pool.discard(connection)
            raise
        self._release_inline(connection, sock)
        return reply

    def _release_inline(self, connection: redis.Connection, sock: Any) -> None:
        """Back to the pool with its configured timeout (threads wait as long as that)."""
        sock.settimeout(connection.socket_timeout)
        self._pool.release(connection)

    def command(self, *args: Arg) -> Any:
        """One command. An error reply raises ComponentError (use `command_raw` to see it)."""
        try:
            return self.command_raw(*args)
        except redis.ResponseError as error:
            raise ComponentError(f"redis {self.address}: {error}") from None

    def command_raw(self, *args: Arg) -> Any:
        """One command; an error reply raises redis.ResponseError so callers can tell replies apart."""

        def exchange(connection: redis.Connection) -> Any:
            connection.send_command(*args)
            return connection.read_response()

        return self._run(exchange)

    def run_script(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """EVALSHA, falling back to loading the script once; an error the script raised comes back
        as redis.ResponseError (its message is the script's)."""
        try:
            return self.command_raw("EVALSHA", script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            pass
        return self.command_raw("EVAL", script.source, len(keys), *keys, *args)

    def transaction(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """MULTI, the commands, EXEC on one connection. Returns EXEC's replies; an error reply of a
        queued command is returned in its place as a redis.ResponseError instance (Redis does
        not roll back the others)."""

        def exchange(connection: redis.Connection) -> Any:
            connection.send_packed_command(connection.pack_commands(
                [("MULTI",), *[tuple(c) for c in commands], ("EXEC",)]))
            connection.read_response()  # OK for MULTI
            queue_errors: list[redis.ResponseError | None] = []
            for _ in commands:
                try:
                    connection.read_response()  # QUEUED
                    queue_errors.append(None)
                except redis.ResponseError as error:
                    queue_errors.append(error)
            try:
                replies = connection.read_response(disable_decoding=False)
            except redis.ResponseError as error:  # EXECABORT: a command was refused when queued
                raise ComponentError(f"redis {self.address}: transaction aborted: "
                                     f"{next((e for e in queue_errors if e), error)}") from None
            return list(replies) if replies is not None else []

        return self._run(exchange)

    def dedicated_connection(self) -> redis.Connection:
        """A connection outside the pool, for blocking reads (XREADGROUP BLOCK, SUBSCRIBE);
        the caller disconnects it."""
        return redis.Connection(**self.connection_options)

    def health(self) -> tuple[bool, str]:
        try:
            self.command("PING")
            return True, f"redis {self.address}"
        except ComponentError as error:
            return False, str(error)

    def close(self) -> None:
        self._pool.close()

"""PostgreSQL state: one row per key in a table this store creates, for state that must survive
Redis restarts and for transactions that really are all-or-nothing.

Row: key (primary key), value (bytea), version (the ETag), first_write (set once written with
first-write concurrency) and expires_at (TTL; an expired row is invisible, and deleted lazily by a
later write or the periodic cleanup). A set is one `INSERT ... ON CONFLICT DO UPDATE ... WHERE
<ETag rule>` statement, so concurrent writers are serialised by the row lock and the rule is judged
on the latest version. Transactions run in one SQL transaction; an ETag mismatch rolls it back.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import Field, field_validator

from host.components._redis import parse_duration_ms
from host.components.base import ComponentContext
from host.components.errors import ComponentError, EtagMismatch
from host.components.state._checks import check_key, checked, expected_version, mismatch, raise_collected
from host.components.state.base import BulkValue, DeleteItem, Operation, StateConfig, StateItem, StateValue
from host.lazy import lazy_module
from host.loop_budget import refuse_inline

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool
    from psycopg import conninfo as pg_conninfo
    from psycopg import sql
else:  # psycopg is imported when a PostgreSQL store is first configured or used (start-up time)
    psycopg = lazy_module("psycopg")
    psycopg_pool = lazy_module("psycopg_pool")
    pg_conninfo = lazy_module("psycopg.conninfo")
    sql = lazy_module("psycopg.sql")

T = TypeVar("T")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_HEALTH_TIMEOUT_S = 1.0


class Config(StateConfig):
    type: Literal["postgresql", "postgres"]
    connection_string: str = "host=127.0.0.1 port=5432 dbname=test user=postgres"  # libpq DSN or URL
    table: str = "state"  # `name` or `schema.name`; created if missing
    timeout_ms: int = Field(default=5000, gt=0)  # waiting for a pooled connection, connecting, each statement
    pool_size: int = Field(default=16, gt=0)
    cleanup_interval_s: int = 3600  # expired rows are deleted this often (by a write); <= 0: never in bulk

    @field_validator("table")
    @classmethod
    def _identifier(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) > 2 or not all(_IDENTIFIER.fullmatch(part) for part in parts):
            raise ValueError("expected a table name (letters, digits, _; optionally schema.name)")
        return value

    @field_validator("connection_string")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            pg_conninfo.conninfo_to_dict(value)
        except psycopg.ProgrammingError as error:
            raise ValueError(f"not a libpq connection string or URL: {error}") from None
        return value


def from_layotto(metadata: dict[str, str]) -> dict[str, Any]:
    """Dapr's postgresql metadata: `connectionString`, `tableName`, `keyPrefix`, `timeout` (a
    duration) or `timeoutInSeconds`, `maxConns`, `cleanupInterval` or `cleanupIntervalInSeconds`."""
    fields: dict[str, Any] = {}
    for key, field in (("connectionString", "connection_string"), ("tableName", "table"),
                       ("keyPrefix", "key_prefix")):
        if metadata.get(key):
            fields[field] = metadata[key]
    if metadata.get("timeout"):
        fields["timeout_ms"] = parse_duration_ms(metadata["timeout"])
    elif metadata.get("timeoutInSeconds"):
        fields["timeout_ms"] = int(metadata["timeoutInSeconds"]) * 1000
    if metadata.get("maxConns"):
        fields["pool_size"] = int(metadata["maxConns"])
    if metadata.get("cleanupInterval"):
        fields["cleanup_interval_s"] = parse_duration_ms(metadata["cleanupInterval"]) // 1000
    elif metadata.get("cleanupIntervalInSeconds"):
        fields["cleanup_interval_s"] = int(metadata["cleanupIntervalInSeconds"])
    return fields


def _one_line(error: BaseException) -> str:
    """libpq's messages span lines (a hint after a tab); logs and gRPC details read better flat."""
    return " ".join(str(error).split()) or type(error).__name__


class _ConnectOutcome:
    """The last connection attempt's failure, so a pool timeout can say why (psycopg_pool only logs it)."""

    def __init__(self) -> None:
        self.error: str | None = None


class _Dropped(Exception):
    """The connection broke under a statement (the server restarted or went away)."""


def _tracked_connection(outcome: _ConnectOutcome) -> type[psycopg.Connection[Any]]:
    """A connection class that records in `outcome` how its last connection attempt went (one per
    Backend; made here, not at import, as psycopg is imported only once a store is built)."""

    class TrackedConnection(psycopg.Connection[Any]):
        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
            try:
                connection = super().connect(conninfo, **kwargs)
            except psycopg.Error as error:
                outcome.error = _one_line(error)
                raise
            outcome.error = None
            return connection

    return TrackedConnection


class _Queries:
    """Every statement, rendered once for the configured table."""

    def __init__(self, table: str):
        parts = table.split(".")
        name = sql.Identifier(*parts)
        index = sql.Identifier(f"{parts[-1][:48]}_expires_at")
        live = "(expires_at IS NULL OR expires_at > now())"
        expired = "coalesce(s.expires_at <= now(), false)"

        def render(text: str) -> str:
            return sql.SQL(text).format(table=name, index=index).as_string()

        self.create = [render("""CREATE TABLE IF NOT EXISTS {table} (
            key text PRIMARY KEY, value bytea NOT NULL, version bigint NOT NULL,
            first_write boolean NOT NULL DEFAULT false, expires_at timestamptz)"""),
                       render("CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at) "
                              "WHERE expires_at IS NOT NULL")]
        self.get = render(f"SELECT value, version FROM {{table}} WHERE key = %s AND {live}")
        self.bulk_get = render(f"SELECT key, value, version FROM {{table}} WHERE key = ANY(%s) AND {live}")
        self.exists = render(f"SELECT 1 FROM {{table}} WHERE key = %s AND {live}")
        # Dapr's Redis rule: written when absent (or expired), matching, or without an ETag on a
        # key never written with first-write. An expired row counts as absent: version restarts.
        self.set = render(f"""INSERT INTO {{table}} AS s (key, value, version, first_write, expires_at)
            VALUES (%(key)s, %(value)s, 1, %(first_write)s,
                    CASE WHEN %(ttl)s::integer > 0 THEN now() + make_interval(secs => %(ttl)s::integer) END)
            ON CONFLICT (key) DO UPDATE SET
                value = excluded.value,
                version = CASE WHEN {expired} THEN 1 ELSE s.version + 1 END,
                first_write = excluded.first_write OR (s.first_write AND NOT {expired}),
                expires_at = CASE WHEN %(ttl)s::integer IS NOT NULL THEN excluded.expires_at
                                  WHEN {expired} THEN NULL ELSE s.expires_at END
            WHERE {expired} OR s.version = %(expected)s::bigint
                OR (%(expected)s::bigint = 0 AND NOT s.first_write)
            RETURNING version""")
        self.delete = render("""DELETE FROM {table} WHERE key = %(key)s AND (%(expected)s::bigint = 0
            OR version = %(expected)s::bigint OR coalesce(expires_at <= now(), false))""")
        self.cleanup = render("DELETE FROM {table} WHERE expires_at <= now()")


class Backend:
    """StateStore on a PostgreSQL table, over a psycopg_pool pool; the table is created on first use."""

    def __init__(self, config: Config, context: ComponentContext):
        self._timeout_s = config.timeout_ms / 1000
        self._cleanup_interval_s = config.cleanup_interval_s
        self._next_cleanup = time.monotonic() + max(config.cleanup_interval_s, 0)
        info = pg_conninfo.conninfo_to_dict(config.connection_string)
        self.where = f"postgresql {info.get('host', 'localhost')}:{info.get('port', 5432)}" \
                     f"/{info.get('dbname', '')} table {config.table}"
        self._queries = _Queries(config.table)
        self._ready = False
        self._ready_lock = threading.Lock()
        self._outcome = _ConnectOutcome()
        self._pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            config.connection_string, connection_class=_tracked_connection(self._outcome), min_size=0,
            max_size=config.pool_size,
            timeout=self._timeout_s, reconnect_timeout=max(2 * self._timeout_s, 1.0), configure=self._configure,
            kwargs={"autocommit": True, "connect_timeout": max(1, round(self._timeout_s))},
            name=context.name, open=True)

    def _configure(self, connection: psycopg.Connection[Any]) -> None:
        connection.execute(f"SET statement_timeout = {int(self._timeout_s * 1000)}")

    def _unavailable(self) -> ComponentError:
        if self._outcome.error:
            return ComponentError(f"{self.where}: cannot connect: {self._outcome.error}")
        return ComponentError(f"{self.where}: no pooled connection free within {self._timeout_s:g} s")

    def _run(self, work: Callable[[psycopg.Connection[Any]], T], timeout_s: float | None = None) -> T:
        """`work` on a pooled connection, every failure a ComponentError. A connection the server
        dropped (a restart) fails once; the idle ones are then checked and the work tried again."""
        refuse_inline(self.where)  # psycopg's waits cannot be bounded per call
        try:
            return self._attempt(work, timeout_s)
        except _Dropped:
            self._pool.check()
        try:
            return self._attempt(work, timeout_s)
        except _Dropped as dropped:
            raise ComponentError(f"{self.where}: {dropped}") from None

    def _attempt(self, work: Callable[[psycopg.Connection[Any]], T], timeout_s: float | None) -> T:
        try:
            with self._pool.connection(timeout=timeout_s) as connection:
                try:
                    if not self._ready:
                        self._prepare(connection)
                    return work(connection)
                except psycopg.OperationalError as error:
                    if connection.broken:
                        raise _Dropped(_one_line(error)) from None
                    raise
        except psycopg_pool.PoolTimeout:
            raise self._unavailable() from None
        except psycopg.Error as error:
            raise ComponentError(f"{self.where}: {_one_line(error)}") from None

    def _prepare(self, connection: psycopg.Connection[Any]) -> None:
        with self._ready_lock:
            if self._ready:
                return
            for statement in self._queries.create:
                try:
                    connection.execute(statement)
                except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable,
                        psycopg.errors.DuplicateObject):
                    pass  # another process created it at the same moment
            self._ready = True

    def _cleanup_due(self) -> bool:
        now = time.monotonic()
        if self._cleanup_interval_s <= 0 or now < self._next_cleanup:
            return False
        self._next_cleanup = now + self._cleanup_interval_s
        return True

    def _set(self, connection: psycopg.Connection[Any], item: StateItem, expected: int) -> str:
        row = connection.execute(self._queries.set, {
            "key": item.key, "value": item.value, "first_write": item.concurrency == "first-write",
            "ttl": item.ttl_s, "expected": expected}).fetchone()
        if row is None:
            raise mismatch(item.key, item.etag)
        return str(row[0])

    def _delete(self, connection: psycopg.Connection[Any], item: DeleteItem, expected: int) -> None:
        deleted = connection.execute(self._queries.delete, {"key": item.key, "expected": expected}).rowcount
        # Nothing deleted with an ETag: a mismatch, unless the key is missing (which succeeds).
        if not deleted and expected and connection.execute(self._queries.exists, (item.key,)).fetchone():
            raise mismatch(item.key, item.etag)

    def get(self, key: str) -> StateValue | None:
        check_key(key)
        row = self._run(lambda connection: connection.execute(self._queries.get, (key,)).fetchone())
        return StateValue(bytes(row[0]), str(row[1])) if row is not None else None

    def bulk_get(self, keys: Sequence[str]) -> list[BulkValue]:
        for key in keys:
            check_key(key)
        if not keys:
            return []
        rows = self._run(lambda connection: connection.execute(self._queries.bulk_get, (list(keys),)).fetchall())
        found = {row[0]: (bytes(row[1]), str(row[2])) for row in rows}
        return [BulkValue(key, *found[key]) if key in found else BulkValue(key, None, None) for key in keys]

    def set(self, item: StateItem) -> str:
        check_key(item.key)
        expected = expected_version(item.etag)

        def work(connection: psycopg.Connection[Any]) -> str:
            etag = self._set(connection, item, expected)
            if self._cleanup_due():
                connection.execute(self._queries.cleanup)
            return etag

        return self._run(work)

    def delete(self, item: DeleteItem) -> None:
        check_key(item.key)
        expected = expected_version(item.etag)
        self._run(lambda connection: self._delete(connection, item, expected))

    def bulk_set(self, items: Sequence[StateItem]) -> None:
        work = checked(items)

        def run(connection: psycopg.Connection[Any]) -> list[ComponentError]:
            failures: list[ComponentError] = []
            for item, expected in work:  # each in its own implicit transaction: not atomic, as Dapr's
                try:
                    self._set(connection, item, expected)
                except ComponentError as error:
                    failures.append(error)
            return failures

        raise_collected("bulk set", self._run(run))

    def bulk_delete(self, items: Sequence[DeleteItem]) -> None:
        work = checked(items)

        def run(connection: psycopg.Connection[Any]) -> list[ComponentError]:
            failures: list[ComponentError] = []
            for item, expected in work:
                try:
                    self._delete(connection, item, expected)
                except ComponentError as error:
                    failures.append(error)
            return failures

        raise_collected("bulk delete", self._run(run))

    def transact(self, operations: Sequence[Operation]) -> None:
        work = checked([operation.item for operation in operations])
        if not work:
            return

        def run(connection: psycopg.Connection[Any]) -> None:
            with connection.transaction():  # an exception inside (an ETag mismatch) rolls back
                for item, expected in work:
                    if isinstance(item, StateItem):
                        self._set(connection, item, expected)
                    else:
                        self._delete(connection, item, expected)

        try:
            self._run(run)
        except EtagMismatch as error:
            raise EtagMismatch(f"transaction rolled back: {error}") from None

    def health(self) -> tuple[bool, str]:
        try:
            self._run(lambda connection: connection.execute("SELECT 1").fetchone(),
                      min(_HEALTH_TIMEOUT_S, self._timeout_s))
            return True, self.where
        except ComponentError as error:
            return False, str(error)
        except Exception as error:  # health must never raise
            return False, f"{self.where}: {error}"

    def close(self) -> None:
        self._pool.close()

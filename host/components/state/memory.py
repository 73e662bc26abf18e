"""The embedded state store: a dict behind one lock, for development, tests and single-process hosts.
It keeps the same ETag, first-write and TTL rules as the redis and postgresql stores, and its
transactions are real (every check first, then every write, or nothing)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from host.components.base import ComponentContext, key_prefix_from_layotto
from host.components.errors import ComponentError, EtagMismatch
from host.components.state._checks import check_key, checked, expected_version, mismatch, raise_collected
from host.components.state.base import BulkValue, DeleteItem, Operation, StateConfig, StateItem, StateValue, Upsert
from host.components.state.prefix import key_prefix

_SWEEP_INTERVAL_S = 60.0  # expired entries are dropped when read, and all of them this often


class Config(StateConfig):
    type: Literal["memory", "in-memory"]
    seed: dict[str, str] = {}  # key -> value (UTF-8), version "1"; keys are prefixed as callers' are


def from_layotto(metadata: dict[str, str]) -> dict[str, Any]:
    return key_prefix_from_layotto(metadata)


@dataclass(slots=True)
class _Entry:
    value: bytes
    version: int
    first_write: bool
    expires_at: float | None  # time.monotonic() deadline


class Backend:
    """StateStore in a dict; seeds are stored under the configured key prefix."""

    def __init__(self, config: Config, context: ComponentContext):
        self._lock = threading.Lock()
        prefix = key_prefix(config.key_prefix, context)
        self._data: dict[str, _Entry] = {
            prefix + key: _Entry(value.encode(), 1, False, None) for key, value in config.seed.items()}
        self._next_sweep = time.monotonic() + _SWEEP_INTERVAL_S

    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._data.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= now:
            del self._data[key]
            return None
        return entry

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_INTERVAL_S
        for key in [k for k, e in self._data.items() if e.expires_at is not None and e.expires_at <= now]:
            del self._data[key]

    @staticmethod
    def _written(current: _Entry | None, item: StateItem, expected: int, now: float) -> _Entry:
        """The entry `item` leaves, or EtagMismatch (Dapr's Redis rule: absent, matching, or no
        ETag on a key never written with first-write)."""
        if current is not None and current.version != expected and (expected or current.first_write):
            raise mismatch(item.key, item.etag)
        first_write = item.concurrency == "first-write" or (current is not None and current.first_write)
        if item.ttl_s is None:
            expires_at = current.expires_at if current is not None else None
        else:
            expires_at = now + item.ttl_s if item.ttl_s > 0 else None
        return _Entry(item.value, (current.version if current else 0) + 1, first_write, expires_at)

    @staticmethod
    def _check_delete(current: _Entry | None, item: DeleteItem, expected: int) -> None:
        if current is not None and expected and current.version != expected:
            raise mismatch(item.key, item.etag)

    def get(self, key: str) -> StateValue | None:
        check_key(key)
        with self._lock:
            entry = self._live(key, time.monotonic())
            return StateValue(entry.value, str(entry.version)) if entry is not None else None

    def bulk_get(self, keys: Sequence[str]) -> list[BulkValue]:
        for key in keys:
            check_key(key)
        results: list[BulkValue] = []
        with self._lock:
            now = time.monotonic()
            for key in keys:
                entry = self._live(key, now)
                results.append(BulkValue(key, entry.value, str(entry.version)) if entry is not None
                               else BulkValue(key, None, None))
        return results

    def set(self, item: StateItem) -> str:
        check_key(item.key)
        expected = expected_version(item.etag)
        with self._lock:
            now = time.monotonic()
            entry = self._written(self._live(item.key, now), item, expected, now)
            self._data[item.key] = entry
            self._sweep(now)
            return str(entry.version)

    def bulk_set(self, items: Sequence[StateItem]) -> None:
        work = checked(items)
        failures: list[ComponentError] = []
        with self._lock:
            now = time.monotonic()
            for item, expected in work:
                try:
                    self._data[item.key] = self._written(self._live(item.key, now), item, expected, now)
                except ComponentError as error:
                    failures.append(error)
        raise_collected("bulk set", failures)

    def delete(self, item: DeleteItem) -> None:
        check_key(item.key)
        expected = expected_version(item.etag)
        with self._lock:
            self._check_delete(self._live(item.key, time.monotonic()), item, expected)
            self._data.pop(item.key, None)

    def bulk_delete(self, items: Sequence[DeleteItem]) -> None:
        work = checked(items)
        failures: list[ComponentError] = []
        with self._lock:
            now = time.monotonic()
            for item, expected in work:
                try:
                    self._check_delete(self._live(item.key, now), item, expected)
                    self._data.pop(item.key, None)
                except ComponentError as error:
                    failures.append(error)
        raise_collected("bulk delete", failures)

    def transact(self, operations: Sequence[Operation]) -> None:
        expectations = [expected for _, expected in checked([operation.item for operation in operations])]
        with self._lock:
            now = time.monotonic()
            # Staged on top of the data, so a later operation on the same key sees an earlier one;
            # committed only once every operation passed its checks.
            staged: dict[str, _Entry | None] = {}
            try:
                for operation, expected in zip(operations, expectations, strict=True):
                    key = operation.item.key
                    current = staged[key] if key in staged else self._live(key, now)
                    if isinstance(operation, Upsert):
                        staged[key] = self._written(current, operation.item, expected, now)
                    else:
                        self._check_delete(current, operation.item, expected)
                        staged[key] = None
            except EtagMismatch as error:
                raise EtagMismatch(f"transaction not applied: {error}") from None
            for key, entry in staged.items():
                if entry is None:
                    self._data.pop(key, None)
                else:
                    self._data[key] = entry

    def health(self) -> tuple[bool, str]:
        return True, "in memory"

    def close(self) -> None:
        pass

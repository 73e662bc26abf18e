"""Locks held in this process (Layotto's `in-memory` lock): for one host, tests and development.
Expiry follows the monotonic clock, so a wall-clock jump neither frees nor extends a lock."""

from __future__ import annotations

import threading
import time
from typing import Any, Literal

from host.components.base import ComponentContext, key_prefix_from_layotto
from host.components.lock.base import LockConfig, UnlockStatus, check_lock_request, lock_key


class Config(LockConfig):
    type: Literal["memory", "in-memory"]


def from_layotto(metadata: dict[str, str]) -> dict[str, Any]:
    return key_prefix_from_layotto(metadata)


class Backend:
    _SWEEP_MIN = 1024  # expired entries are dropped in bulk once the table grows past this

    def __init__(self, config: Config, context: ComponentContext):
        self.config = config
        self.context = context
        self._held: dict[str, tuple[str, float]] = {}  # key -> (owner, monotonic deadline)
        self._lock = threading.Lock()
        self._sweep_at = self._SWEEP_MIN

    def _key(self, resource: str) -> str:
        return lock_key(self.config.key_prefix, self.context, resource)

    def try_lock(self, resource: str, owner: str, expire_s: int) -> bool:
        check_lock_request(resource, owner, expire_s)
        key = self._key(resource)
        now = time.monotonic()
        with self._lock:
            held = self._held.get(key)
            if held is not None and held[1] > now:
                return False
            self._held[key] = (owner, now + expire_s)
            if len(self._held) >= self._sweep_at:
                self._sweep(now)
            return True

    def unlock(self, resource: str, owner: str) -> UnlockStatus:
        check_lock_request(resource, owner)
        key = self._key(resource)
        with self._lock:
            held = self._held.get(key)
            if held is None or held[1] <= time.monotonic():
                self._held.pop(key, None)
                return UnlockStatus.LOCK_DOES_NOT_EXIST
            if held[0] != owner:
                return UnlockStatus.LOCK_BELONGS_TO_OTHERS
            del self._held[key]
            return UnlockStatus.SUCCESS

    def _sweep(self, now: float) -> None:
        """Drop expired locks (caller holds `_lock`); the next sweep waits until the live ones double."""
        self._held = {key: held for key, held in self._held.items() if held[1] > now}
        self._sweep_at = max(self._SWEEP_MIN, 2 * len(self._held))

    def health(self) -> tuple[bool, str]:
        return True, "memory"

    def close(self) -> None:
        with self._lock:
            self._held.clear()

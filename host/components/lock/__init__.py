"""Distributed locks (Layotto's TryLock/Unlock): the interface and the backends by type name."""

from __future__ import annotations

from host.components.lock.base import LockConfig, LockStore, UnlockStatus, lock_key

BACKENDS: dict[str, str] = {
    "memory": "host.components.lock.memory",
    "redis": "host.components.lock.redis",
}

__all__ = ["BACKENDS", "LockConfig", "LockStore", "UnlockStatus", "lock_key"]

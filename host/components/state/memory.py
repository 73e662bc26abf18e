"""The embedded state store: a dict, optionally seeded from config."""

from __future__ import annotations

import threading
from typing import Optional

from ...config import MemoryStoreConfig


class MemoryStateStore:
    kind = "memory"

    def __init__(self, config: MemoryStoreConfig):
        self._lock = threading.Lock()
        self._data: dict[str, bytes] = {k: v.encode() for k, v in config.seed.items()}

    def get(self, key: str) -> Optional[bytes]:
        with self._lock:
            return self._data.get(key)

    def set(self, key: str, value: bytes) -> None:
        with self._lock:
            self._data[key] = value

    def health(self) -> tuple[bool, str]:
        return True, "in memory"

    def close(self) -> None:
        pass

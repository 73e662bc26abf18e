"""Redis state store (redis-py, a bounded blocking connection pool, socket timeouts)."""

from __future__ import annotations

from typing import Optional

import redis

from ...config import RedisStoreConfig
from .base import ComponentError


class RedisStateStore:
    kind = "redis"

    def __init__(self, config: RedisStoreConfig):
        host, _, port = config.address.rpartition(":")
        timeout = config.timeout_ms / 1000
        self.address = config.address
        self._pool = redis.BlockingConnectionPool(
            host=host, port=int(port), password=config.password or None, db=config.db,
            socket_timeout=timeout, socket_connect_timeout=timeout, max_connections=config.pool_size,
            timeout=timeout)
        self._client = redis.Redis(connection_pool=self._pool)

    def get(self, key: str) -> Optional[bytes]:
        try:
            return self._client.get(key)
        except redis.RedisError as error:
            raise ComponentError(f"redis {self.address}: {error}") from None

    def health(self) -> tuple[bool, str]:
        try:
            self._client.ping()
            return True, f"redis {self.address}"
        except redis.RedisError as error:
            return False, f"redis {self.address}: {error}"

    def close(self) -> None:
        self._pool.disconnect()

"""State stores by name. Adding a kind = one module + one line in `_KINDS`."""

from __future__ import annotations

from typing import Callable, Optional

from abi.services import ServiceError

from ...config import MemoryStoreConfig, RedisStoreConfig
from .base import ComponentError, StateStore
from .memory import MemoryStateStore
from .redis_store import RedisStateStore

_KINDS: dict[type, Callable[..., StateStore]] = {
    MemoryStoreConfig: MemoryStateStore,
    RedisStoreConfig: RedisStateStore,
}


class StateService:
    """All configured state stores; implements the ABI's StateReader."""

    def __init__(self, configs: dict):
        self.stores: dict[str, StateStore] = {name: _KINDS[type(cfg)](cfg) for name, cfg in configs.items()}

    def get_state(self, store_name: str, key: str) -> Optional[bytes]:
        store = self.stores.get(store_name)
        if store is None:
            known = ", ".join(sorted(self.stores)) or "none configured"
            raise ServiceError(f"unknown state store {store_name!r} (known: {known})")
        try:
            return store.get(key)
        except ComponentError as error:
            raise ServiceError(str(error)) from None

    def health(self) -> dict[str, tuple[bool, str]]:
        return {name: store.health() for name, store in self.stores.items()}

    def close(self) -> None:
        for store in self.stores.values():
            store.close()


__all__ = ["ComponentError", "StateService", "StateStore"]

"""Key prefixes as Layotto and Dapr apply them (component metadata `keyPrefix`), so several apps or
stores can share one database and the stored keys match what a Layotto/Dapr sidecar would write.

Strategies (names case-insensitive): `none` (Layotto's default: the key as is), `appid`
(`<app id>||key`), `name` (`<component name>||key`), anything else a literal (`<literal>||key`).
Callers' keys may not contain the separator `||`; bulk results come back with the prefix stripped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from host.components.base import ComponentContext
from host.components.errors import InvalidRequest
from host.components.state.base import (
    BulkValue,
    Delete,
    DeleteItem,
    Operation,
    StateItem,
    StateStore,
    StateValue,
    Upsert,
)

SEPARATOR = "||"


def key_prefix(strategy: str, context: ComponentContext) -> str:
    """What the strategy puts in front of every key, separator included ("" for none)."""
    lowered = strategy.strip().lower()
    if lowered in ("", "none"):
        return ""
    if lowered == "appid":
        return f"{context.app_id}{SEPARATOR}" if context.app_id else ""  # Dapr: no app id, no prefix
    if lowered == "name":
        return f"{context.name}{SEPARATOR}"
    if SEPARATOR in strategy:
        raise InvalidRequest(f"key prefix {strategy!r} cannot contain {SEPARATOR!r}")
    return f"{strategy}{SEPARATOR}"


def check_user_key(key: str) -> None:
    if not key:
        raise InvalidRequest("state key is empty")
    if SEPARATOR in key:
        raise InvalidRequest(f"state key {key!r} cannot contain {SEPARATOR!r}")


class PrefixedStore:
    """A StateStore that stores every key under a prefix in the store it wraps (and owns: closing
    it closes that store)."""

    def __init__(self, store: StateStore, strategy: str, context: ComponentContext):
        self.store = store
        self.prefix = key_prefix(strategy, context)

    def _key(self, key: str) -> str:
        check_user_key(key)
        return self.prefix + key

    def _item(self, item: StateItem) -> StateItem:
        check_user_key(item.key)
        return replace(item, key=self.prefix + item.key) if self.prefix else item

    def _delete_item(self, item: DeleteItem) -> DeleteItem:
        check_user_key(item.key)
        return replace(item, key=self.prefix + item.key) if self.prefix else item

    def get(self, key: str) -> StateValue | None:
        return self.store.get(self._key(key))

    def bulk_get(self, keys: Sequence[str]) -> list[BulkValue]:
        # An illegal key fails the whole call, as in Dapr (it is the caller's error, not the store's).
        results = self.store.bulk_get([self._key(key) for key in keys])
        return [replace(result, key=key) for key, result in zip(keys, results, strict=True)]

    def set(self, item: StateItem) -> str:
        return self.store.set(self._item(item))

    def bulk_set(self, items: Sequence[StateItem]) -> None:
        self.store.bulk_set([self._item(item) for item in items])

    def delete(self, item: DeleteItem) -> None:
        self.store.delete(self._delete_item(item))

    def bulk_delete(self, items: Sequence[DeleteItem]) -> None:
        self.store.bulk_delete([self._delete_item(item) for item in items])

    def transact(self, operations: Sequence[Operation]) -> None:
        prefixed: list[Operation] = [
            Upsert(self._item(operation.item)) if isinstance(operation, Upsert)
            else Delete(self._delete_item(operation.item))
            for operation in operations
        ]
        self.store.transact(prefixed)

    def health(self) -> tuple[bool, str]:
        return self.store.health()

    def close(self) -> None:
        self.store.close()

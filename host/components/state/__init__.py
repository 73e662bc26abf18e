"""The state capability: key/value state with ETags, bulk calls, transactions and TTLs, behind one
interface (`StateStore`), in memory, Redis (Dapr's layout) or PostgreSQL.

`BACKENDS` names each backend's module (imported only when configured, so psycopg is loaded only
for a postgresql store). A backend stores keys as given; wrap it in `PrefixedStore` with its
config's `key_prefix` to apply Layotto's/Dapr's key prefix strategies.
"""

from __future__ import annotations

from host.components.base import ComponentContext
from host.components.state.base import (
    BulkValue,
    Concurrency,
    Delete,
    DeleteItem,
    Operation,
    StateConfig,
    StateItem,
    StateStore,
    StateValue,
    Upsert,
)
from host.components.state.prefix import PrefixedStore, key_prefix

BACKENDS: dict[str, str] = {
    "memory": "host.components.state.memory",
    "redis": "host.components.state.redis",
    "postgresql": "host.components.state.postgresql",
}

__all__ = [
    "BACKENDS",
    "BulkValue",
    "Concurrency",
    "Delete",
    "DeleteItem",
    "Operation",
    "PrefixedStore",
    "StateConfig",
    "StateItem",
    "StateStore",
    "StateValue",
    "Upsert",
    "key_prefix",
]


def wrap(store: StateStore, config: StateConfig, context: ComponentContext) -> StateStore:
    """What every state backend shares (host/components/registry.py): its key prefix strategy."""
    return PrefixedStore(store, config.key_prefix, context)

"""Configuration stores (Layotto's and Dapr's configuration API): the interface and the backends
by type name. Items are identified by (group, label, key); see `_identity.py` for how that is
stored, `file.py` and `redis.py` for each backend's layout."""

from __future__ import annotations

from host.components.configuration.base import (
    DELETED_METADATA,
    ConfigItem,
    ConfigurationStore,
    ConfigWatch,
    deleted_item,
)

BACKENDS: dict[str, str] = {
    "file": "host.components.configuration.file",
    "redis": "host.components.configuration.redis",
}

__all__ = ["BACKENDS", "DELETED_METADATA", "ConfigItem", "ConfigWatch", "ConfigurationStore", "deleted_item"]

"""What the host tells applications about itself (Dapr's GetMetadata/SetMetadata, `/v1.0/metadata`):
its app id, its components as Dapr names them (`state.redis`, `pubsub.memory`, ...), the functions
it serves, and the extended attributes applications set."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from host.api.errors import invalid
from host.components.catalog import Components

RUNTIME_VERSION = "wasm-faas-host/0.1.0"
# What every backend of a capability offers through its interface (host/components/*/base.py).
_CAPABILITIES = {"state": ["ETAG", "TRANSACTIONAL", "TTL"]}


@dataclass(frozen=True)
class Component:
    name: str
    type: str  # "<capability>.<backend type>", e.g. "state.redis"
    version: str
    capabilities: list[str]


@dataclass(frozen=True)
class Metadata:
    app_id: str
    runtime_version: str
    components: list[Component]
    extended: dict[str, str] = field(default_factory=dict)


class MetadataApi:
    def __init__(self, components: Components, functions: Callable[[], list[str]] = list):
        self.components = components
        self.functions = functions
        self._extended: dict[str, str] = {}
        self._lock = threading.Lock()

    def describe(self) -> Metadata:
        listed = [Component(entry["name"], f"{entry['capability']}.{entry['type']}", "v1",
                            list(_CAPABILITIES.get(entry["capability"], [])))
                  for entry in self.components.info()]
        with self._lock:
            extended = dict(self._extended)
        extended.setdefault("functions", ",".join(self.functions()))
        return Metadata(self.components.app_id, RUNTIME_VERSION, listed, extended)

    def set(self, key: str, value: str) -> None:
        """An extended attribute (Dapr's SetMetadata): shown by `describe` until the host stops."""
        if not key:
            raise invalid("the metadata key is empty")
        with self._lock:
            self._extended[key] = value

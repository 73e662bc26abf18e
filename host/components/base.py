"""What every component backend shares: its config base model and the context it is built with.

A backend is one module exposing:
- `Config`: a pydantic model deriving from `BackendConfig` with `type: Literal["<name>", ...]`
  (the names users write; the first is the canonical one);
- `Backend`: the class, constructed as `Backend(config, context)`, implementing its capability's
  interface plus `health() -> (bool, str)` and `close()`;
- optionally `from_layotto(metadata: dict[str, str]) -> dict[str, Any]`: Layotto/Dapr component
  metadata (`redisHost`, `keyPrefix`...) turned into this `Config`'s fields (without `type`).
Heavy client libraries are imported inside the backend (not at module top) when only some
configurations need them, so validating a config does not pay for them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict


class BackendConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


def key_prefix_from_layotto(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Layotto's / Dapr's `keyPrefix` metadata as the `key_prefix` field (absent: the default)."""
    return {"key_prefix": metadata["keyPrefix"]} if metadata.get("keyPrefix") else {}


@dataclass(frozen=True)
class ComponentContext:
    """Facts about the host a backend may need."""

    name: str  # the component's configured name
    app_id: str = "wasm-faas"  # one app id per host: key prefixes, CloudEvents source, consumer groups
    base_dir: Path = Path(".")  # relative paths in a backend's config are resolved against this
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("wasm_faas.components"))

    def resolve(self, path: str) -> Path:
        return (self.base_dir / Path(path).expanduser()).resolve()


class Component(Protocol):
    def health(self) -> tuple[bool, str]:
        """(healthy, detail) for readiness; must be quick and never raise."""

    def close(self) -> None: ...

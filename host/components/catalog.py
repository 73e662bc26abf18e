"""Every configured component, built once from the config: the same instances serve functions
(host imports), applications (the gRPC and HTTP APIs) and event deliveries, so all of them see
each other's writes."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from host.components import registry
from host.components.base import ComponentContext

log = logging.getLogger(__name__)


class Components:
    def __init__(self, sections: Mapping[str, Mapping[str, BaseModel]], *, app_id: str, base_dir: Path):
        self.app_id = app_id
        self.by_capability: dict[str, dict[str, Any]] = {capability: {} for capability in registry.CAPABILITIES}
        self.kinds: dict[tuple[str, str], str] = {}
        try:
            for capability, configured in sections.items():
                for name, config in configured.items():
                    context = ComponentContext(name=name, app_id=app_id, base_dir=base_dir,
                                               logger=logging.getLogger(f"wasm_faas.components.{capability}"))
                    self.by_capability[capability][name] = registry.build(capability, config, context)
                    self.kinds[(capability, name)] = getattr(config, "type", "?")
        except BaseException:
            self.close()
            raise

    def of(self, capability: str) -> dict[str, Any]:
        return self.by_capability[capability]

    def health(self) -> dict[str, tuple[bool, str]]:
        """(healthy, detail) per component, named `<capability>.<name>`."""
        return {f"{capability}.{name}": component.health()
                for capability, components in self.by_capability.items() for name, component in components.items()}

    def info(self) -> list[dict[str, str]]:
        return [{"capability": capability, "name": name, "type": self.kinds.get((capability, name), "?")}
                for capability, components in self.by_capability.items() for name in components]

    def close(self) -> None:
        for capability, components in self.by_capability.items():
            for name, component in components.items():
                try:
                    component.close()
                except Exception:  # noqa: BLE001 - closing the others matters more
                    log.exception("closing %s component %s failed", capability, name)

"""(capability, type) -> backend module. Each capability package lists its backends in its own
`BACKENDS` table (one line per backend); each backend module owns its `Config` model. The config
model assembles one discriminated union per capability from here, so adding a backend never edits
the central config."""

from __future__ import annotations

import functools
import importlib
import typing
from types import ModuleType
from typing import Annotated, Any, Union

from pydantic import BaseModel, Field

from host.components.base import ComponentContext

CAPABILITIES = ("state", "pubsub", "lock", "sequencer", "configuration")


@functools.cache
def backends(capability: str) -> dict[str, ModuleType]:
    """The backend modules of a capability by canonical type name, imported once."""
    package = importlib.import_module(f"{__package__}.{capability}")
    table: dict[str, str] = package.BACKENDS
    return {name: importlib.import_module(path) for name, path in table.items()}


def type_names(module: ModuleType) -> tuple[str, ...]:
    """Every `type` value a backend's Config accepts (its canonical name first, then aliases)."""
    annotation = module.Config.model_fields["type"].annotation
    return tuple(typing.get_args(annotation))


@functools.cache
def config_union(capability: str) -> Any:
    """The pydantic type of one configured component of `capability`: a union tagged by `type`."""
    models = tuple(module.Config for module in backends(capability).values())
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007 - built at run time


def module_for(capability: str, config: BaseModel) -> ModuleType:
    for module in backends(capability).values():
        if type(config) is module.Config:
            return module
    raise LookupError(f"no {capability} backend has config type {type(config).__name__}")


def build(capability: str, config: BaseModel, context: ComponentContext) -> Any:
    """A running component from its validated config. A capability package may define
    `wrap(component, config, context)` for what every backend of it shares (state key prefixes)."""
    component = module_for(capability, config).Backend(config, context)
    wrap = getattr(importlib.import_module(f"{__package__}.{capability}"), "wrap", None)
    return wrap(component, config, context) if wrap is not None else component


def from_layotto(capability: str, kind: str, metadata: dict[str, str]) -> dict[str, Any]:
    """A Layotto/Dapr component (`type` + `metadata`) as native config fields; unknown types are
    kept as given so validation names them."""
    for module in backends(capability).values():
        names = type_names(module)
        if kind in names:
            convert = getattr(module, "from_layotto", None)
            fields = convert(dict(metadata)) if convert is not None else {}
            return {"type": names[0], **fields}
    return {"type": kind}

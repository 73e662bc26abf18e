"""The configuration capability (Layotto's and Dapr's configuration API): items read, written and
watched in a store that people or other programs also edit, so every backend reports changes made
behind its back, not only its own."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ConfigItem:
    """One configuration item. `group` and `label` (Layotto's) are part of its identity; empty
    means the store's default. `version` is assigned by the store and changes on every save."""

    key: str
    value: str
    version: str = ""
    group: str = ""
    label: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)


# A deleted item reaches subscribers as value "" with this metadata.
DELETED_METADATA: Mapping[str, str] = {"deleted": "true"}


def deleted_item(key: str, group: str = "", label: str = "") -> ConfigItem:
    return ConfigItem(key=key, value="", group=group, label=label, metadata=dict(DELETED_METADATA))


class ConfigWatch(Protocol):
    def close(self) -> None:
        """No new `on_change` call starts after this returns (one already running may finish)."""


class ConfigurationStore(Protocol):
    """Called from guest threads and gRPC threads: implementations are thread-safe."""

    def get(self, keys: Sequence[str], group: str = "", label: str = "") -> list[ConfigItem]:
        """The items of `keys` in (group, label); every item of (group, label) when `keys` is
        empty. A missing key is simply absent. Raises ComponentError when the store fails."""

    def save(self, items: Sequence[ConfigItem]) -> None:
        """Create or replace the items (identity: group, label, key). Callers' versions are
        ignored: the store gives each saved item a new one."""

    def delete(self, keys: Sequence[str], group: str = "", label: str = "") -> None:
        """Remove the items; missing keys are ignored."""

    def subscribe(self, keys: Sequence[str], on_change: Callable[[list[ConfigItem]], None]) -> ConfigWatch:
        """Call `on_change` (from a component thread; it must return quickly) with the items that
        changed among `keys` in any group and label (every key when empty). A deleted item comes
        as value "" with metadata {"deleted": "true"}."""

    def health(self) -> tuple[bool, str]: ...

    def close(self) -> None: ...

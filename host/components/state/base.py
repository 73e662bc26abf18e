"""The state-store capability: the interface every state component implements."""

from __future__ import annotations

from typing import Optional, Protocol


class StateStore(Protocol):
    """Called from guest worker threads: implementations must be thread-safe and bounded in time."""

    kind: str

    def get(self, key: str) -> Optional[bytes]:
        """The value, None for a missing key; raises ComponentError on backend failure."""

    def health(self) -> tuple[bool, str]:
        """(healthy, detail) for readiness."""

    def close(self) -> None: ...


class ComponentError(Exception):
    """A backend failed (unreachable, timed out, refused)."""

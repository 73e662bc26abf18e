"""The state capability's interface: what guests (through host imports), the Layotto/Dapr gRPC API and
the Dapr HTTP API all call, whatever backend holds the data.

Semantics are Dapr's (optimistic concurrency with version ETags):
- a write or delete carrying an ETag succeeds only if it matches the stored version (else
  `EtagMismatch`); one without an ETag is last-write-wins; a write with an ETag to a missing key
  succeeds and creates version "1"; deleting a missing key succeeds;
- a key once written with `first-write` concurrency refuses later writes that carry no ETag
  (`EtagMismatch`), as Dapr's Redis store does;
- an ETag the backend cannot have issued (not a decimal version) is `EtagInvalid`; an empty key is
  `InvalidRequest` (a key containing `||` is refused by `PrefixedStore`, which owns that separator);
- `ttl_s > 0` expires the key after that many seconds, `ttl_s <= 0` makes it persistent, `None`
  leaves any expiry it had.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import field_validator

from host.components.base import BackendConfig

Concurrency = Literal["first-write", "last-write"]


@dataclass(frozen=True, slots=True)
class StateItem:
    key: str
    value: bytes
    etag: str | None = None  # None or "": no check
    concurrency: Concurrency = "last-write"
    ttl_s: int | None = None


@dataclass(frozen=True, slots=True)
class DeleteItem:
    key: str
    etag: str | None = None
    concurrency: Concurrency = "last-write"


@dataclass(frozen=True, slots=True)
class StateValue:
    value: bytes
    etag: str  # "" when the backend has no version for it (a plain Redis string written by others)


@dataclass(frozen=True, slots=True)
class BulkValue:
    key: str
    value: bytes | None  # None: missing (or failed, see `error`)
    etag: str | None
    error: str = ""


@dataclass(frozen=True, slots=True)
class Upsert:
    item: StateItem


@dataclass(frozen=True, slots=True)
class Delete:
    item: DeleteItem


Operation = Upsert | Delete


class StateConfig(BackendConfig):
    """Fields every state backend's Config has."""

    # Layotto's `keyPrefix`: "none" (Layotto's default), "appid", "name", or a literal prefix.
    # Applied by `PrefixedStore` around the backend.
    key_prefix: str = "none"

    @field_validator("key_prefix")
    @classmethod
    def _no_separator(cls, value: str) -> str:
        if "||" in value:
            raise ValueError("a key prefix cannot contain '||' (the separator it is joined with)")
        return value


class StateStore(Protocol):
    """Thread-safe and bounded in time; failures raise `ComponentError` (or its subclasses)."""

    def get(self, key: str) -> StateValue | None:
        """The value and its ETag, None for a missing (or expired) key."""

    def bulk_get(self, keys: Sequence[str]) -> list[BulkValue]:
        """One result per key, in order; a key's backend failure is in its `.error`, not raised."""

    def set(self, item: StateItem) -> str:
        """Writes the item; returns its new ETag."""

    def bulk_set(self, items: Sequence[StateItem]) -> None:
        """Not atomic: every item is tried; if any failed, raises afterwards (EtagMismatch if any
        failure was an ETag mismatch)."""

    def delete(self, item: DeleteItem) -> None: ...

    def bulk_delete(self, items: Sequence[DeleteItem]) -> None:
        """Not atomic, failures as for `bulk_set`."""

    def transact(self, operations: Sequence[Operation]) -> None:
        """All-or-nothing where the backend can (memory, postgresql); redis runs MULTI/EXEC as Dapr
        does, so operations before and after a failing one stay applied."""

    def health(self) -> tuple[bool, str]:
        """(healthy, detail); quick, never raises."""

    def close(self) -> None: ...

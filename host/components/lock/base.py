"""The lock capability's interface: a lease on a named resource held by one owner until it unlocks
it or the lease expires (Layotto's TryLock/Unlock). Also the key layout Layotto stores locks under,
so a lock taken through this host and one taken through Layotto on the same Redis exclude each other."""

from __future__ import annotations

from enum import IntEnum
from typing import Protocol

from pydantic import field_validator

from host.components.base import BackendConfig, ComponentContext
from host.components.errors import InvalidRequest

API_SEPARATOR = "|||"  # between the API name and the rest (Layotto's layout)
SEPARATOR = "||"  # between a prefix and the caller's key; so a caller's key may not contain it


class UnlockStatus(IntEnum):
    """Layotto's `UnlockResponse.Status` values."""

    SUCCESS = 0
    LOCK_DOES_NOT_EXIST = 1
    LOCK_BELONGS_TO_OTHERS = 2
    INTERNAL_ERROR = 3


def check_key_prefix(value: str) -> str:
    """A literal prefix containing the separator would make two prefixes' keys collide."""
    if SEPARATOR in value:
        raise ValueError(f"key_prefix may not contain {SEPARATOR!r}, got {value!r}")
    return value


class LockConfig(BackendConfig):
    """The fields every lock backend's Config has."""

    # `appid` (default), `name` (the component's name), `none`, or any other literal prefix.
    key_prefix: str = "appid"

    _check_key_prefix = field_validator("key_prefix")(check_key_prefix)


class LockStore(Protocol):
    def try_lock(self, resource: str, owner: str, expire_s: int) -> bool:
        """Take the lock for `expire_s` seconds; False when someone (even `owner`) holds it."""

    def unlock(self, resource: str, owner: str) -> UnlockStatus:
        """Release the lock if `owner` holds it."""

    def health(self) -> tuple[bool, str]: ...

    def close(self) -> None: ...


def prefixed_key(api: str, strategy: str, context: ComponentContext, key: str) -> str:
    """`<api>|||<prefix>||<key>` (or `<api>|||<key>` for strategy `none`), as Layotto's lock and
    sequencer runtimes build it. An empty strategy is the default, `appid`."""
    if not key:
        raise InvalidRequest("the key must not be empty")
    if SEPARATOR in key:
        raise InvalidRequest(f"the key may not contain {SEPARATOR!r}: {key!r}")
    strategy = strategy or "appid"
    if strategy == "none":
        return f"{api}{API_SEPARATOR}{key}"
    prefix = {"appid": context.app_id, "name": context.name}.get(strategy, strategy)
    return f"{api}{API_SEPARATOR}{prefix}{SEPARATOR}{key}"


def lock_key(strategy: str, context: ComponentContext, resource: str) -> str:
    """Where a lock on `resource` is stored: `lock|||<app_id>||<resource>` under the default strategy."""
    return prefixed_key("lock", strategy, context, resource)


def check_lock_request(resource: str, owner: str, expire_s: int | None = None) -> None:
    """Layotto's argument checks (they answer InvalidArgument)."""
    if not resource:
        raise InvalidRequest("the lock's resource id must not be empty")
    if not owner:
        raise InvalidRequest("the lock owner must not be empty")
    if expire_s is not None and expire_s <= 0:
        raise InvalidRequest(f"the lock's expiry must be a positive number of seconds, got {expire_s}")

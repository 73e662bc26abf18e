"""The runtime capabilities a guest reaches through host imports: state, pub/sub, locks, ids,
configuration, and calling another function. The host implements them over its components; every
method raises a ServiceError subclass (abi/services/errors.py) on failure and is called from the
guest's thread (it may block, bounded by the backend's timeout)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from abi.services.errors import ServiceError


@dataclass(frozen=True, slots=True)
class StateEntry:
    value: bytes
    etag: str  # "" when the store keeps no version for it


class StateAccess(Protocol):
    def get(self, store: str, key: str) -> StateEntry | None:
        """None for a missing key."""

    def set(self, store: str, key: str, value: bytes, etag: str | None) -> None:
        """etag None: last write wins; else it must match (Conflict)."""

    def delete(self, store: str, key: str, etag: str | None) -> None: ...


class PubSubAccess(Protocol):
    def publish(self, pubsub: str, topic: str, data: bytes, content_type: str) -> None:
        """Wraps `data` in a CloudEvent envelope as the runtime API does, then publishes it."""


class LockAccess(Protocol):
    def try_lock(self, store: str, resource: str, owner: str, expire_s: int) -> bool: ...

    def unlock(self, store: str, resource: str, owner: str) -> int:
        """0 unlocked, 1 not locked, 2 held by another owner."""


class SequencerAccess(Protocol):
    def next_id(self, store: str, key: str) -> int: ...


class ConfigurationAccess(Protocol):
    def get(self, store: str, key: str) -> str | None:
        """None for a missing key."""


class ForeignRuntime(Protocol):
    def call(self, method: str, request: bytes, permitted: Callable[[str, str], bool] | None = None) -> bytes:
        """The runtime API method `method` (e.g. "SaveState") on a serialized protobuf request;
        the serialized response. Raises UnknownName for a method it does not serve. The host
        asks `permitted(allow_list, name)` (e.g. ("allowed_state_stores", "statestore")) about the
        name the request carries; a refused name is answered as an unknown one (UnknownName)."""


class Invoker(Protocol):
    def invoke(self, function_id: str, method: str, param: bytes) -> bytes:
        """Call another function; returns the body of its 2xx answer or raises ServiceError."""


class Unavailable:
    """Stands for any capability the host did not provide (an ABI test without a host, say)."""

    def __init__(self, what: str):
        self.what = what

    def __getattr__(self, name: str) -> object:
        def refuse(*args: object, **kwargs: object) -> object:
            raise ServiceError(f"{self.what} is not available here")

        return refuse

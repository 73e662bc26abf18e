"""The sequencer capability's interface: ids that strictly increase per key (Layotto's GetNextId
and GetSegment), the config every backend shares (key prefix, `bigger_than` seeds) and the key
layout Layotto stores counters under, so both runtimes can share one Redis counter."""

from __future__ import annotations

from typing import Protocol

from pydantic import field_validator

from host.components.base import BackendConfig, ComponentContext
from host.components.errors import InvalidRequest
from host.components.lock.base import SEPARATOR, check_key_prefix, prefixed_key


class SequencerConfig(BackendConfig):
    """The fields every sequencer backend's Config has."""

    # `appid` (default), `name` (the component's name), `none`, or any other literal prefix.
    key_prefix: str = "appid"
    # Seeds applied at construction: the next id of each key is above n (a larger current value stays).
    bigger_than: dict[str, int] = {}

    _check_key_prefix = field_validator("key_prefix")(check_key_prefix)

    @field_validator("bigger_than")
    @classmethod
    def _check_bigger_than(cls, value: dict[str, int]) -> dict[str, int]:
        for key, floor in value.items():
            if not key or SEPARATOR in key:
                raise ValueError(f"bigger_than keys must be non-empty and free of {SEPARATOR!r}, got {key!r}")
            if floor < 0:
                raise ValueError(f"bigger_than[{key!r}] must be >= 0, got {floor}")
        return value


class Sequencer(Protocol):
    def next_id(self, key: str) -> int:
        """The key's next id (Layotto's STRONG mode): one atomic increment in the backend."""

    def segment(self, key: str, size: int) -> tuple[int, int]:
        """Reserve `size` consecutive ids: (first, last)."""

    def health(self) -> tuple[bool, str]: ...

    def close(self) -> None: ...


def sequencer_key(strategy: str, context: ComponentContext, key: str) -> str:
    """Where the counter of `key` is stored: `sequencer|||<app_id>||<key>` under the default strategy."""
    return prefixed_key("sequencer", strategy, context, key)


def check_segment_size(size: int) -> None:
    if size <= 0:
        raise InvalidRequest(f"a segment holds at least one id, got size {size}")

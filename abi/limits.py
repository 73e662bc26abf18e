"""What a guest can make the host hold outside its linear memory, bounded by the same `memory_limit_mb`.

A guest's linear memory is capped by the store (abi/engine `store_limits`, tables too), but host
imports copy guest bytes into host objects: the request and response bodies it sets or appends, the
header maps it adds to, the properties it sets. Each of those is checked here before the copy is
kept; going past the function's limit traps the guest (`HostLimitExceeded`), so the request is
answered 500 and the instance replaced — a guest appending without end gets a 500, not a host that
runs out of memory. A header-map entry or a property costs its key and value plus ENTRY_COST
(what the host's tuple and two strings take beyond their text), so a flood of empty entries is
bounded too, as are the entry counts (MAX_MAP_ENTRIES, MAX_PROPERTIES).

Shared data and queue contents (abi/shared.py) are charged to the function that wrote them, against
the same limit, and refused with a status instead (they outlive the request).
"""

from __future__ import annotations

from typing import Any

from abi.engine import GuestTrap
from abi.maps import MAX_MAP_ENTRIES, HeaderList

DEFAULT_LIMIT_BYTES = 256 * 1024 * 1024  # a plugin started without a memory limit (tests, tools)
ENTRY_COST = 160  # host bytes of one (key, value) tuple of two short strings, beyond their text
MAX_PROPERTIES = 1024  # properties a guest may set on one context (or outside requests)

__all__ = ["DEFAULT_LIMIT_BYTES", "ENTRY_COST", "MAX_MAP_ENTRIES", "MAX_PROPERTIES", "HostLimitExceeded",
           "charge_map", "check_body", "check_properties", "entry_cost", "limit_of", "map_cost"]


class HostLimitExceeded(GuestTrap):
    """The guest asked the host to hold more than its memory limit allows: it traps (500)."""


def limit_of(vm: Any) -> int:
    """The function's memory limit in bytes (`memory_limit_mb`)."""
    limit = vm.settings.memory_limit_bytes
    return limit if limit else DEFAULT_LIMIT_BYTES


def _exceeded(vm: Any, what: str, size: int) -> HostLimitExceeded:
    limit = limit_of(vm)
    return HostLimitExceeded(f"{what} would hold {size} bytes, over the function's memory limit "
                             f"({limit // (1024 * 1024)} MiB, memory_limit_mb)")


def check_body(vm: Any, what: str, new_size: int) -> None:
    """A body or buffer about to become `new_size` bytes long."""
    if new_size > limit_of(vm):
        raise _exceeded(vm, what, new_size)


def entry_cost(key: str, value: str) -> int:
    return len(key) + len(value) + ENTRY_COST


def map_cost(pairs: HeaderList) -> int:
    return sum(len(key) + len(value) for key, value in pairs) + ENTRY_COST * len(pairs)


def charge_map(vm: Any, pairs: HeaderList, added: int, new_entries: int) -> None:
    """A header map about to change by `added` bytes (ENTRY_COST included) and `new_entries` entries:
    traps past the limits, else counts the change.

    The bytes a stream's maps hold are counted as the guest changes them (`StreamState.guest_bytes`);
    a map outside the stream (an http or gRPC call's result, during its callback) is measured, as it
    is small and short-lived."""
    if new_entries > 0 and len(pairs) + new_entries > MAX_MAP_ENTRIES:
        raise HostLimitExceeded(f"a header map would hold more than {MAX_MAP_ENTRIES} entries")
    stream = vm.stream
    counted = stream is not None and _is_stream_map(stream, pairs)
    if added > 0:
        held = stream.guest_bytes if counted else map_cost(pairs)
        if held + added > limit_of(vm):
            raise _exceeded(vm, "header maps", held + added)
    if counted:
        stream.guest_bytes += added


def _is_stream_map(stream: Any, pairs: HeaderList) -> bool:
    return (pairs is stream.request_headers or pairs is stream.request_trailers or pairs is stream.response.headers
            or pairs is stream.response.trailers)


def check_properties(vm: Any, properties: dict[str, bytes], key: str, value: bytes) -> None:
    """Setting property `key` to `value` in `properties` (a stream's, or the instance's)."""
    if key not in properties and len(properties) >= MAX_PROPERTIES:
        raise HostLimitExceeded(f"more than {MAX_PROPERTIES} properties set")
    held = sum(len(k) + len(v) + ENTRY_COST for k, v in properties.items() if k != key)
    size = held + len(key) + len(value) + ENTRY_COST
    if size > limit_of(vm):
        raise _exceeded(vm, "properties", size)

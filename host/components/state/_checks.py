"""Argument checks and ETag rules every state backend applies the same way, so the backends agree
on what is an invalid request, an invalid ETag and a conflict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from host.components.errors import ComponentError, EtagInvalid, EtagMismatch, InvalidRequest
from host.components.state.base import DeleteItem, StateItem

Item = TypeVar("Item", bound=StateItem | DeleteItem)

_MAX_VERSION = 2**63 - 1  # what a bigint (and a Redis integer) holds


def check_key(key: str) -> None:
    if not key:
        raise InvalidRequest("state key is empty")


def expected_version(etag: str | None) -> int:
    """The version an ETag asks for; 0 for none (Dapr sends 0 for "no ETag" too). Versions are
    decimal counters, so anything else is an ETag no backend here can have issued."""
    if not etag:
        return 0
    if not etag.isascii() or not etag.isdigit() or int(etag) > _MAX_VERSION:
        raise EtagInvalid(f"invalid ETag {etag!r}: expected a decimal version")
    return int(etag)


def checked(items: Sequence[Item]) -> list[tuple[Item, int]]:
    """Every item with its expected version, once all passed their checks: a bulk call or a
    transaction with one bad argument writes nothing."""
    result = []
    for item in items:
        check_key(item.key)
        result.append((item, expected_version(item.etag)))
    return result


def mismatch(key: str, etag: str | None) -> EtagMismatch:
    if etag:
        return EtagMismatch(f"ETag {etag!r} does not match the stored version of {key!r}")
    return EtagMismatch(f"{key!r} was written with first-write concurrency: a write needs its ETag")


def raise_collected(action: str, failures: list[ComponentError]) -> None:
    """After a non-atomic bulk operation: nothing, or one error naming every failure; an ETag
    mismatch among them makes it an EtagMismatch (Dapr answers Aborted then)."""
    if not failures:
        return
    detail = "; ".join(str(error) for error in failures)
    message = f"{action}: {len(failures)} item(s) failed: {detail}"
    if any(isinstance(error, EtagMismatch) for error in failures):
        raise EtagMismatch(message)
    if all(isinstance(error, EtagInvalid) for error in failures):
        raise EtagInvalid(message)
    if all(isinstance(error, InvalidRequest) for error in failures):
        raise InvalidRequest(message)
    raise ComponentError(message)

"""The `runtime` interface of the function world, implemented over the host's capabilities
(`abi.services.HostServices`): the very objects proxy-wasm modules' imports call, so functions of
both kinds read each other's state, take each other's locks and invoke each other.

Each call checks the caller's allow-list first (`allowed_state_stores`, `allowed_invoke_targets`...,
the same settings as for modules); a refused name is answered exactly as an unknown one, with a
message that names nothing else. Failures are `abi.services` errors; the linker turns them into the
world's `error` variant.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from abi import HostServices
from abi.services import BadRequest, Conflict, ServiceError, StateEntry, UnknownName
from abi.vm import PluginSettings

# The world's `error` cases, most specific first (UnknownName etc. are ServiceError subclasses).
ERROR_CASES: tuple[tuple[type[ServiceError], str], ...] = (
    (UnknownName, "not-found"), (BadRequest, "bad-argument"), (Conflict, "conflict"), (ServiceError, "internal"))

UNLOCK_CASES = {0: "unlocked", 1: "not-locked", 2: "held-by-other"}

LOG_LEVELS = {"trace": 5, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
              "error": logging.ERROR, "critical": logging.CRITICAL}


class Caller(Protocol):
    """What a runtime call needs to know about the instance making it."""

    function_id: str
    settings: PluginSettings
    services: HostServices


def error_case(error: ServiceError) -> str:
    return next(case for kind, case in ERROR_CASES if isinstance(error, kind))


@contextmanager
def _named(caller: Caller, allow_list: str, name: str, call: str, noun: str) -> Iterator[None]:
    """The allow-list check, and one answer for a refused and an unknown name: the guest only learns
    that `name` is not available to it (the host's own message lists the configured names)."""
    unknown = UnknownName(f"no {noun} named {name!r} is available to this function")
    allowed = caller.settings.allow_lists.get(allow_list)
    if allowed is not None and name not in allowed:
        caller.services.logger.warning("function %s: %s(%r) refused: not in %s", caller.function_id, call, name,
                                       allow_list)
        raise unknown
    try:
        yield
    except UnknownName:
        raise unknown from None


def get_state(caller: Caller, store: str, key: str) -> StateEntry | None:
    with _named(caller, "allowed_state_stores", store, "get-state", "state store"):
        return caller.services.state.get(store, key)


def set_state(caller: Caller, store: str, key: str, value: bytes, etag: str | None) -> None:
    with _named(caller, "allowed_state_stores", store, "set-state", "state store"):
        caller.services.state.set(store, key, value, etag)


def delete_state(caller: Caller, store: str, key: str, etag: str | None) -> None:
    with _named(caller, "allowed_state_stores", store, "delete-state", "state store"):
        caller.services.state.delete(store, key, etag)


def invoke(caller: Caller, function_id: str, method: str, body: bytes) -> bytes:
    with _named(caller, "allowed_invoke_targets", function_id, "invoke", "function"):
        return caller.services.invoker.invoke(function_id, method, body)


def publish(caller: Caller, pubsub: str, topic: str, data: bytes, content_type: str) -> None:
    with _named(caller, "allowed_pubsubs", pubsub, "publish", "pubsub"):
        caller.services.pubsub.publish(pubsub, topic, data, content_type)


def try_lock(caller: Caller, store: str, resource_id: str, owner: str, expire_seconds: int) -> bool:
    with _named(caller, "allowed_lock_stores", store, "try-lock", "lock store"):
        if expire_seconds <= 0:
            raise BadRequest("expire-seconds must be > 0")
        return caller.services.lock.try_lock(store, resource_id, owner, expire_seconds)


def unlock(caller: Caller, store: str, resource_id: str, owner: str) -> str:
    with _named(caller, "allowed_lock_stores", store, "unlock", "lock store"):
        outcome = caller.services.lock.unlock(store, resource_id, owner)
    if outcome not in UNLOCK_CASES:
        raise ServiceError(f"lock store {store!r} answered unlock with {outcome!r}")
    return UNLOCK_CASES[outcome]


def next_id(caller: Caller, store: str, key: str) -> int:
    with _named(caller, "allowed_sequencers", store, "next-id", "sequencer"):
        value = caller.services.sequencer.next_id(store, key)
    if not 0 <= value < 1 << 64:
        raise ServiceError(f"sequencer {store!r} gave {value}, outside u64")
    return value


def get_configuration(caller: Caller, store: str, key: str) -> str | None:
    with _named(caller, "allowed_configuration_stores", store, "get-configuration", "configuration store"):
        return caller.services.configuration.get(store, key)


def log(caller: Caller, level: str, message: str) -> None:
    caller.services.logger.log(LOG_LEVELS.get(level, logging.INFO), "[%s] %s", caller.function_id, message)

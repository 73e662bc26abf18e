"""The real backing services the component tests talk to (Redis, PostgreSQL, NATS on this
machine). Outside CI a missing service skips its tests; with CI=true it fails them, so a
silently missing service can never turn a run green."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator

import pytest
import redis

IN_CI = os.environ.get("CI") == "true"

REDIS_ADDRESS = "127.0.0.1:6379"
POSTGRES_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"
NATS_URL = "nats://127.0.0.1:4222"


def _answers(address: str) -> str | None:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return None
    except OSError as error:
        return str(error)


def require_service(name: str, address: str) -> None:
    """Skip (or, in CI, fail) the calling test when nothing answers at `address`."""
    problem = _answers(address)
    if problem is None:
        return
    if IN_CI:
        pytest.fail(f"{name} must run at {address} in CI: {problem}")
    pytest.skip(f"no {name} at {address}: {problem}")


def require_redis() -> None:
    require_service("Redis", REDIS_ADDRESS)


def require_postgres() -> None:
    require_service("PostgreSQL", "127.0.0.1:5432")


def require_nats() -> None:
    require_service("NATS", "127.0.0.1:4222")


def unique_prefix(label: str = "test") -> str:
    """A key/table/stream prefix no other test run uses (tests clean up what they made under it)."""
    return f"wfaas-{label}-{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def redis_keys(label: str) -> Iterator[tuple[redis.Redis, str]]:
    """A client of the test Redis and a key prefix of the caller's own (a store's literal `key_prefix`:
    keys `<prefix>||key`); every such key is deleted after."""
    require_redis()
    host, _, port = REDIS_ADDRESS.rpartition(":")
    client = redis.Redis(host=host, port=int(port))
    prefix = unique_prefix(label)
    try:
        yield client, prefix
    finally:
        for key in client.scan_iter(f"{prefix}||*"):
            client.delete(key)
        client.close()

"""Shared fixtures: guest modules built from this repository's sources, and a real server on ephemeral ports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from multidict import CIMultiDict

from abi.engine import available_backends
from host.config import HostConfig, validate_config
from host.process.serve import RunningServer, start_server

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "functions"
IN_CI = os.environ.get("CI") == "true"
# Every engine back-end this installation can run (tests/test_engine_native.py checks that the
# native one is among them: a test matrix that silently lost it would prove nothing about it).
ENGINE_BACKENDS = available_backends()


# --- the suite leaves nothing in Redis (issue 15 item 12) ---
_REDIS_GRACE_TTL_S = 30  # a key expiring within this long goes by itself (a lock's lease): not counted


def _redis_keys() -> set[bytes] | None:
    """The key names in the Redis the tests use (redis-cli --scan), or None when it does not answer."""
    import redis

    try:
        client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=5, socket_connect_timeout=1)
        try:
            return set(client.scan_iter(count=1000))
        finally:
            client.close()
    except redis.RedisError:
        return None


def _lasting(keys: set[bytes]) -> list[bytes]:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=5)
    try:
        return sorted(key for key in keys if not 0 <= client.ttl(key) <= _REDIS_GRACE_TTL_S)
    finally:
        client.close()


@pytest.fixture(scope="session", autouse=True)
def redis_left_as_found() -> Any:
    """Fails the session in CI (warns elsewhere, where other runs may share the server) when keys
    were added to Redis and are still there at the end."""
    before = _redis_keys()
    yield
    if before is None:
        return
    after = _redis_keys()
    added = _lasting((after or set()) - before)
    if added:
        message = f"the tests left {len(added)} key(s) in Redis: {[k.decode(errors='replace') for k in added[:20]]}"
        if IN_CI:
            pytest.fail(message)
        import warnings

        warnings.warn(message, stacklevel=1)
# --- end Redis check ---


@pytest.fixture(scope="session")
def c_guests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/guests/c/*.c compiled with zig (the same build script CI uses)."""
    out = tmp_path_factory.mktemp("c-guests")
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_guests.py"), "--tests", str(out),
                    "--zig-cache", str(REPO / ".cache" / "zig")],
                   check=True, cwd=REPO, capture_output=True)
    return out


def functions_dir(tmp_path: Path, *modules: Path) -> Path:
    """A fresh functions folder holding copies of `modules`."""
    folder = tmp_path / "functions"
    folder.mkdir(exist_ok=True)
    for module in modules:
        shutil.copy(module, folder / module.name)
    return folder


def make_config(tmp_path: Path, folder: Path | None = None, **sections: Any) -> HostConfig:
    raw: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:0", "admin": "127.0.0.1:0", "grpc": "127.0.0.1:0", "dapr_http": "127.0.0.1:0",
                   "cache_dir": str(tmp_path / "cache")},
        "functions_dirs": [str(folder)] if folder else [],
        "function_defaults": {"instance_num": 2},
        "state": {"state_demo": {"type": "memory", "seed": {"book1": "100"}}},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return validate_config(raw, "test")


class Client:
    """Real HTTP against a running server."""

    def __init__(self, server: RunningServer, session: aiohttp.ClientSession):
        self.server = server
        self.session = session
        self.base = f"http://127.0.0.1:{server.listen_port}"
        self.admin = f"http://127.0.0.1:{server.admin_port}"

    async def call(self, function_id: str | None, path: str = "/", *, method: str = "GET",
                   headers: dict[str, str] | None = None, data: bytes | None = None
                   ) -> tuple[int, CIMultiDict, bytes]:
        all_headers = dict(headers or {})
        if function_id is not None:
            all_headers["id"] = function_id
        async with self.session.request(method, self.base + path, headers=all_headers, data=data) as response:
            return response.status, CIMultiDict(response.headers), await response.read()

    async def admin_get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.admin + path) as response:
            return response.status, await response.json()


ServerFactory = Callable[..., Awaitable[Client]]


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[ServerFactory]:
    """`client = await serve(config)` starts a real server; everything is stopped after the test."""
    started: list[tuple[RunningServer, aiohttp.ClientSession]] = []

    async def start(config: HostConfig, **kwargs: Any) -> Client:
        server = await start_server(config, **kwargs)
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        started.append((server, session))
        return Client(server, session)

    yield start
    for server, session in started:
        await session.close()
        await server.stop()

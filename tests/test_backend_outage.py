"""A Redis outage: the guest gets status 10 within the timeout, readiness says DOWN, and everything
recovers by itself when Redis returns. Uses its own redis-server on a free port, not the shared one."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.conftest import EXAMPLES, IN_CI, functions_dir, make_config


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisProcess:
    def __init__(self, port: int):
        self.port = port
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 5
        while True:
            try:
                client.set("book1", "42")
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(5)
            self.process = None


@pytest.fixture
def private_redis():
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server must be installed in CI")
        pytest.skip("redis-server not installed")
    server = RedisProcess(_free_port())
    server.start()
    yield server
    server.stop()


async def _readiness(client) -> str:
    return (await client.admin_get("/actuator/health/readiness"))[1]["status"]


async def _eventually(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_redis_down_then_back(serve, tmp_path: Path, private_redis: RedisProcess) -> None:
    folder = functions_dir(tmp_path, EXAMPLES / "function_1.wasm", EXAMPLES / "function_2.wasm")
    config = make_config(tmp_path, folder, state={"state_demo": {
        "type": "redis", "address": f"127.0.0.1:{private_redis.port}", "timeout_ms": 300}})
    client = await serve(config)
    assert (await client.call("id_1", "/?name=book1"))[2] == b"There are 42 inventories for book1."
    assert await _readiness(client) == "UP"

    private_redis.stop()
    started = time.perf_counter()
    status, _, body = await client.call("id_2", method="POST", data=b"book1")
    assert status == 500 and body == b"get_state failed: status 10\n"
    assert time.perf_counter() - started < 2.0  # bounded by the store's timeout, not hanging

    async def down() -> bool:
        return await _readiness(client) == "DOWN"
    await _eventually(down)

    private_redis.start()

    async def up() -> bool:
        return await _readiness(client) == "UP"
    await _eventually(up)
    assert (await client.call("id_1", "/?name=book1"))[2] == b"There are 42 inventories for book1."


async def test_unreachable_upstream_makes_readiness_down_until_it_answers(serve, tmp_path: Path) -> None:
    from aiohttp import web

    port = _free_port()
    client = await serve(make_config(tmp_path, functions_dir(tmp_path, EXAMPLES / "hello.wasm"),
                                     upstreams={"api": f"http://127.0.0.1:{port}"}))
    status, readiness = await client.admin_get("/actuator/health/readiness")
    assert status == 503 and readiness["details"]["components"]["upstream:api"]["status"] == "DOWN"
    runner = web.AppRunner(web.Application())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async def up() -> bool:
            return await _readiness(client) == "UP"
        await _eventually(up)
    finally:
        await runner.cleanup()

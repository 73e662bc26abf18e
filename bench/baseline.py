"""The bare aiohttp baseline: the same answers as the host's functions, without wasm.

    python bench/baseline.py --listen 127.0.0.1:8080 [--redis 127.0.0.1:6379]

Routed like the host, by the `id` header:
  hello -> `hello method=GET path=/ greeting=-\n` plus header `x-hello: 1` (examples/functions/hello.c)
  id_1  -> `There are 100 inventories for book1.` via two in-process steps and one Redis GET
           (the Layotto demo chain id_1 -> id_2 -> state store)
  id_1_blocking -> the same, its GET a blocking redis-py call on the event loop: the design the
           host's inline reads use (host/loop_budget.py), written without wasm — its floor

It binds with reuse_port=True, so bench/run.py starts it N times on one port for N workers, and
prints `ready` on stdout once listening. It uses uvloop when installed, as the host does, so that
the event loop is not the difference being measured.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any, Optional

from aiohttp import web

HELLO_HEADERS = {"x-hello": "1"}


def hello(request: web.Request) -> web.Response:
    greeting = request.headers.get("greeting", "-")
    body = f"hello method={request.method} path={request.path_qs} greeting={greeting}\n"
    # bytes body -> Content-Type application/octet-stream, like the host's answer
    return web.Response(body=body.encode(), headers=HELLO_HEADERS)


class InventoryChain:
    """id_1 -> id_2 -> Redis, as plain coroutine calls."""

    def __init__(self, redis_address: str):
        self._address = redis_address
        self._redis: Optional[object] = None  # created lazily: hello-only runs need no Redis
        self._blocking: Optional[Any] = None

    def _client(self):
        if self._redis is None:
            import redis.asyncio as redis_asyncio

            host, _, port = self._address.rpartition(":")
            # pool size like the host's default RedisStoreConfig.pool_size
            self._redis = redis_asyncio.Redis(host=host, port=int(port), max_connections=32)
        return self._redis

    async def stock(self, name: str) -> str:  # the id_2 step
        value = await self._client().get(name)
        return value.decode() if value is not None else ""

    async def sentence(self, name: str) -> str:  # the id_1 step
        return f"There are {await self.stock(name)} inventories for {name}."

    def blocking_stock(self, name: str) -> str:  # the id_2 step, waiting on the loop
        if self._blocking is None:
            import redis

            host, _, port = self._address.rpartition(":")
            self._blocking = redis.Redis(host=host, port=int(port))
        value = self._blocking.get(name)
        return value.decode() if value is not None else ""

    def handle_blocking(self, request: web.Request) -> web.Response:
        name = request.query.get("name", "")
        return web.Response(body=f"There are {self.blocking_stock(name)} inventories for {name}.".encode())

    async def handle(self, request: web.Request) -> web.Response:
        name = request.query.get("name", "")
        if not name:
            return web.Response(status=400, body=b"missing query parameter 'name'\n")
        return web.Response(body=(await self.sentence(name)).encode())

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()  # type: ignore[attr-defined]


def create_app(redis_address: str) -> web.Application:
    chain = InventoryChain(redis_address)

    async def route(request: web.Request) -> web.StreamResponse:
        function_id = request.headers.get("id")
        if function_id == "hello":
            return hello(request)
        if function_id == "id_1":
            return await chain.handle(request)
        if function_id == "id_1_blocking":
            return chain.handle_blocking(request)
        return web.Response(status=404, body=b"unknown id\n")

    async def close_chain(_app: web.Application) -> None:
        await chain.close()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", route)
    app.on_cleanup.append(close_chain)
    return app


async def serve(listen: str, redis_address: str) -> None:
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(create_app(redis_address), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, int(port), reuse_port=True).start()
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description="bare aiohttp baseline for bench/run.py")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--redis", default="127.0.0.1:6379", metavar="HOST:PORT")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.listen, args.redis))
    return 0


if __name__ == "__main__":
    sys.exit(main())

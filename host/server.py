"""Run the host: admin listener first (readiness says INIT while functions load), then the listener."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import Optional

from aiohttp import web

from .config import HostConfig
from .http.admin import create_admin_app
from .http.listener import create_function_app
from .runtime import Host
from .watcher import FunctionWatcher

log = logging.getLogger(__name__)


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass
class RunningServer:
    host: Host
    runners: list[web.AppRunner]
    listen_port: int
    admin_port: int
    watcher: Optional[FunctionWatcher] = None

    async def stop(self) -> None:
        if self.watcher is not None:
            await self.watcher.stop()
        for runner in reversed(self.runners):
            await runner.cleanup()
        await self.host.stop()


async def _serve(app: web.Application, address: str) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, port = _split(address)
    site = web.TCPSite(runner, host, port, reuse_port=True)
    await site.start()
    server = site._server  # the bound socket tells the real port when 0 was asked for
    bound = server.sockets[0].getsockname()[1] if server and server.sockets else port  # type: ignore[union-attr]
    return runner, bound


async def start_server(config: HostConfig, *, engine_backend: Optional[str] = None) -> RunningServer:
    host = Host(config, engine_backend=engine_backend)
    admin_runner, admin_port = await _serve(create_admin_app(host), config.server.admin)
    try:
        await host.start()
        listen_runner, listen_port = await _serve(create_function_app(host), config.server.listen)
    except BaseException:
        await admin_runner.cleanup()
        await host.stop()
        raise
    watcher = None
    if config.server.watch:
        watcher = FunctionWatcher(host, [config.resolve(d) for d in config.functions_dirs],
                                  config.server.watch_debounce_ms / 1000)
        watcher.start()
    log.info("functions listening on %s (port %d), admin on %s (port %d)", config.server.listen, listen_port,
             config.server.admin, admin_port)
    return RunningServer(host, [admin_runner, listen_runner], listen_port, admin_port, watcher)


async def serve_forever(config: HostConfig) -> None:
    server = await start_server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await server.stop()


def run(config: HostConfig) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency, but the host runs without it
        pass
    asyncio.run(serve_forever(config))

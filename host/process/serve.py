"""Run the host: admin listener first (readiness says INIT while functions load), then the listener.

Shutdown is graceful (`RunningServer.stop`, on SIGTERM or SIGINT): stop accepting connections,
give in-flight requests `server.shutdown_grace_ms` to finish (idle keep-alive connections are
closed; a request still running after that is cut), stop the watcher, close the pools
(each instance's root context is retired: proxy_on_done / proxy_on_delete), close components,
and finally the admin listener — which answers readiness DOWN during the drain.

As one worker of `serve --workers N` (`role` given), the process also binds a private admin
listener on 127.0.0.1 and registers it for its peers; worker 0 serves the public admin port,
speaking for every worker. Only then do the listeners set SO_REUSEPORT — to share the ports the
supervisor reserved; a single process refuses a port another process holds. A worker beats its
heartbeat file from its event loop (`WorkerRole.heartbeat`), so the supervisor can tell a stopped or
hung worker and replace it.

A tokenless admin listener on a non-loopback address refuses to start (host/process/safety.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from abi.imports import logging_time
from host.api.delivery import AppChannel, AppDelivery
from host.app import App, Status
from host.config import HostConfig, split_address
from host.functions.sources import watched_folders
from host.functions.watcher import FunctionWatcher
from host.http.admin.app import create_admin_app
from host.http.admin.layotto import LayottoAdmin
from host.http.admin.peers import Peers
from host.http.dapr import create_dapr_app
from host.http.dapr.app_channel import HttpAppChannel
from host.http.functions import create_function_server
from host.http.protocol import HttpServer
from host.process.cluster import SERVING, STARTING, WorkerRole
from host.process.safety import StartupRefused, check_admin_exposure

if TYPE_CHECKING:  # grpc (~20-40 ms to import) only for a configuration with a gRPC listener or app callback
    from host.grpc.server import GrpcServer

log = logging.getLogger(__name__)

# A worker whose supervisor vanished (SIGKILL) shuts itself down; each check also beats the worker's
# heartbeat, which the supervisor reads (server.worker_heartbeat_timeout_ms).
SUPERVISOR_CHECK_S = 0.5
ADMIN_SHUTDOWN_S = 1.0  # an admin request still running when the host has stopped is cut after this


# --- runtime API listeners (host/grpc, host/http/dapr): started after the function listener, stopped first ---
@dataclass
class ApiListeners:
    grpc: GrpcServer | None = None
    dapr_http: web.AppRunner | None = None
    grpc_port: int = 0  # 0: not listening
    dapr_http_port: int = 0
    deliveries: list[AppDelivery] = field(default_factory=list)  # events to the application

    async def start(self, app: App, role: WorkerRole | None) -> None:
        server = app.config.server
        if server.grpc:
            from host.grpc.server import GrpcServer

            self.grpc = GrpcServer(app.api, api_token=server.api_token, max_message_bytes=server.api_max_message_bytes,
                                   reuse_port=role is not None)
            self.grpc_port = await self.grpc.start(server.grpc)
            log.info("runtime gRPC API (Layotto Runtime, Dapr) listening on %s (port %d)", server.grpc, self.grpc_port)
        if server.dapr_http:
            dapr = create_dapr_app(app.api, ready=lambda: app.status == Status.UP, api_token=server.api_token,
                                   max_body_bytes=server.api_max_message_bytes)
            self.dapr_http, self.dapr_http_port = await _serve(dapr, server.dapr_http, server.shutdown_grace_ms / 1000,
                                                               reuse_port=role is not None)
            log.info("Dapr HTTP API listening on %s (port %d)", server.dapr_http, self.dapr_http_port)
        channels: list[AppChannel] = []
        if server.app_callback:
            from host.grpc.appcallback import GrpcAppChannel

            channels.append(GrpcAppChannel(server.app_callback, server.app_callback_protocol))
        if server.app_http:
            channels.append(HttpAppChannel(server.app_http))
        for channel in channels:
            delivery = AppDelivery(app.api, channel)
            delivery.start()
            self.deliveries.append(delivery)
            log.info("pub/sub delivery to the application at %s started", channel.name)

    async def stop(self, app: App, grace_s: float) -> None:
        """Streams end at once; calls in flight get `grace_s` (both listeners at the same time)."""
        for delivery in self.deliveries:
            await delivery.stop(grace_s)
            log.info("shutdown: pub/sub delivery to the application at %s stopped", delivery.channel.name)
        self.deliveries.clear()
        app.api.end_streams()

        async def stop_grpc(grpc: GrpcServer) -> None:
            await grpc.stop(grace_s)
            log.info("shutdown: runtime gRPC API stopped")

        async def stop_dapr_http(runner: web.AppRunner) -> None:
            await runner.cleanup()
            log.info("shutdown: Dapr HTTP API stopped")

        await asyncio.gather(*([stop_grpc(self.grpc)] if self.grpc else []),
                             *([stop_dapr_http(self.dapr_http)] if self.dapr_http else []))
        self.grpc = self.dapr_http = None
        app.api.close()
# --- end runtime API listeners ---


@dataclass
class RunningServer:
    app: App
    runners: list[web.BaseRunner]  # admin runner(s)
    listener: HttpServer
    listen_port: int
    admin_port: int
    watcher: FunctionWatcher | None = None
    role: WorkerRole | None = None
    api: ApiListeners = field(default_factory=ApiListeners)
    _stopped: bool = field(default=False, repr=False)

    @property
    def grpc_port(self) -> int:
        return self.api.grpc_port

    @property
    def dapr_http_port(self) -> int:
        return self.api.dapr_http_port

    async def stop(self) -> None:
        """Graceful shutdown; each step is logged. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        started = time.monotonic()
        self.app.status = Status.DOWN  # readiness answers DOWN while draining
        listener = self.listener
        grace = self.app.config.server.shutdown_grace_ms / 1000

        await self.api.stop(self.app, grace)  # runtime API listeners first (bounded by the grace period)
        listener.stop_accepting()
        in_flight = listener.in_flight
        log.info("shutdown: stopped accepting connections; waiting up to %.1fs for %d in-flight request(s)",
                 grace, in_flight)
        if self.watcher is not None:
            await self.watcher.stop()
            log.info("shutdown: file watcher stopped")
        finished = await listener.drain(max(0.0, grace - (time.monotonic() - started)))
        drained = time.monotonic() - started
        if not finished:
            log.warning("shutdown: grace period of %.1fs over; unfinished requests were cut", grace)
        else:
            log.info("shutdown: in-flight requests finished (%.2fs)", drained)

        await self.app.stop()  # pools closed (root contexts retired), components closed
        for runner in reversed(self.runners):
            await runner.cleanup()
        log.info("shutdown: complete in %.2fs", time.monotonic() - started)


async def _serve(app: web.Application, address: str, shutdown_timeout: float = ADMIN_SHUTDOWN_S, *,
                 reuse_port: bool = False) -> tuple[web.AppRunner, int]:
    """Serve `app` on `address`; `reuse_port` only to share a port the supervisor reserved."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    host, port = split_address(address)
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    server = site._server  # the bound socket tells the real port when 0 was asked for
    sockets = getattr(server, "sockets", None)
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, bound


async def start_server(config: HostConfig, *, engine_backend: str | None = None,
                       role: WorkerRole | None = None) -> RunningServer:
    """Raises StartupRefused for an unsafe configuration, OSError for an address that is taken."""
    check_admin_exposure(config.server)
    logging_time.configure(config.server.guest_log_lines_per_second)
    app = App(config, engine_backend=engine_backend)
    admin_runners: list[web.BaseRunner] = []
    api = ApiListeners()
    listener: HttpServer | None = None
    try:
        if role is None:
            runner, admin_port = await _serve(create_admin_app(app), config.server.admin)
            admin_runners.append(runner)
        else:
            runner, private_port = await _serve(create_admin_app(app, worker=role), "127.0.0.1:0")
            admin_runners.append(runner)
            role.register(STARTING, private_port)
            admin_port = private_port
            if role.primary:
                peers = Peers(role, config.server.admin_token)
                runner, admin_port = await _serve(create_admin_app(app, worker=role, peers=peers),
                                                  config.server.admin, reuse_port=True)
                admin_runners.append(runner)
        await app.start(ready=False)
        if role is not None:
            await LayottoAdmin(app).replay(role.journal())
        listener = create_function_server(app.dispatcher, config.server)
        listen_port = await listener.start(*split_address(config.server.listen), reuse_port=role is not None)
        await api.start(app, role)
        app.ready()  # readiness is UP only once every configured listener accepts connections
    except BaseException:
        await api.stop(app, 0.0)
        if listener is not None:
            listener.stop_accepting()
            await listener.drain(0.0)
        for started in reversed(admin_runners):
            await started.cleanup()
        await app.stop()
        raise
    watcher = None
    if config.server.watch:
        watcher = FunctionWatcher(app.deployments, watched_folders(config), config.server.watch_debounce_ms / 1000)
        watcher.start()
    if role is not None:
        role.heartbeat()  # before serving: the supervisor checks heartbeats from then on
        role.register(SERVING, private_port, listen_port)
    log.info("functions listening on %s (port %d), admin on %s (port %d)", config.server.listen, listen_port,
             config.server.admin if role is None or role.primary else "127.0.0.1", admin_port)
    return RunningServer(app, admin_runners, listener, listen_port, admin_port, watcher, role, api)


async def _supervisor_gone(role: WorkerRole, stop: asyncio.Event) -> None:
    """Also the heartbeat: beaten from the event loop, it stops when the loop is stuck (or the process stopped)."""
    while not stop.is_set():
        await asyncio.sleep(SUPERVISOR_CHECK_S)
        role.heartbeat()
        if os.getppid() != role.supervisor_pid:
            log.error("the supervisor (pid %d) is gone: shutting down", role.supervisor_pid)
            stop.set()


async def serve_forever(config: HostConfig, role: WorkerRole | None = None) -> None:
    server = await start_server(config, role=role)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    watchdog = asyncio.ensure_future(_supervisor_gone(role, stop)) if role is not None else None
    await stop.wait()
    log.info("shutting down%s", f" ({received[0]})" if received else "")
    if watchdog is not None:
        watchdog.cancel()
    await server.stop()
    if role is not None and os.getppid() != role.supervisor_pid:
        shutil.rmtree(role.directory, ignore_errors=True)  # the supervisor cannot clean up any more


def run(config: HostConfig, role: WorkerRole | None = None) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency, but the host runs without it
        pass
    try:
        asyncio.run(serve_forever(config, role))
    except StartupRefused as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None

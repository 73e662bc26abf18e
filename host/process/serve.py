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
import gc
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from abi.imports import logging_time
from host.api.delivery import AppChannel, AppDelivery
from host.app import App, Status
from host.config import HostConfig, split_address
from host.functions.sources import watched_folders
from host.http.admin.app import create_admin_app
from host.http.admin.layotto import LayottoAdmin
from host.http.admin.peers import Peers
from host.http.functions import create_function_server
from host.http.protocol import HttpServer
from host.http.router import RoutedListener
from host.process.cluster import SERVING, STARTING, WorkerRole
from host.process.safety import StartupRefused, check_admin_exposure

if TYPE_CHECKING:
    # Imported when configured (issue 16): grpc (~20-40 ms) for a gRPC listener or app callback;
    # watchdog (~6 ms) for the functions watcher (server.watch).
    from host.functions.watcher import FunctionWatcher
    from host.grpc.server import GrpcServer

log = logging.getLogger(__name__)

# A worker whose supervisor vanished (SIGKILL) shuts itself down; each check also beats the worker's
# heartbeat, which the supervisor reads (server.worker_heartbeat_timeout_ms).
SUPERVISOR_CHECK_S = 0.5


# --- runtime API listeners (host/grpc, host/http/dapr): started after the function listener, stopped first ---
@dataclass
class ApiListeners:
    grpc: GrpcServer | None = None
    dapr_http: RoutedListener | None = None
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
            from host.http.dapr import create_dapr_app

            self.dapr_http = create_dapr_app(app.api, ready=lambda: app.status == Status.UP,
                                             api_token=server.api_token, max_body_bytes=server.api_max_message_bytes,
                                             grace_s=server.shutdown_grace_ms / 1000)
            self.dapr_http_port = await self.dapr_http.start(*split_address(server.dapr_http),
                                                             reuse_port=role is not None)
            log.info("Dapr HTTP API listening on %s (port %d)", server.dapr_http, self.dapr_http_port)
        channels: list[AppChannel] = []
        if server.app_callback:
            from host.grpc.appcallback import GrpcAppChannel

            channels.append(GrpcAppChannel(server.app_callback, server.app_callback_protocol))
        if server.app_http:
            from host.http.dapr.app_channel import HttpAppChannel

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

        async def stop_dapr_http(listener: RoutedListener) -> None:
            await listener.close(grace_s)
            log.info("shutdown: Dapr HTTP API stopped")

        await asyncio.gather(*([stop_grpc(self.grpc)] if self.grpc else []),
                             *([stop_dapr_http(self.dapr_http)] if self.dapr_http else []))
        self.grpc = self.dapr_http = None
        app.api.close()
# --- end runtime API listeners ---


@dataclass
class RunningServer:
    app: App
    admins: list[RoutedListener]  # admin listener(s)
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
        for admin in reversed(self.admins):
            await admin.close()
        log.info("shutdown: complete in %.2fs", time.monotonic() - started)


async def _serve_admin(admin: RoutedListener, address: str, started: list[RoutedListener], *,
                       reuse_port: bool = False) -> int:
    """Bind an admin listener (kept in `started` once it listens); the bound port."""
    port = await admin.start(*split_address(address), reuse_port=reuse_port)
    started.append(admin)
    return port


async def start_server(config: HostConfig, *, engine_backend: str | None = None,
                       role: WorkerRole | None = None) -> RunningServer:
    """Raises StartupRefused for an unsafe configuration, OSError for an address that is taken."""
    check_admin_exposure(config.server)
    logging_time.configure(config.server.guest_log_lines_per_second)
    app = App(config, engine_backend=engine_backend)
    admins: list[RoutedListener] = []
    api = ApiListeners()
    listener: HttpServer | None = None
    try:
        if role is None:
            admin_port = await _serve_admin(create_admin_app(app), config.server.admin, admins)
        else:
            private_port = await _serve_admin(create_admin_app(app, worker=role), "127.0.0.1:0", admins)
            role.register(STARTING, private_port)
            admin_port = private_port
            if role.primary:
                peers = Peers(role, config.server.admin_token)
                admin_port = await _serve_admin(create_admin_app(app, worker=role, peers=peers),
                                                config.server.admin, admins, reuse_port=True)
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
        for started in reversed(admins):
            await started.close()
        await app.stop()
        raise
    watcher = None
    if config.server.watch:
        from host.functions.watcher import FunctionWatcher

        watcher = FunctionWatcher(app.deployments, watched_folders(config), config.server.watch_debounce_ms / 1000)
        watcher.start()
    if role is not None:
        role.heartbeat()  # before serving: the supervisor checks heartbeats from then on
        role.register(SERVING, private_port, listen_port)
    log.info("functions listening on %s (port %d), admin on %s (port %d)", config.server.listen, listen_port,
             config.server.admin if role is None or role.primary else "127.0.0.1", admin_port)
    return RunningServer(app, admins, listener, listen_port, admin_port, watcher, role, api)


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


def run(config: HostConfig, role: WorkerRole | None = None, *, collector_paused: bool = False) -> None:
    """`collector_paused`: `python -m host` imported the host with the cyclic collector paused. What was
    imported lives as long as the process: it is frozen (no collection walks it again, issue 16) and
    the collector runs again for everything the host builds from here on."""
    if collector_paused:
        gc.freeze()
        gc.enable()
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

"""Upstreams that record what the host sent them: an aiohttp server (GET /seen) and a grpcio server
(trace.Probe/Seen, raw bytes), both on ephemeral loopback ports."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
from aiohttp import web


class HttpRecorder:
    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    async def start(self) -> int:
        async def seen(request: web.Request) -> web.Response:
            self.seen.append(dict(request.headers))
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/seen", seen)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


class GrpcRecorder:
    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.lock = threading.Lock()

        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            with self.lock:
                self.seen.append(dict(context.invocation_metadata()))
            return b"ok"

        handler = grpc.method_handlers_generic_handler("trace.Probe", {
            "Seen": grpc.unary_unary_rpc_method_handler(handle)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

"""The runtime gRPC server: Layotto's `Runtime` and Dapr's `Dapr` services on one grpc.aio server
(gRPC routes by full method name, so both live on one port, as in Layotto's multiple-API build).
It runs on the host's event loop, so InvokeService reaches the one call path without a hop.

Security (server config): `api_token` is Dapr's `dapr-api-token` rule, checked on unary and bidi
calls and answered UNAUTHENTICATED; server-streaming calls (SubscribeConfiguration*) are exempt,
because Dapr's Python SDK sends no token on them. `api_max_message_bytes` bounds each message both
ways. Stop is graceful: new calls are refused, calls in flight get the grace period, streams end.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from host.api import RuntimeApi
from host.config import split_address
from host.grpc.dapr import DaprRuntime
from host.grpc.layotto import LayottoRuntime
from host.grpc.proto.dapr.proto.runtime.v1 import dapr_pb2_grpc
from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2_grpc

log = logging.getLogger(__name__)

TOKEN_METADATA = "dapr-api-token"


class TokenCheck(grpc.aio.ServerInterceptor):
    """Dapr's API token on every call but server-streaming ones (see the module docstring)."""

    def __init__(self, token: str):
        self.token = token.encode()

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or (handler.response_streaming and not handler.request_streaming):
            return handler
        sent = next((value for key, value in (details.invocation_metadata or ()) if key == TOKEN_METADATA), None)
        if isinstance(sent, str) and hmac.compare_digest(sent.encode(), self.token):
            return handler
        message = ("missing api token in request metadata" if sent is None
                   else "authentication error: api token mismatch")
        log.info("gRPC %s refused: %s", details.method, message)
        return _refusal(handler, message)


def _refusal(handler: Any, message: str) -> Any:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


class GrpcServer:
    def __init__(self, api: RuntimeApi, *, api_token: str | None, max_message_bytes: int, reuse_port: bool = False):
        """`reuse_port`: the workers of `serve --workers N` share the port; otherwise a second host
        on the same port fails to start instead of silently sharing it."""
        api = api.for_api("grpc")  # runtime-call metrics under api="grpc" (host/api/__init__.py)
        interceptors = [TokenCheck(api_token)] if api_token else []
        self.server = grpc.aio.server(interceptors=interceptors, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", int(reuse_port)),
        ])
        runtime_pb2_grpc.add_RuntimeServicer_to_server(LayottoRuntime(api), self.server)
        dapr_pb2_grpc.add_DaprServicer_to_server(DaprRuntime(api), self.server)
        self.port = 0

    async def start(self, address: str) -> int:
        """Binds `address` (HOST:PORT; port 0 picks one) and starts serving; returns the port."""
        host, port = split_address(address)
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self.port = self.server.add_insecure_port(target)
        except RuntimeError as error:
            raise OSError(f"gRPC: cannot listen on {address}: {error}") from None
        if not self.port:
            raise OSError(f"gRPC: cannot listen on {address}")
        await self.server.start()
        return self.port

    async def stop(self, grace_s: float) -> None:
        """Refuses new calls, gives calls in flight `grace_s`, then cancels what is left."""
        await self.server.stop(grace_s)

"""`proxy_invoke_service` in-process: the target function runs in the caller's thread.

Layotto sends an HTTP request to its own listener (header `id`, path = method, body = param,
3 s timeout, only 200 succeeds); here the same request goes through the one call path directly.
A call cycle fails at once instead of waiting, and the depth of nested calls is bounded
(host/functions/dispatch.py `call_blocking`).
"""

from __future__ import annotations

from abi import HttpRequest
from abi.services import ServiceError, UnknownName
from host.functions.dispatch import Dispatcher, DispatchError, FunctionNotFound
from host.tracing.current import child_headers


class InProcessInvoker:
    def __init__(self, dispatcher: Dispatcher):
        self.dispatcher = dispatcher

    def invoke(self, function_id: str, method: str, param: bytes) -> bytes:
        path = method if method.startswith("/") else "/" + method
        # The target runs in the caller's trace: its traceparent names the caller's span as parent.
        request = HttpRequest.build("GET", path, [("id", function_id), *child_headers()], param,
                                    authority="localhost", lowered=True)
        try:
            response = self.dispatcher.call_blocking(function_id, request)
        except FunctionNotFound as error:
            raise UnknownName(str(error)) from None
        except DispatchError as error:
            raise ServiceError(str(error)) from None
        if not 200 <= response.status < 300:
            raise ServiceError(f"function {function_id!r} answered HTTP {response.status}")
        return response.body

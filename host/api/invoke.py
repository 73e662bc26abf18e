"""InvokeService (Layotto's and Dapr's; Dapr's HTTP `/v1.0/invoke/{id}/method/...`) to functions by
id, through the one call path (host/functions/dispatch.py): the same request a client of the
function listener would send, with header `id`.

The request becomes an HTTP request: `message.method` is the path, the `http_extension` verb the
method (POST when none, as Dapr's HTTP channel does) and its querystring the query, `data.value` the
body, `content_type` its Content-Type, and the caller's gRPC metadata its headers. A 2xx answer is
the InvokeResponse; any other status is an error with the code Dapr gives it (its
`CodeFromHTTPStatus`: 404 NotFound, 400 Internal, 500 Unknown...). A call the host could not
make (unknown id, no instance in time, deadline) has the dispatcher's meaning as a code.

Runtime-call metrics: `forward` (every transport's invoke passes it) observes capability "invoke",
component = the function id: "ok" when the function answered, whatever its status (the status is
in the function's own request metrics); an id nothing serves is `unknown_component`.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from time import perf_counter
from typing import TYPE_CHECKING

from abi import HttpRequest, HttpResponse
from abi.maps import first_value
from host.api.errors import ApiError, Code, invalid
from host.functions.dispatch import (
    CallCycle,
    Dispatcher,
    DispatchError,
    FunctionNotFound,
    FunctionUnavailable,
    GuestFailed,
    RequestTimedOut,
)
from host.lazy import lazy_module
from host.metrics import NO_OBSERVER, CallObserver
from host.tracing.current import child_headers

if TYPE_CHECKING:
    from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2 as pb
else:  # protobuf and the generated messages (~10-20 ms to import) at the first runtime API call (issue 16)
    pb = lazy_module("host.grpc.proto.spec.proto.runtime.v1.runtime_pb2")

# Dapr's pkg/messaging/v1 CodeFromHTTPStatus (2xx is OK; anything not listed is Unknown).
_FROM_HTTP = {408: Code.CANCELLED, 500: Code.UNKNOWN, 400: Code.INTERNAL, 504: Code.DEADLINE_EXCEEDED,
              404: Code.NOT_FOUND, 409: Code.ALREADY_EXISTS, 403: Code.PERMISSION_DENIED, 401: Code.UNAUTHENTICATED,
              429: Code.RESOURCE_EXHAUSTED, 501: Code.UNIMPLEMENTED, 503: Code.UNAVAILABLE}
# Metadata that describes the gRPC call itself, not the application's request.
_NOT_FORWARDED = frozenset(("content-type", "dapr-api-token", "te", "host", "id", "user-agent", "content-length",
                            "accept-encoding", "traceparent-bin"))


def code_from_http(status: int) -> Code:
    return Code.OK if 200 <= status < 300 else _FROM_HTTP.get(status, Code.UNKNOWN)


def dispatch_error(error: DispatchError) -> ApiError:
    outcome = None
    if isinstance(error, FunctionNotFound):
        code, outcome = Code.NOT_FOUND, "unknown_component"
    elif isinstance(error, FunctionUnavailable):
        code = Code.UNAVAILABLE
    elif isinstance(error, RequestTimedOut) or (isinstance(error, GuestFailed) and error.status == 504):
        code = Code.DEADLINE_EXCEEDED
    elif isinstance(error, CallCycle):
        code = Code.RESOURCE_EXHAUSTED
    else:
        code = Code.INTERNAL
    return ApiError(code, f"failed to invoke, id: {error.function_id!r}: {error}", error_code="ERR_DIRECT_INVOKE",
                    http_status=error.status, outcome=outcome)


def forwarded(metadata: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(key.lower(), value) for key, value in metadata
            if not key.startswith((":", "grpc-")) and not key.endswith("-bin") and key.lower() not in _NOT_FORWARDED]


class InvokeApi:
    def __init__(self, dispatcher: Dispatcher, observer: CallObserver = NO_OBSERVER):
        self.dispatcher = dispatcher
        self.observer = observer

    @staticmethod
    def http_request(request: pb.InvokeServiceRequest, metadata: Sequence[tuple[str, str]] = ()) -> HttpRequest:
        if not request.id:
            raise invalid("InvokeServiceRequest.id is empty: it names the function to call",
                          error_code="ERR_DIRECT_INVOKE")
        message = request.message
        extension = message.http_extension
        verb = pb.HTTPExtension.Verb.Name(extension.verb) if extension.verb in pb.HTTPExtension.Verb.values() else ""
        if not verb:
            raise invalid(f"message.http_extension.verb {extension.verb} is not an HTTP verb")
        method = "POST" if verb == "NONE" else verb
        path = message.method if message.method.startswith("/") else "/" + message.method
        if extension.querystring:
            path += "?" + extension.querystring.lstrip("?")
        headers = [("id", request.id), *forwarded(metadata)]
        if message.content_type:
            headers.append(("content-type", message.content_type))
        return HttpRequest.build(method, path, headers, bytes(message.data.value), authority="localhost",
                                 lowered=True)

    @staticmethod
    def response(function_id: str, answer: HttpResponse) -> pb.InvokeResponse:
        if not 200 <= answer.status < 300:
            reason = HTTPStatus(answer.status).phrase if answer.status in HTTPStatus._value2member_map_ else ""
            detail = answer.body[:200].decode("utf-8", "replace")
            raise ApiError(code_from_http(answer.status),
                           f"function {function_id!r} answered HTTP {answer.status} {reason}: {detail}".rstrip(": "),
                           error_code="ERR_DIRECT_INVOKE", http_status=answer.status)
        response = pb.InvokeResponse(content_type=first_value(answer.headers, "content-type") or "")
        response.data.value = answer.body
        return response

    async def forward(self, function_id: str, request: HttpRequest) -> HttpResponse:
        """Runs `request` on the function `function_id` from the event loop; the answer as it is."""
        started = perf_counter()
        try:
            version = self.dispatcher.find(function_id)
            answer = self.dispatcher.try_now(version, request)
            if answer is None:
                answer = await self.dispatcher.call(version, request)
        except DispatchError as error:
            failure = dispatch_error(error)
            self.observer.observe("invoke", function_id, failure, perf_counter() - started)
            raise failure from None
        self.observer.observe("invoke", function_id, None, perf_counter() - started)
        return answer

    async def invoke(self, request: pb.InvokeServiceRequest,
                     metadata: Sequence[tuple[str, str]] = ()) -> pb.InvokeResponse:
        """From the event loop (gRPC servicers)."""
        answer = await self.forward(request.id, self.http_request(request, metadata))
        return self.response(request.id, answer)

    def invoke_blocking(self, request: pb.InvokeServiceRequest) -> pb.InvokeResponse:
        """From a guest thread (the foreign-function route): a nested call, bounded like
        `proxy_invoke_service` (invoke timeout, call depth, cycles)."""
        http_request = self.http_request(request, child_headers())  # in the calling request's trace (issue 14)
        try:
            answer = self.dispatcher.call_blocking(request.id, http_request)
        except DispatchError as error:
            raise dispatch_error(error) from None
        return self.response(request.id, answer)

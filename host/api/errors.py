"""The one error the runtime API raises: a gRPC status code and a message (plus Dapr's HTTP status
and error code where they do not follow from the gRPC code).

Why one type: the same call is served over Layotto's and Dapr's gRPC APIs, Dapr's HTTP API and the
foreign-function route of guests; each maps this one error once (host/grpc/status.py, the Dapr HTTP
app, host/api/foreign.py) instead of knowing every component error. The codes are gRPC's numbers,
defined here so this package does not depend on grpc.
"""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """gRPC status codes (google.rpc.Code), by number."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# The runtime-call metrics' outcome of a code (host/metrics/runtime.py); anything else is "error".
_OUTCOMES = {Code.ABORTED: "conflict", Code.INVALID_ARGUMENT: "bad_request", Code.OUT_OF_RANGE: "bad_request",
             Code.UNIMPLEMENTED: "bad_request"}


class ApiError(Exception):
    """A runtime API call failed. `error_code` is Dapr's HTTP `errorCode` (e.g.
    `ERR_STATE_STORE_NOT_FOUND`); `http_status` overrides the HTTP status derived from `code` where
    Dapr's differs (a state store that is not configured is 500 over HTTP, FailedPrecondition over gRPC).
    `outcome` is the runtime-call metrics' word for it, when the code alone does not say (an unknown
    component is InvalidArgument, as is a bad argument)."""

    def __init__(self, code: Code, message: str, *, error_code: str = "", http_status: int | None = None,
                 outcome: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.error_code = error_code
        self.http_status = http_status
        self.outcome = outcome or _OUTCOMES.get(code, "error")

    def __repr__(self) -> str:
        return f"ApiError({self.code.name}, {self.message!r})"


def invalid(message: str, error_code: str = "ERR_MALFORMED_REQUEST") -> ApiError:
    return ApiError(Code.INVALID_ARGUMENT, message, error_code=error_code)


def unsupported(field: str, detail: str = "") -> ApiError:
    """A request field or option this host does not implement: refused, never silently ignored."""
    suffix = f": {detail}" if detail else ""
    return ApiError(Code.INVALID_ARGUMENT, f"{field} is not supported by this host{suffix}",
                    error_code="ERR_MALFORMED_REQUEST")

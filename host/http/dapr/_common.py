"""What every Dapr HTTP route shares: Dapr's error body (`{"errorCode", "message"}`) and statuses,
request metadata from `metadata.<key>` query parameters, and JSON bodies read with errors that say
what is wrong."""

from __future__ import annotations

import json
from typing import Any

from host.api.errors import ApiError, Code, invalid
from host.http.protocol import Response
from host.http.router import RoutedRequest, json_response

# The HTTP status of an API error whose own `http_status` is not set (Dapr's predefined errors).
HTTP_STATUS = {Code.INVALID_ARGUMENT: 400, Code.NOT_FOUND: 404, Code.ABORTED: 409, Code.ALREADY_EXISTS: 409,
               Code.FAILED_PRECONDITION: 400, Code.PERMISSION_DENIED: 403, Code.UNAUTHENTICATED: 401,
               Code.RESOURCE_EXHAUSTED: 429, Code.UNIMPLEMENTED: 501, Code.UNAVAILABLE: 503,
               Code.DEADLINE_EXCEEDED: 504, Code.CANCELLED: 408, Code.OUT_OF_RANGE: 400}


def error_response(status: int, error_code: str, message: str) -> Response:
    return json_response({"errorCode": error_code, "message": message}, status=status)


def api_error_response(error: ApiError) -> Response:
    status = error.http_status or HTTP_STATUS.get(error.code, 500)
    return error_response(status, error.error_code or f"ERR_{error.code.name}", error.message)


def metadata(request: RoutedRequest) -> dict[str, str]:
    """Dapr's `?metadata.<key>=<value>` query parameters."""
    return {name[len("metadata."):]: value for name, value in request.query.items() if name.startswith("metadata.")}


def json_body(request: RoutedRequest) -> Any:
    raw = request.body
    try:
        return json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError) as error:
        raise invalid(f"the request body is not JSON: {error}") from None


def expect(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise invalid(f"{what} must be a JSON {_JSON_NAMES.get(names, names)}, got {json.dumps(value)[:80]}")
    return value


_JSON_NAMES = {"dict": "object", "list": "array", "str": "string", "int": "integer", "bool": "boolean"}


def string_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    expect(value, dict, what)
    for key, item in value.items():
        expect(item, str, f"{what}[{key!r}]")
    return dict(value)


def json_bytes(value: Any) -> bytes:
    """A JSON value as Dapr stores it (encoded compactly: a string keeps its quotes)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

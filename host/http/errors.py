"""JSON error answers: every failure names what went wrong (and the function, when there is one)."""

from __future__ import annotations

import json

from aiohttp import web


def error_body(message: str, function: str | None = None) -> bytes:
    """`{"error": message, "function": function}` (no "function" when there is none)."""
    payload = {"error": message}
    if function is not None:
        payload["function"] = function
    return json.dumps(payload).encode()


def json_error(status: int, message: str, *, function: str | None = None,
               headers: dict[str, str] | None = None) -> web.Response:
    """The same answer as an aiohttp response (the admin listener)."""
    return web.Response(status=status, body=error_body(message, function), content_type="application/json",
                        headers=headers)

"""JSON error answers: every failure names what went wrong (and the function, when there is one)."""

from __future__ import annotations

import json


def error_body(message: str, function: str | None = None) -> bytes:
    """`{"error": message, "function": function}` (no "function" when there is none)."""
    payload = {"error": message}
    if function is not None:
        payload["function"] = function
    return json.dumps(payload).encode()

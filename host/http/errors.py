"""JSON error answers: every failure names what went wrong (and the function, when there is one)."""

from __future__ import annotations

import json
from typing import Optional

from aiohttp import web


def json_error(status: int, message: str, *, function: Optional[str] = None,
               headers: Optional[dict[str, str]] = None) -> web.Response:
    payload = {"error": message}
    if function is not None:
        payload["function"] = function
    return web.Response(status=status, body=json.dumps(payload).encode(), content_type="application/json",
                        headers=headers)

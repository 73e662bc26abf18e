"""Worker 0's view of the other workers: their private admin listeners, queried over loopback HTTP.

Queries (health, listings) use a short timeout, so one stuck worker cannot hang the public admin
API; applying a Layotto admin call waits longer (a deploy compiles). A worker that is not
registered (starting, or being restarted by the supervisor) or does not answer is reported as
such, never skipped silently.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from host.lazy import lazy_module
from host.process.cluster import WorkerRole

if TYPE_CHECKING:
    import aiohttp
else:  # only worker 0 of `serve --workers N` asks its peers: a single host never imports aiohttp's client
    aiohttp = lazy_module("aiohttp")

QUERY_TIMEOUT_S = 3.0
APPLY_TIMEOUT_S = 120.0


@dataclass
class PeerAnswer:
    index: int
    pid: int | None
    status: int | None = None  # HTTP status; None when the worker could not be asked
    body: Any = None  # the parsed JSON answer (or None)
    error: str | None = None  # why there is no answer
    registered: bool = True

    def error_text(self) -> str:
        """The reason a call failed on this worker, as Layotto's admin API words it."""
        if self.error:
            return self.error
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), str):
            return self.body["error"]
        return f"HTTP {self.status}"


class Peers:
    def __init__(self, role: WorkerRole, token: str | None):
        self.role = role
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(self, path: str) -> list[PeerAnswer]:
        return await self._all("GET", path, None, QUERY_TIMEOUT_S)

    async def post(self, path: str, body: bytes) -> list[PeerAnswer]:
        return await self._all("POST", path, body, APPLY_TIMEOUT_S)

    async def _all(self, method: str, path: str, body: bytes | None, timeout: float) -> list[PeerAnswer]:
        calls = [self._one(index, registration, method, path, body, timeout)
                 for index, registration in self.role.peers()]
        return list(await asyncio.gather(*calls))

    async def _one(self, index: int, registration: dict | None, method: str, path: str,
                   body: bytes | None, timeout: float) -> PeerAnswer:
        if registration is None or not registration.get("admin_port"):
            return PeerAnswer(index, None, error=f"worker {index} is not running (starting or restarting)",
                              registered=False)
        answer = PeerAnswer(index, registration.get("pid"))
        url = f"http://127.0.0.1:{registration['admin_port']}{path}"
        headers = {"Content-Type": "application/json"} if body is not None else None
        try:
            async with self._client().request(method, url, data=body, headers=headers,
                                              timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                answer.status = response.status
                text = await response.text()
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            answer.error = f"worker {index} did not answer: {error!r}"
            return answer
        if text:
            try:
                answer.body = json.loads(text)
            except ValueError:
                answer.body = text
        return answer

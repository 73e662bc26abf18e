"""Logging for operators (issue 14): `--log-format json` (one object per line with the function
id, request id and trace id of the request a line was logged for), guest logs carrying their
function id, debug logging without the file watcher's event chatter, and an in-memory ring of
recent records per function for `GET /functions/{id}/logs` (`wasm-faas logs ID -f`).

How a line learns its request: the call path (host/functions/dispatch.py `_run`) sets
`REQUEST_SCOPE` to (function id, request, sequence number) around each guest run, in the thread
that runs it. That costs one context-variable set and reset per request; the request id and the
trace id are only worked out when a line is actually written.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import datetime as dt
import itertools
import json
import logging
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TextIO

from host.tracing.context import context_of

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

LogFormat = Literal["text", "json"]
# Loggers that narrate every file-system event; kept at WARNING unless `--log-level trace`.
CHATTY_LOGGERS = ("watchdog",)
GUEST_LOGGER = "wasm.guest"
_GUEST_FORMAT = "[%s] %s"  # abi/vm.py guest_log: (function id, the guest's message)
_PROCESS_TAG = secrets.token_hex(3)  # request ids stay distinct across workers and hosts


class _Request(Protocol):
    def header(self, name: str) -> str | None: ...


REQUEST_SCOPE: contextvars.ContextVar[tuple[str, _Request, int] | None] = contextvars.ContextVar(
    "wasm_faas_request", default=None)
next_request_number = itertools.count(1).__next__  # thread-safe (one C call under the GIL)


def _trace_ids(request: _Request) -> tuple[str, str]:
    """(trace id, span id) of the request's trace context (host/tracing): the caller's trace when it
    sent a valid traceparent, else the one this request started (a root request, a delivery)."""
    context = context_of(request)  # type: ignore[arg-type]  # the call path's requests are HttpRequests
    return context.trace_id, context.span_id


def request_fields(record: logging.LogRecord) -> dict[str, str]:
    """function, request_id, trace_id, span_id of the request `record` was logged under (if any).
    A guest's line names its function even outside a request (proxy_on_vm_start, ticks)."""
    fields: dict[str, str] = {}
    scope = REQUEST_SCOPE.get()
    if scope is not None:
        function_id, request, number = scope
        fields["function"] = function_id
        fields["request_id"] = request.header("x-request-id") or f"{_PROCESS_TAG}-{number:x}"
        trace_id, span_id = _trace_ids(request)
        if trace_id:
            fields["trace_id"], fields["span_id"] = trace_id, span_id
    guest = _guest_parts(record)
    if guest is not None:
        fields["function"] = guest[0]
    return fields


def _guest_parts(record: logging.LogRecord) -> tuple[str, str] | None:
    """(function id, message) of a guest's proxy_log line, else None."""
    args = record.args
    if record.name == GUEST_LOGGER and record.msg == _GUEST_FORMAT and isinstance(args, tuple) and len(args) == 2:
        return str(args[0]), str(args[1])
    return None


def message_of(record: logging.LogRecord) -> str:
    """The line's text; for a guest line, the guest's own text (its function id is a field)."""
    guest = _guest_parts(record)
    return guest[1].rstrip("\r\n") if guest is not None else record.getMessage()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the request's fields,
    `static` fields (worker index, pid) and `exception` when there is one."""

    def __init__(self, static: dict[str, Any] | None = None):
        super().__init__()
        self.static = static or {}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "message": message_of(record),
            **self.static, **request_fields(record)}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


@dataclass(frozen=True, slots=True)
class LogLine:
    number: int
    time: float
    level: str
    logger: str
    function: str
    message: str
    request_id: str = ""
    trace_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.number, "time": self.time, "level": self.level, "logger": self.logger,
                "function": self.function, "message": self.message, "request_id": self.request_id,
                "trace_id": self.trace_id}


class LogBuffer(logging.Handler):
    """The last `capacity` lines that belong to a function, readable by number (a cursor): what the
    admin API's `GET /functions/{id}/logs` serves. Lines of no function are not kept."""

    def __init__(self, capacity: int = 4096):
        super().__init__(level=logging.NOTSET)
        self._lines: collections.deque[LogLine] = collections.deque(maxlen=capacity)
        self._number = 0
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = request_fields(record)
            function = fields.get("function")
            if not function:
                return
            message = message_of(record)
            if record.exc_info and record.exc_info[1] is not None:
                message = f"{message}: {record.exc_info[1]!r}"
            with self._guard:
                self._number += 1
                self._lines.append(LogLine(self._number, record.created, record.levelname.lower(), record.name,
                                           function, message, fields.get("request_id", ""),
                                           fields.get("trace_id", "")))
        except Exception:  # noqa: BLE001 - logging must never break the caller
            self.handleError(record)

    def since(self, function_id: str, after: int, limit: int = 500) -> tuple[list[LogLine], int]:
        """Lines of `function_id` numbered above `after` (oldest first, at most `limit`), and the
        cursor to pass next time."""
        with self._guard:
            lines = [line for line in self._lines if line.number > after and line.function == function_id]
            last = self._number
        if len(lines) > limit:
            lines = lines[:limit]
            last = lines[-1].number
        return lines, last


_BUFFER: LogBuffer | None = None
_BUFFER_LOCK = threading.Lock()


def log_buffer() -> LogBuffer:
    """The process's ring of function log lines, attached to the root logger on first use."""
    global _BUFFER
    with _BUFFER_LOCK:
        if _BUFFER is None:
            _BUFFER = LogBuffer()
            logging.getLogger().addHandler(_BUFFER)
        return _BUFFER


def level_number(level: str) -> int:
    return TRACE if level.lower() == "trace" else int(getattr(logging, level.upper()))


def configure_logging(level: str = "info", log_format: LogFormat = "text", *, worker: int | None = None,
                      stream: TextIO | None = None) -> None:
    """Root logging for a host process (replaces earlier handlers; the log buffer stays)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if log_format == "json":
        static: dict[str, Any] = {"pid": os.getpid()}
        if worker is not None:
            static["worker"] = worker
        handler.setFormatter(JsonFormatter(static))
    else:
        prefix = f"[worker {worker} pid {os.getpid()}] " if worker is not None else ""
        formatter = logging.Formatter(f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s")
        formatter.converter = time.localtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if not isinstance(old, LogBuffer):
            root.removeHandler(old)
    root.addHandler(handler)
    numeric = level_number(level)
    root.setLevel(numeric)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if numeric <= TRACE else max(numeric, logging.WARNING))
    log_buffer()


# -- following a function's lines (GET /functions/{id}/logs) -------------------------------------
FOLLOW_POLL_S = 0.2
MAX_WAIT_S = 25.0


async def lines_after(function_id: str, after: int, wait_s: float = 0.0) -> tuple[list[LogLine], int]:
    """This process's lines of `function_id` after cursor `after`; with `wait_s`, wait up to that
    long for the first one (a long poll: `wasm-faas logs ID -f` asks again with the new cursor)."""
    buffer = log_buffer()
    deadline = time.monotonic() + min(max(wait_s, 0.0), MAX_WAIT_S)
    while True:
        lines, cursor = buffer.since(function_id, after)
        if lines or time.monotonic() >= deadline:
            return lines, cursor
        await asyncio.sleep(FOLLOW_POLL_S)


def parse_cursor(text: str) -> dict[int, int]:
    """`"7"` (one process) or `"0:7,1:3"` (per worker) -> {worker: line number}; junk counts as 0."""
    cursor: dict[int, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        worker, _, number = part.rpartition(":")
        try:
            cursor[int(worker) if worker else -1] = int(number)
        except ValueError:
            continue
    return cursor


def format_cursor(cursor: dict[int, int]) -> str:
    return ",".join(f"{worker}:{number}" for worker, number in sorted(cursor.items()))

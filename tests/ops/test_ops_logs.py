"""Logs (issue 14): `--log-format json` writes one JSON object per line, and the lines logged for a
request carry its function id, request id and the trace id of its `traceparent`; guest lines name
their function even outside requests; `--log-level debug` is free of the file watcher's events;
`GET /functions/{id}/logs` serves a function's lines after a cursor."""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
from pathlib import Path

from abi import HttpRequest
from host.logs import REQUEST_SCOPE, JsonFormatter, LogBuffer, configure_logging, parse_cursor
from tests.guest_wat import WatGuest, write_guest
from tests.host_process import HostProcess, free_ports, get_json, request, wait_until, write_host_config

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


def logging_guest(folder: Path, name: str) -> None:
    """Logs `started` (debug) when its VM starts and `handled` (info) on every request."""
    g = WatGuest()
    log = lambda level, text: g.call("proxy_log", level, g.s(text))  # noqa: E731
    write_guest(folder, name, g.module(
        proxy_on_vm_start=f"(drop {log(1, 'started')}) (i32.const 1)",
        proxy_on_request_headers=f"(drop {log(2, 'handled')}) (call $emit (i32.const 1)) (call $flush) (i32.const 0)"))


def test_json_lines_of_a_real_host_carry_function_request_and_trace_ids(tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    logging_guest(folder, "chatty")
    listen, admin = free_ports(2)
    config = write_host_config(tmp_path, folder, listen, admin, server="watch_debounce_ms = 50",
                               rest="[function_defaults]\ninstance_num = 1\n")
    process = HostProcess(tmp_path, "--config", str(config), "--log-format", "json", "--log-level", "debug")
    try:
        process.wait_ready(admin)
        traced = {"id": "chatty", "traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01", "x-request-id": "req-42"}
        assert request(f"http://127.0.0.1:{listen}/", headers=traced)[0] == 200
        assert request(f"http://127.0.0.1:{listen}/", headers={"id": "chatty"})[0] == 200
        shutil.copy(folder / "chatty.wat", folder / "second.wat")  # the watcher deploys it (debug noise?)
        process.wait_for_log(r"second\.wat")
        wait_until(lambda: get_json(f"http://127.0.0.1:{admin}/functions/second")[0] == 200, 10, "second deployed")
        status, tail = get_json(f"http://127.0.0.1:{admin}/functions/chatty/logs")
        status_after, after = get_json(f"http://127.0.0.1:{admin}/functions/chatty/logs?after={tail['cursor']}")
    finally:
        process.signal()
        process.wait(30)
        process.close()
    lines = [json.loads(line) for line in process.log().splitlines() if line.strip()]  # every line is JSON
    assert all({"time", "level", "logger", "message", "pid"} <= set(line) for line in lines)
    handled = [line for line in lines if line["logger"] == "wasm.guest" and line["message"] == "handled"]
    assert len(handled) == 2
    assert handled[0]["function"] == "chatty" and handled[0]["request_id"] == "req-42"
    # The caller's trace; the span is the request's own (host/tracing), a child of the caller's SPAN_ID.
    assert handled[0]["trace_id"] == TRACE_ID and re.fullmatch("[0-9a-f]{16}", handled[0]["span_id"])
    assert handled[0]["span_id"] != SPAN_ID
    # A request without a traceparent logs the trace it started.
    assert handled[1]["function"] == "chatty" and re.fullmatch("[0-9a-f]{32}", handled[1]["trace_id"])
    assert handled[1]["trace_id"] != TRACE_ID
    assert handled[1]["request_id"] != handled[0]["request_id"]
    started = [line for line in lines if line["logger"] == "wasm.guest" and line["message"] == "started"]
    assert {line["function"] for line in started} == {"chatty", "second"}  # outside any request
    assert {line["level"] for line in started} == {"debug"}  # debug is on...
    assert not [line for line in lines if line["logger"].startswith("watchdog")]  # ...without watcher chatter
    # The admin API's view of the function's lines, and its cursor.
    assert status == 200 and tail["deployed"] is True
    assert [line["message"] for line in tail["lines"]] == ["started", "handled", "handled"]
    assert tail["lines"][1]["request_id"] == "req-42" and tail["lines"][1]["trace_id"] == TRACE_ID
    assert status_after == 200 and after["lines"] == []


def test_json_formatter_and_log_buffer_in_process() -> None:
    traced = HttpRequest.build("GET", "/", [("traceparent", f"00-{TRACE_ID}-{SPAN_ID}-00")])
    stream = io.StringIO()
    logger = logging.getLogger("tests.ops.logs")
    buffer = LogBuffer(capacity=3)
    configure_logging("info", "json", worker=3, stream=stream)
    logging.getLogger().addHandler(buffer)
    try:
        scope = REQUEST_SCOPE.set(("fn", traced, 255))
        try:
            logger.warning("inside %s", "a request")
        finally:
            REQUEST_SCOPE.reset(scope)
        logger.warning("outside")
        for index in range(4):
            logging.getLogger("wasm.guest").info("[%s] %s", "other", f"guest {index}\n")
    finally:
        logging.getLogger().removeHandler(buffer)
        configure_logging("warning", "text")
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines()[:2])
    assert inside["message"] == "inside a request" and inside["level"] == "warning" and inside["worker"] == 3
    assert inside["function"] == "fn" and inside["trace_id"] == TRACE_ID and inside["request_id"].endswith("-ff")
    assert "function" not in outside and outside["logger"] == "tests.ops.logs"
    lines, cursor = buffer.since("other", 0)
    assert [line.message for line in lines] == ["guest 1", "guest 2", "guest 3"]  # capacity 3, newest kept
    assert buffer.since("other", cursor) == ([], cursor)
    assert buffer.since("fn", 0)[0] == []  # fell out of the ring
    assert parse_cursor("0:7,1:3") == {0: 7, 1: 3} and parse_cursor("12") == {-1: 12}
    assert isinstance(JsonFormatter().format(logging.makeLogRecord({"msg": "x"})), str)

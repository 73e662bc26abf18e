"""gRPC calls to upstreams: proxy_grpc_call, proxy_grpc_stream, proxy_grpc_send, proxy_grpc_cancel and
proxy_grpc_close, with the proxy_on_grpc_receive* and proxy_on_grpc_close callbacks.

A real grpcio server runs in the test on an ephemeral loopback port with generic handlers (raw
bytes, no protobuf): `echo.Echo/Say` (unary), `echo.Echo/Chat` (bidirectional), `echo.Echo/Slow`
and `echo.Echo/Fail`. WAT guests call it while their stream is paused, record what every callback
saw (messages through buffer 5, metadata through maps 4 and 5, the status through the close code
and proxy_get_status), resume the stream, and answer that record through real HTTP.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from abi import all_host_functions
from abi.services import GrpcClose, GrpcMessage, ServiceError
from host.components.upstreams.grpc import GrpcUpstreams
from host.config import ConfigError, validate_config
from tests.conftest import functions_dir, make_config
from tests.guest_wat import RET, U32_A, U32_B, Results, WatGuest, parse_map, serialize_map, write_guest

OK, NOT_FOUND, BAD_ARGUMENT = 0, 1, 2
GRPC_OK, GRPC_NOT_FOUND, GRPC_DEADLINE_EXCEEDED, GRPC_UNAVAILABLE = 0, 5, 4, 14
ROOT_CONTEXT_ID = 1
INITIAL, MESSAGE, TRAILING, CLOSE = 1, 2, 3, 4  # tags of the guest's records
GRPC_IMPORTS = ("proxy_grpc_call", "proxy_grpc_stream", "proxy_grpc_send", "proxy_grpc_cancel", "proxy_grpc_close")


# -- the upstream ------------------------------------------------------------------------------------
def _say(request: bytes, context: grpc.ServicerContext) -> bytes:
    sent = dict(context.invocation_metadata())
    context.send_initial_metadata([("x-echo-from", str(sent.get("x-from", "-")))])
    context.set_trailing_metadata([("x-trail", "done")])
    return b"echo:" + request


def _chat(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    for message in requests:
        yield message.upper()


def _slow(request: bytes, context: grpc.ServicerContext) -> bytes:
    until = time.monotonic() + 2
    while context.is_active() and time.monotonic() < until:
        time.sleep(0.02)
    return b"late"


def _fail(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort(grpc.StatusCode.NOT_FOUND, "no such greeting")


class EchoServer:
    def __init__(self) -> None:
        self.chat_calls = 0
        self.chat_done = threading.Event()
        handler = grpc.method_handlers_generic_handler("echo.Echo", {
            "Say": grpc.unary_unary_rpc_method_handler(_say),
            "Chat": grpc.stream_stream_rpc_method_handler(self._chat),
            "Slow": grpc.unary_unary_rpc_method_handler(_slow),
            "Fail": grpc.unary_unary_rpc_method_handler(_fail),
        })
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _chat(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        self.chat_calls += 1
        if not context.add_callback(self.chat_done.set):  # when the stream ends, however it ends
            self.chat_done.set()  # it already has
        yield from _chat(requests, context)


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.server.stop(0)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the guests ---------------------------------------------------------------------------------------
TOKEN = f"(i32.load (i32.const {U32_A}))"  # where the call / stream token was written


def _recording_callbacks(g: WatGuest) -> dict[str, str]:
    """Every gRPC callback records what it saw; the close also answers and resumes the stream."""
    same_token = f"(i32.eq (local.get $token) {TOKEN})"
    return {
        "proxy_on_grpc_receive_initial_metadata": f"""
    (call $emit (i32.const {INITIAL})) (call $emit (local.get $headers)) (call $emit {same_token})
    (call $emit_ret {g.call("proxy_get_header_map_value", 4, g.s("x-echo-from"), RET)})""",
        "proxy_on_grpc_receive": f"""
    (call $emit (i32.const {MESSAGE})) (call $emit (local.get $size)) (call $emit {same_token})
    (call $emit_ret {g.call("proxy_get_buffer_bytes", 5, 0, 1000, RET)})""",
        "proxy_on_grpc_receive_trailing_metadata": f"""
    (call $emit (i32.const {TRAILING})) (call $emit (local.get $trailers)) (call $emit {same_token})
    (call $emit_ret {g.call("proxy_get_header_map_pairs", 5, RET)})""",
        "proxy_on_grpc_close": f"""
    (call $emit (i32.const {CLOSE})) (call $emit (local.get $ctx)) (call $emit {same_token})
    (call $emit (local.get $status))
    (call $emit {g.call("proxy_get_status", U32_B, RET)})
    (call $emit (i32.load (i32.const {U32_B})))
    (call $emit_bytes (i32.load (i32.const {RET[0]})) (i32.load (i32.const {RET[1]})))
    ;; outside their callbacks the message and metadata are gone; the call is over
    (call $emit {g.call("proxy_get_buffer_bytes", 5, 0, 1000, RET)})
    (call $emit {g.call("proxy_get_header_map_pairs", 4, RET)})
    (call $emit {g.call("proxy_grpc_close", "(local.get $token)")})
    (call $flush)
    (drop {g.call("proxy_continue_stream", 0)})""",
    }


def unary_guest(upstream: str, method: str, *, timeout_ms: int = 2000, message: str = "hi") -> str:
    g = WatGuest()
    metadata = serialize_map([("x-from", "wat")])
    request = f"""
    (call $emit {g.call("proxy_grpc_call", g.s(upstream), g.s("echo.Echo"), g.s(method), g.s(metadata),
                        g.s(message), timeout_ms, U32_A)})
    (call $emit {g.call("proxy_grpc_send", TOKEN, g.s("x"), 0)})
    (i32.const 1)"""  # Pause until proxy_on_grpc_close resumes the stream
    return g.module(proxy_on_request_headers=request, **_recording_callbacks(g))


def chat_guest(*, half_close_with: str) -> str:
    """Opens echo.Echo/Chat, sends two messages, and ends its side with end_of_stream or proxy_grpc_close."""
    g = WatGuest()
    second = 1 if half_close_with == "end_of_stream" else 0
    request = f"""
    (call $emit {g.call("proxy_grpc_stream", g.s("echo"), g.s("echo.Echo"), g.s("Chat"), (0, 0), U32_A)})
    (call $emit {g.call("proxy_grpc_send", TOKEN, g.s("one"), 0)})
    (call $emit {g.call("proxy_grpc_send", TOKEN, g.s("two"), second)})"""
    if half_close_with == "proxy_grpc_close":
        request += f"""
    (call $emit {g.call("proxy_grpc_close", TOKEN)})"""
    request += f"""
    (call $emit {g.call("proxy_grpc_send", TOKEN, g.s("three"), 0)})  ;; this side is closed: BadArgument
    (i32.const 1)"""
    return g.module(proxy_on_request_headers=request, **_recording_callbacks(g))


def read_events(r: Results) -> list[tuple]:
    events = []
    while not r.done():
        tag = r.u32()
        if tag == INITIAL:
            events.append(("initial", r.u32(), r.u32(), r.ret()))
        elif tag == MESSAGE:
            events.append(("message", r.u32(), r.u32(), r.ret()))
        elif tag == TRAILING:
            count, same = r.u32(), r.u32()
            status, raw = r.ret()
            events.append(("trailing", count, same, status, raw))
        else:
            assert tag == CLOSE, tag
            events.append(("close", *(r.u32() for _ in range(5)), r.bytes(), r.u32(), r.u32(), r.u32()))
    return events


async def serve_guests(serve, tmp_path: Path, grpc_upstreams: dict[str, str], **guests: str):
    folder = functions_dir(tmp_path)
    for name, wat in guests.items():
        write_guest(folder, name, wat)
    return await serve(make_config(tmp_path, folder, function_defaults={"instance_num": 1},
                                   grpc_upstreams=grpc_upstreams))


# -- unary calls -------------------------------------------------------------------------------------
async def test_unary_call_delivers_metadata_message_trailers_and_close(serve, tmp_path: Path,
                                                                       echo_server: EchoServer) -> None:
    client = await serve_guests(serve, tmp_path, {"echo": f"127.0.0.1:{echo_server.port}"},
                                caller=unary_guest("echo", "Say"))
    for _ in range(2):  # the same instance again: nothing is left pending or broken
        status, _, body = await client.call("caller")
        assert status == 200
        r = Results(body)
        assert r.u32() == OK  # proxy_grpc_call accepted
        assert r.u32() == BAD_ARGUMENT  # proxy_grpc_send on a unary call
        initial, message, trailing, close = read_events(r)
        # The guest's initial metadata reached the upstream, which echoed it as its own (map 4).
        assert initial == ("initial", 1, 1, (OK, b"wat"))
        assert message == ("message", len(b"echo:hi"), 1, (OK, b"echo:hi"))  # buffer 5
        assert trailing[:4] == ("trailing", 1, 1, OK) and parse_map(trailing[4]) == [("x-trail", "done")]  # map 5
        # Close: the root context's id, status 0 (also from proxy_get_status), and afterwards buffer 5,
        # map 4 and the token are gone.
        assert close == ("close", ROOT_CONTEXT_ID, 1, GRPC_OK, OK, GRPC_OK, b"", NOT_FOUND, NOT_FOUND, NOT_FOUND)
    _, info = await client.admin_get("/functions/caller")
    assert info["versions"][0]["errors"] == 0 and info["versions"][0]["replaced_instances"] == 0


async def test_unary_call_failures_close_with_the_grpc_status(serve, tmp_path: Path,
                                                              echo_server: EchoServer) -> None:
    client = await serve_guests(serve, tmp_path, {"echo": f"127.0.0.1:{echo_server.port}",
                                                  "nowhere": f"127.0.0.1:{_closed_port()}"},
                                impatient=unary_guest("echo", "Slow", timeout_ms=200),
                                refused=unary_guest("echo", "Fail"),
                                stranded=unary_guest("nowhere", "Say"))

    started = time.monotonic()
    status, _, body = await client.call("impatient")
    assert status == 200 and time.monotonic() - started < 1.5
    r = Results(body)
    assert (r.u32(), r.u32()) == (OK, BAD_ARGUMENT)
    [close] = read_events(r)  # no metadata, no message: only the close
    assert close[:6] == ("close", ROOT_CONTEXT_ID, 1, GRPC_DEADLINE_EXCEEDED, OK, GRPC_DEADLINE_EXCEEDED)
    assert b"deadline" in close[6].lower()

    r = Results((await client.call("refused"))[2])
    r.u32(), r.u32()
    [close] = read_events(r)
    assert close[3:7] == (GRPC_NOT_FOUND, OK, GRPC_NOT_FOUND, b"no such greeting")  # proxy_get_status

    r = Results((await client.call("stranded"))[2])
    r.u32(), r.u32()
    [close] = read_events(r)
    assert close[3] == GRPC_UNAVAILABLE and close[5] == GRPC_UNAVAILABLE


# -- streams -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("half_close_with", ["end_of_stream", "proxy_grpc_close"])
async def test_bidirectional_stream(serve, tmp_path: Path, echo_server: EchoServer, half_close_with: str) -> None:
    client = await serve_guests(serve, tmp_path, {"echo": f"127.0.0.1:{echo_server.port}"},
                                chatter=chat_guest(half_close_with=half_close_with))
    status, _, body = await client.call("chatter")
    assert status == 200
    r = Results(body)
    assert [r.u32() for _ in range(3)] == [OK, OK, OK]  # stream opened, two messages sent
    if half_close_with == "proxy_grpc_close":
        assert r.u32() == OK
    assert r.u32() == BAD_ARGUMENT  # no sending after this side closed
    events = read_events(r)
    # Each message answered (upper-cased) as it arrived, in order; then the upstream closed with OK.
    assert events[:2] == [("message", 3, 1, (OK, b"ONE")), ("message", 3, 1, (OK, b"TWO"))]
    assert events[2] == ("close", ROOT_CONTEXT_ID, 1, GRPC_OK, OK, GRPC_OK, b"", NOT_FOUND, NOT_FOUND, NOT_FOUND)
    assert len(events) == 3


async def test_cancel_stops_calls_and_streams_without_callbacks(serve, tmp_path: Path,
                                                                echo_server: EchoServer) -> None:
    g = WatGuest()
    request = f"""
    (call $emit {g.call("proxy_grpc_call", g.s("echo"), g.s("echo.Echo"), g.s("Slow"), (0, 0), g.s("x"), 5000,
                        U32_A)})
    (call $emit {g.call("proxy_grpc_cancel", TOKEN)})
    (call $emit {g.call("proxy_grpc_cancel", TOKEN)})  ;; already gone: NotFound
    (call $emit {g.call("proxy_grpc_stream", g.s("echo"), g.s("echo.Echo"), g.s("Chat"), (0, 0), U32_A)})
    (call $emit {g.call("proxy_grpc_send", TOKEN, g.s("a"), 0)})
    (call $emit {g.call("proxy_grpc_cancel", TOKEN)})
    (call $emit {g.call("proxy_grpc_send", TOKEN, g.s("b"), 0)})  ;; cancelled: NotFound
    (call $flush)
    (i32.const 0)"""  # Continue: the request ends at once, and no callback may run for what was cancelled
    client = await serve_guests(serve, tmp_path, {"echo": f"127.0.0.1:{echo_server.port}"},
                                canceller=g.module(proxy_on_request_headers=request, **_recording_callbacks(g)))
    started = time.monotonic()
    status, _, body = await client.call("canceller")
    assert status == 200 and time.monotonic() - started < 1.0
    r = Results(body)
    assert [r.u32() for _ in range(7)] == [OK, OK, NOT_FOUND, OK, OK, OK, NOT_FOUND]
    assert r.done()  # no callback recorded anything
    # Nothing is left running: the stream's reader thread ended, and if the stream reached the
    # upstream at all, the upstream saw it end.
    for _ in range(250):
        if not any(t.name.startswith("grpc-stream-") for t in threading.enumerate()):
            break
        await asyncio.sleep(0.02)
    assert not any(t.name.startswith("grpc-stream-") for t in threading.enumerate())
    assert echo_server.chat_calls == 0 or await asyncio.to_thread(echo_server.chat_done.wait, 5)


async def test_stream_left_open_ends_at_the_request_deadline(serve, tmp_path: Path,
                                                             echo_server: EchoServer) -> None:
    g = WatGuest()
    request = f"""
    (drop {g.call("proxy_grpc_stream", g.s("echo"), g.s("echo.Echo"), g.s("Chat"), (0, 0), U32_A)})
    (drop {g.call("proxy_grpc_send", TOKEN, g.s("hello"), 0)})
    (i32.const 1)"""  # never half-closes: the upstream keeps waiting for more
    folder = functions_dir(tmp_path)
    write_guest(folder, "holder", g.module(proxy_on_request_headers=request, **_recording_callbacks(g)))
    (folder / "holder.toml").write_text("timeout_ms = 400\n")
    client = await serve(make_config(tmp_path, folder, function_defaults={"instance_num": 1},
                                     grpc_upstreams={"echo": f"127.0.0.1:{echo_server.port}"}))
    status, _, _ = await client.call("holder")
    assert status == 504  # the guest got its answer, but the stream kept the request past its deadline
    # The stream was cancelled with the instance: the upstream saw it end.
    assert await asyncio.to_thread(echo_server.chat_done.wait, 5)


async def test_refusals(serve, tmp_path: Path, echo_server: EchoServer, caplog) -> None:
    g = WatGuest()
    good_map, bad_map = serialize_map([]), b"\x05\x00\x00\x00"  # five entries announced, none there
    calls = [
        g.call("proxy_grpc_call", g.s("unknown"), g.s("echo.Echo"), g.s("Say"), (0, 0), g.s("x"), 1000, U32_A),
        g.call("proxy_grpc_stream", g.s("unknown"), g.s("echo.Echo"), g.s("Chat"), (0, 0), U32_A),
        g.call("proxy_grpc_call", g.s("echo"), g.s("echo.Echo"), g.s("Say"), g.s(bad_map), g.s("x"), 1000, U32_A),
        g.call("proxy_grpc_call", g.s("echo"), (0, 0), g.s("Say"), g.s(good_map), g.s("x"), 1000, U32_A),
        g.call("proxy_grpc_send", 12345, g.s("x"), 0),
        g.call("proxy_grpc_cancel", 12345),
        g.call("proxy_grpc_close", 12345),
    ]
    body = "\n    ".join(f"(call $emit {c})" for c in calls)
    client = await serve_guests(serve, tmp_path, {"echo": f"127.0.0.1:{echo_server.port}"},
                                refusals=g.module(proxy_on_request_headers=f"{body}\n    (call $flush) (i32.const 0)"))
    status, _, body = await client.call("refusals")
    r = Results(body)
    assert [r.u32() for _ in calls] == [BAD_ARGUMENT] * 4 + [NOT_FOUND] * 3
    assert "proxy_grpc_call to unknown gRPC upstream 'unknown'" in caplog.text


async def test_allowed_upstreams_applies_to_grpc(serve, tmp_path: Path, echo_server: EchoServer) -> None:
    folder = functions_dir(tmp_path)
    write_guest(folder, "limited", unary_guest("echo", "Say"))
    (folder / "limited.toml").write_text('allowed_upstreams = ["something_else"]\ntimeout_ms = 300\n')
    client = await serve(make_config(tmp_path, folder, function_defaults={"instance_num": 1},
                                     grpc_upstreams={"echo": f"127.0.0.1:{echo_server.port}"}))
    status, _, body = await client.call("limited")
    # Refused (BadArgument, as an unknown upstream): no call started, so nothing resumes the paused
    # stream and its deadline ends it. An allowed upstream's answer resumes it (the tests above).
    assert status == 504, body


# -- host side ---------------------------------------------------------------------------------------
def test_grpc_upstreams_config_is_validated() -> None:
    config = validate_config({"grpc_upstreams": {"echo": "127.0.0.1:50051"}})
    assert config.grpc_upstreams == {"echo": "127.0.0.1:50051"}
    with pytest.raises(ConfigError, match=r"grpc_upstreams\.echo: .*expected HOST:PORT"):
        validate_config({"grpc_upstreams": {"echo": "http://127.0.0.1"}})


def test_channels_are_lazy_and_closed_on_stop(echo_server: EchoServer) -> None:
    upstreams = GrpcUpstreams({"echo": f"127.0.0.1:{echo_server.port}", "idle": "127.0.0.1:1"})
    assert not upstreams._channels  # nothing is dialled before the first call
    received: list = []
    done = threading.Event()

    def sink(event) -> None:
        received.append(event)
        if isinstance(event, GrpcClose):
            done.set()

    upstreams.call("echo", "echo.Echo", "Say", [], b"raw\x00bytes", 2.0, sink)
    assert done.wait(5)
    assert GrpcMessage(b"echo:raw\x00bytes") in received and received[-1] == GrpcClose(0, "")
    assert set(upstreams._channels) == {"echo"}
    upstreams.close()
    assert not upstreams._channels
    with pytest.raises(ServiceError):
        upstreams.call("echo", "echo.Echo", "Say", [], b"", 1.0, sink)


def test_grpc_imports_never_run_inline() -> None:
    # They have effects outside the instance: a module importing one always runs in guest threads.
    grpc = [f for f in all_host_functions() if f.name in GRPC_IMPORTS]
    assert len(grpc) == len(GRPC_IMPORTS) and not any(f.pure for f in grpc)

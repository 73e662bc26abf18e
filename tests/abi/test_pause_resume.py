"""Pause and resume as in Envoy: a stream callback that returns Pause with nothing pending keeps the
client waiting until a later callback of the same root context — a tick, a queue delivery — selects
the stream with `proxy_set_effective_context` and resumes it (`proxy_continue_stream`) or answers it
(`proxy_send_local_response`); the request's deadline bounds the wait (504).

Every guest here runs with one instance, so the instance holding the paused stream is the only
one: a tick or queue delivery that waited for an idle instance would never arrive in time. The
guests are WAT; the server is real and the client talks HTTP to it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from abi import HostServices, PluginSettings, ProxyWasmVM, WasmEngine, all_host_functions
from abi.chain import run_chain
from abi.http import HttpRequest
from abi.paused import PausedInstance, PausedStreams
from abi.vm import StreamPausedTooLong
from host.functions.deployer import root_target
from tests.conftest import ENGINE_BACKENDS, functions_dir, make_config
from tests.guest_wat import RET, RET_PTR, RET_SIZE, U32_B, Results, WatGuest, serialize_map, write_guest

OK, NOT_FOUND, BAD_ARGUMENT = 0, 1, 2
REQUEST_HEADERS, RESPONSE_HEADERS, RESPONSE_BODY = 0, 2, 1
TICK_MS = 20
PAUSED = "(global $paused (mut i32) (i32.const 0))"  # the context id of the paused stream, 0 for none

# Pause on request headers, remembering which stream.
PAUSE = "(global.set $paused (local.get $ctx)) (i32.const 1)"


def _ticking(g: WatGuest) -> str:
    return f"(drop {g.call('proxy_set_tick_period_milliseconds', TICK_MS)}) (i32.const 1)"


def tick_resumer() -> str:
    """Resumes from proxy_on_tick. Before selecting the stream the tick is the root context's (so
    continuing answers NotFound); after it, the body it writes and the continue act on the stream.
    proxy_on_response_headers proves the response steps ran once the stream went on."""
    g = WatGuest()
    g.extra.append(PAUSED)
    tick = f"""
    (if (global.get $paused) (then
      (call $emit {g.call("proxy_continue_stream", 0)})
      (call $emit {g.call("proxy_set_effective_context", "(global.get $paused)")})
      (call $emit {g.call("proxy_set_effective_context", 424242)})
      (call $emit {g.call("proxy_continue_stream", 0)})
      (call $flush)
      (global.set $paused (i32.const 0))))"""
    response = f"""
    (drop {g.call("proxy_add_header_map_value", RESPONSE_HEADERS, g.s("x-resumed"), g.s("by-tick"))})
    (i32.const 0)"""
    return g.module(proxy_on_configure=_ticking(g), proxy_on_request_headers=PAUSE, proxy_on_tick=tick,
                    proxy_on_response_headers=response)


def tick_answerer() -> str:
    """Answers the paused stream from proxy_on_tick with a local response."""
    g = WatGuest()
    g.extra.append(PAUSED)
    headers = serialize_map([("x-answered", "tick")])
    answer = g.call("proxy_send_local_response", 403, g.s("tick said no"), g.s("answered by a tick"),
                    g.s(headers), 0xFFFFFFFF)
    tick = f"""
    (if (global.get $paused) (then
      (drop {g.call("proxy_set_effective_context", "(global.get $paused)")})
      (drop {answer})
      (global.set $paused (i32.const 0))))"""
    return g.module(proxy_on_configure=_ticking(g), proxy_on_request_headers=PAUSE, proxy_on_tick=tick)


def never_resumes() -> str:
    """Pauses when the request has `x-pause`, and nothing ever resumes it (no timer, no queue). Without
    `x-pause` it answers how many stream contexts it has deleted so far."""
    g = WatGuest()
    g.extra.append("(global $deleted (mut i32) (i32.const 0))")
    request = f"""
    (if (i32.eqz {g.call("proxy_get_header_map_value", REQUEST_HEADERS, g.s("x-pause"), RET)})
      (then (return (i32.const 1))))
    (call $emit (global.get $deleted))
    (call $flush)
    (i32.const 0)"""
    delete = """(if (i32.ne (local.get $ctx) (i32.const 1))
      (then (global.set $deleted (i32.add (global.get $deleted) (i32.const 1)))))"""
    return g.module(proxy_on_request_headers=request, proxy_on_delete=delete)


def looping_tick() -> str:
    """A tick that never returns while a stream is paused (it runs as part of that request)."""
    g = WatGuest()
    g.extra.append(PAUSED)
    request = f"""
    (if (i32.eqz {g.call("proxy_get_header_map_value", REQUEST_HEADERS, g.s("x-pause"), RET)})
      (then (global.set $paused (local.get $ctx)) (return (i32.const 1))))
    (call $emit (i32.const 7))
    (call $flush)
    (i32.const 0)"""
    tick = "(if (global.get $paused) (then (loop $forever (br $forever))))"
    return g.module(proxy_on_configure=_ticking(g), proxy_on_request_headers=request, proxy_on_tick=tick)


def queue_consumer(queue_name: str) -> str:
    """Registers `queue_name` at start-up; pauses on request headers (after enqueueing an item to
    itself when the request has `x-self`), and resumes from proxy_on_queue_ready with the item it
    dequeued as the response body."""
    g = WatGuest()
    g.extra.append(PAUSED)
    queue = f"(i32.load (i32.const {U32_B}))"
    configure = f"(drop {g.call('proxy_register_shared_queue', g.s(queue_name), U32_B)}) (i32.const 1)"
    request = f"""
    (global.set $paused (local.get $ctx))
    (if (i32.eqz {g.call("proxy_get_header_map_value", REQUEST_HEADERS, g.s("x-self"), RET)})
      (then (drop {g.call("proxy_enqueue_shared_queue", queue, g.s("sent to myself"))})))
    (i32.const 1)"""
    ready = f"""
    (if (global.get $paused) (then
      (if (i32.eqz {g.call("proxy_dequeue_shared_queue", "(local.get $queue)", RET)}) (then
        (drop {g.call("proxy_set_effective_context", "(global.get $paused)")})
        (drop {g.call("proxy_set_buffer_bytes", RESPONSE_BODY, 0, 0, f"(i32.load (i32.const {RET_PTR}))",
                      f"(i32.load (i32.const {RET_SIZE}))")})
        (drop {g.call("proxy_continue_stream", 0)})
        (global.set $paused (i32.const 0))))))"""
    return g.module(proxy_on_configure=configure, proxy_on_request_headers=request, proxy_on_queue_ready=ready)


def queue_producer(queue_name: str) -> str:
    g = WatGuest()
    request = f"""
    (drop {g.call("proxy_resolve_shared_queue", (0, 0), g.s(queue_name), U32_B)})
    (call $emit {g.call("proxy_enqueue_shared_queue", f"(i32.load (i32.const {U32_B}))", g.s("from the producer"))})
    (call $flush)
    (i32.const 0)"""
    return g.module(proxy_on_request_headers=request)


def pausing_filter() -> str:
    """A filter that pauses every request and resumes it from its own tick; it marks the response."""
    g = WatGuest()
    g.extra.append(PAUSED)
    tick = f"""
    (if (global.get $paused) (then
      (drop {g.call("proxy_set_effective_context", "(global.get $paused)")})
      (drop {g.call("proxy_continue_stream", 0)})
      (global.set $paused (i32.const 0))))"""
    response = f"""
    (drop {g.call("proxy_add_header_map_value", RESPONSE_HEADERS, g.s("x-filter"), g.s("resumed"))})
    (i32.const 0)"""
    return g.module(proxy_on_configure=_ticking(g), proxy_on_request_headers=PAUSE, proxy_on_tick=tick,
                    proxy_on_response_headers=response)


def gated_resumer(key: str, marker: str) -> str:
    """Resumes from a tick once the host's shared data holds `key`; `marker` tells versions apart."""
    g = WatGuest()
    g.extra.append(PAUSED)
    tick = f"""
    (if (global.get $paused) (then
      (if (i32.eqz {g.call("proxy_get_shared_data", g.s(key), RET, U32_B)}) (then
        (drop {g.call("proxy_set_effective_context", "(global.get $paused)")})
        (drop {g.call("proxy_set_buffer_bytes", RESPONSE_BODY, 0, 0, g.s(marker))})
        (drop {g.call("proxy_continue_stream", 0)})
        (global.set $paused (i32.const 0))))))"""
    return g.module(proxy_on_configure=_ticking(g), proxy_on_request_headers=PAUSE, proxy_on_tick=tick)


def plain_function(text: str) -> str:
    g = WatGuest()
    request = f"(drop {g.call('proxy_set_buffer_bytes', RESPONSE_BODY, 0, 0, g.s(text))}) (i32.const 0)"
    return g.module(proxy_on_request_headers=request)


async def _serve(serve, tmp_path: Path, guests: dict[str, str], **config):
    folder = functions_dir(tmp_path)
    for name, wat in guests.items():
        write_guest(folder, name, wat)
    defaults = {"instance_num": 1, "timeout_ms": 3000, **config.pop("function_defaults", {})}
    return await serve(make_config(tmp_path, folder, function_defaults=defaults, **config))


def _replaced(client, function_id: str) -> int:
    return client.server.app.router.pick(function_id).pool.stats()["replaced"]


async def test_a_tick_resumes_the_paused_stream_and_the_response_steps_run(serve, tmp_path: Path) -> None:
    client = await _serve(serve, tmp_path, {"resumer": tick_resumer(), "answerer": tick_answerer()})
    for _ in range(2):  # the same (only) instance, twice
        status, headers, body = await client.call("resumer")
        assert status == 200, body
        r = Results(body)
        # In the tick, before selecting: the root context has no stream to continue.
        assert r.u32() == NOT_FOUND
        assert r.u32() == OK  # the paused stream's context id is known
        assert r.u32() == BAD_ARGUMENT  # any other id is not
        assert r.u32() == OK  # continuing the selected stream
        assert r.done()
        assert headers["x-resumed"] == "by-tick"  # proxy_on_response_headers ran after the resume
    assert _replaced(client, "resumer") == 0

    status, headers, body = await client.call("answerer")
    assert (status, body) == (403, b"answered by a tick")
    assert headers["x-answered"] == "tick"


async def test_two_paused_instances_are_each_resumed(serve, tmp_path: Path) -> None:
    client = await _serve(serve, tmp_path, {"resumer": tick_resumer()}, function_defaults={"instance_num": 2})
    started = time.monotonic()
    answers = await asyncio.gather(client.call("resumer"), client.call("resumer"))
    assert [status for status, _, _ in answers] == [200, 200]
    assert all(headers["x-resumed"] == "by-tick" for _, headers, _ in answers)
    assert time.monotonic() - started < 2  # resumed by ticks, not ended by the 3 s deadline


async def test_a_pause_nothing_resumes_answers_504_at_the_deadline(serve, tmp_path: Path) -> None:
    client = await _serve(serve, tmp_path, {"stuck": never_resumes(), "other": plain_function("other answered")},
                          functions={"stuck": {"timeout_ms": 400}})
    started = time.monotonic()
    paused = asyncio.ensure_future(client.call("stuck", headers={"x-pause": "1"}))
    await asyncio.sleep(0.1)
    # Meanwhile the host serves other functions: the paused request blocks neither the event loop
    # nor anything but its own instance.
    assert (await client.call("other"))[::2] == (200, b"other answered")
    assert time.monotonic() - started < 0.35
    status, _, body = await paused
    elapsed = time.monotonic() - started
    assert status == 504, body
    assert 0.4 <= elapsed < 2.5
    # The same instance answers the next request: it was not replaced, and it finished the expired
    # stream's context (proxy_on_delete ran for it) before taking the next one.
    status, _, body = await client.call("stuck")
    assert status == 200
    assert Results(body).u32() == 1
    assert _replaced(client, "stuck") == 0


async def test_a_root_callback_cut_short_by_the_deadline_replaces_the_instance(serve, tmp_path: Path) -> None:
    client = await _serve(serve, tmp_path, {"looper": looping_tick()}, functions={"looper": {"timeout_ms": 400}})
    started = time.monotonic()
    status, _, _ = await client.call("looper", headers={"x-pause": "1"})
    assert status == 504
    assert time.monotonic() - started < 2.5
    status, _, body = await client.call("looper")  # a fresh instance answers
    assert (status, Results(body).u32()) == (200, 7)
    assert _replaced(client, "looper") == 1


async def test_a_filter_pauses_and_its_own_tick_resumes_the_chain(serve, tmp_path: Path) -> None:
    folder = functions_dir(tmp_path)
    filters = tmp_path / "filters"
    filters.mkdir()
    write_guest(folder, "guarded", plain_function("the function answered"))
    write_guest(filters, "pauser", pausing_filter())
    config = make_config(tmp_path, folder, function_defaults={"instance_num": 1, "timeout_ms": 3000},
                         functions={"guarded": {"filters": [{"path": str(filters / "pauser.wat")}]}})
    client = await serve(config)
    for _ in range(2):
        status, headers, body = await client.call("guarded")
        # The function ran after the filter was resumed (the function has no timer of its own),
        # and the response went back through the filter.
        assert (status, body) == (200, b"the function answered")
        assert headers["x-filter"] == "resumed"


async def test_a_queue_delivery_resumes_the_paused_stream(serve, tmp_path: Path) -> None:
    queue_name = f"pause-{uuid.uuid4().hex}"
    client = await _serve(serve, tmp_path, {"consumer": queue_consumer(queue_name),
                                            "producer": queue_producer(queue_name)})
    target = root_target(client.server.app.router.pick("consumer").pool)
    assert target is not None

    waiting = asyncio.ensure_future(client.call("consumer"))
    for _ in range(200):
        if target.paused.paused_count() == 1:
            break
        await asyncio.sleep(0.01)
    assert target.paused.paused_count() == 1 and not waiting.done()
    status, _, body = await client.call("producer")
    assert status == 200 and Results(body).u32() == OK
    assert (await waiting)[::2] == (200, b"from the producer")

    # An item enqueued while the instance was still busy running the callback (before it paused):
    # the delivery waiting for an idle instance is taken by the instance as it pauses.
    started = time.monotonic()
    assert (await client.call("consumer", headers={"x-self": "1"}))[::2] == (200, b"sent to myself")
    assert time.monotonic() - started < 2
    assert target.paused.paused_count() == 0


async def test_a_paused_request_outlives_a_reload_of_its_function(serve, tmp_path: Path) -> None:
    """The version holding the paused stream retires meanwhile: its paused instance still gets ticks."""
    key = f"go-{uuid.uuid4().hex}"
    client = await _serve(serve, tmp_path, {"gated": gated_resumer(key, "old version")},
                          server={"watch_debounce_ms": 50})
    old = client.server.app.router.pick("gated")
    target = root_target(old.pool)
    assert target is not None
    waiting = asyncio.ensure_future(client.call("gated"))
    for _ in range(200):
        if target.paused.paused_count() == 1:
            break
        await asyncio.sleep(0.01)
    assert target.paused.paused_count() == 1
    module = functions_dir(tmp_path) / "gated.wat"
    partial = module.with_name("gated.wat.partial")
    partial.write_text(gated_resumer(key, "new version"))
    partial.replace(module)
    for _ in range(200):
        if client.server.app.router.pick("gated") is not old:
            break
        await asyncio.sleep(0.02)
    assert client.server.app.router.pick("gated") is not old and old.pool.closed
    await asyncio.sleep(10 * TICK_MS / 1000)  # ticks of the retired version go on meanwhile
    assert not waiting.done()
    client.server.app.services.shared_data.set(key.encode(), b"go", 0)
    assert (await waiting)[::2] == (200, b"old version")
    assert (await client.call("gated"))[::2] == (200, b"new version")


# -- without a server ---------------------------------------------------------------------------------

def test_an_expired_pause_leaves_the_instance_usable() -> None:
    engine = WasmEngine(ENGINE_BACKENDS[0])
    module = engine.compile(_wasm(never_resumes()))
    vm = ProxyWasmVM(engine, engine.linker(all_host_functions()), module, PluginSettings(name="stuck"),
                     HostServices())
    vm.start()
    started = time.monotonic()
    try:
        run_chain([vm], HttpRequest.build("GET", "/", [("x-pause", "1")], b""), 0.2)
    except StreamPausedTooLong:
        pass
    else:
        raise AssertionError("the pause did not end at the deadline")
    assert 0.2 <= time.monotonic() - started < 1.5
    assert not vm.broken and vm.waiting_stream is None
    response = run_chain([vm], HttpRequest.build("GET", "/", [], b""), 0.2)
    assert response.status == 200 and Results(response.body).u32() == 1


def test_root_work_reaches_every_paused_instance_and_a_ticket_runs_once() -> None:
    board = PausedStreams()
    ran: list[str] = []
    woken: list[str] = []
    ticket = board.deliver(lambda vm: ran.append("idle"))
    assert ticket is not None  # nothing paused: the work waits for an idle instance...
    first, second = PausedInstance(lambda: woken.append("a")), PausedInstance(lambda: woken.append("b"))
    board.pause(first)  # ...and the first instance to pause takes it
    work = board.next_work(first)
    assert work is not None and board.next_work(first) is None
    ticket.run(None)  # type: ignore[arg-type]  # the idle instance comes too late: nothing runs
    assert ran == []
    board.pause(second)
    assert board.deliver(lambda vm: None) is None  # posted to both paused instances
    assert woken == ["a", "b"]
    leftovers = board.resume(first)
    assert len(leftovers) == 1 and board.paused_count() == 1
    board.resume(second)
    assert board.deliver(lambda vm: None, wait_for_idle=False) is None  # nobody paused: dropped


def _wasm(wat: str) -> bytes:
    import wasmtime

    return bytes(wasmtime.wat2wasm(wat))

"""Issue 15 item 9: `memory_limit_mb` bounds everything a guest can make the host hold, `instance_num`
has a configured maximum, and an engine limit never takes the process down.

Each route a guest could use to grow the host is driven to its end by a WAT guest of its own: tables
(declared and grown), the response body and header maps it appends to, properties, a serialized map
of many empty entries, shared data and queue items, log lines, metric definitions. The host answers
500 (or a status) and keeps serving. Memory comes back when functions are removed (RSS over rounds
of 200 deploys and removals), and an mmap failure while starting instances is a clean rejection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from abi.codes import Status
from abi.limits import ENTRY_COST, MAX_PROPERTIES
from abi.maps import MAX_MAP_ENTRIES
from abi.shared import ENTRY_COST as SHARED_ENTRY_COST
from abi.shared import MAX_METRICS, Metrics
from host.functions.deployments import COLLECT_AFTER_S, Outcome
from tests.conftest import REPO, make_config
from tests.functions.fn_support import request, running_app
from tests.guest_wat import RET, U32_A, Results, WatGuest, failure, write_guest

LIMIT_MB = 1
LIMIT = LIMIT_MB * 1024 * 1024
GUEST_LOG = "wasm.guest"


def _config(tmp_path: Path, folder: Path, **server: object):
    return make_config(tmp_path, folder, server={"watch": False, **server},
                       function_defaults={"instance_num": 1, "memory_limit_mb": LIMIT_MB})


def _forever(body: str) -> str:
    """`body` repeated until something stops the guest (the host traps it)."""
    return f"(loop $again {body} (br $again))\n    (i32.const 0)"


# -- tables -------------------------------------------------------------------------------------------

async def test_tables_are_bounded_by_the_memory_limit(tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    table_func = '(func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 0))'
    # 100 million elements would be 800 MB of host memory for a 1 MiB function.
    memory = '(memory (export "memory") 1)'
    (folder / "huge_table.wat").write_text(f"(module {memory} (table 100000000 funcref) {table_func})")
    (folder / "many_tables.wat").write_text(
        f'(module (memory (export "memory") 1) {" ".join("(table 1 funcref)" for _ in range(9))} {table_func})')
    (folder / "two_memories.wat").write_text(f'(module (memory (export "memory") 1) (memory 1) {table_func})')
    g = WatGuest()
    g.extra.append("(table $t 1 funcref)")
    grow = "(table.grow $t (ref.null func) (i32.const 100000000))"  # -1: refused, the guest goes on
    write_guest(folder, "grower", g.module(proxy_on_request_headers=f"(call $emit {grow}) (call $flush) (i32.const 0)"))
    async with running_app(_config(tmp_path, folder)) as app:
        failed = app.failures()
        assert "table" in failure(failed, "huge_table") and "limit" in failure(failed, "huge_table")
        assert "table count" in failure(failed, "many_tables")
        assert "memory count" in failure(failed, "two_memories")
        response = await app.dispatcher.call(app.dispatcher.find("grower"), request())
        assert response.status == 200 and Results(response.body).u32() == 0xFFFFFFFF


# -- what a request makes the host hold ----------------------------------------------------------------

async def test_a_guest_appending_without_end_gets_a_500_and_the_host_keeps_serving(serve, tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    g = WatGuest()
    append = g.call("proxy_set_buffer_bytes", 1, 0xFFFFFFFF, 0, 0, 4096)  # 4 KiB more of the response body
    write_guest(folder, "body_flood", g.module(proxy_on_request_headers=_forever(f"(drop {append})")))
    g = WatGuest()
    add = g.call("proxy_add_header_map_value", 2, g.s("x-flood"), g.s("v"))
    write_guest(folder, "header_flood", g.module(proxy_on_request_headers=_forever(f"(drop {add})")))
    g = WatGuest()
    add = g.call("proxy_add_header_map_value", 0, g.s("x-flood"), g.s("v"))  # the request's own headers
    write_guest(folder, "request_header_flood", g.module(proxy_on_request_headers=_forever(f"(drop {add})")))
    g = WatGuest()
    key = 60000  # a 4-byte key: a counter, so every property is a new one
    set_property = g.call("proxy_set_property", key, 4, 0, 1)
    write_guest(folder, "property_flood", g.module(proxy_on_request_headers=f"""(local $i i32)
    {_forever(f"(i32.store (i32.const {key}) (local.get $i)) (drop {set_property}) "
              "(local.set $i (i32.add (local.get $i) (i32.const 1)))")}"""))
    g = WatGuest()
    append = g.call("proxy_set_buffer_bytes", 1, 0xFFFFFFFF, 0, 0, 4096)
    write_guest(folder, "within", g.module(proxy_on_request_headers=f"""(local $i i32)
    (loop $again (drop {append}) (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 64))))
    (i32.const 0)"""))
    client = await serve(_config(tmp_path, folder))
    for name, what in [("body_flood", b"the response body would hold"), ("header_flood", b"header maps would hold"),
                       ("request_header_flood", b"header maps would hold"),
                       ("property_flood", f"more than {MAX_PROPERTIES} properties".encode())]:
        status, _, body = await client.call(name)
        assert status == 500 and what in body and (b"memory limit" in body or b"properties" in body), (name, body)
        assert (await client.call(name))[0] == 500  # the trapped instance was replaced; the same again
    status, _, body = await client.call("within")
    assert status == 200 and len(body) == 64 * 4096  # 256 KiB under a 1 MiB limit: allowed


def test_the_header_map_bound_counts_entries_not_only_bytes() -> None:
    # 1-byte entries cost ENTRY_COST each on the host: the byte bound is reached first, before the count.
    assert LIMIT // (ENTRY_COST + len("x-flood") + 1) < MAX_MAP_ENTRIES


async def test_a_map_of_many_empty_entries_is_refused_before_it_is_built(serve, tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    g = WatGuest(pages=3)
    at = 65536  # from the second page: a map whose count says 9000 (sizes and bytes all zero: empty entries)
    size_9000, size_100 = 4 + 10 * 9000, 4 + 10 * 100
    calls = [g.call("proxy_set_header_map_pairs", 0, at, size_9000),  # the request's headers
             g.call("proxy_send_local_response", 200, 0, 0, 0, 0, at, size_9000, 0xFFFFFFFF)]
    ok = g.call("proxy_set_header_map_pairs", 0, at, size_100)
    write_guest(folder, "many_entries", g.module(proxy_on_request_headers=f"""
    (i32.store (i32.const {at}) (i32.const 9000))
    {' '.join(f'(call $emit {c})' for c in calls)}
    (i32.store (i32.const {at}) (i32.const 100))
    (call $emit {ok}) (call $flush) (i32.const 0)"""))
    client = await serve(_config(tmp_path, folder))
    status, _, body = await client.call("many_entries")
    assert status == 200
    r = Results(body)
    assert [r.u32(), r.u32(), r.u32()] == [Status.BAD_ARGUMENT, Status.BAD_ARGUMENT, Status.OK]


# -- shared data and queues --------------------------------------------------------------------------

_FILLER_LOCALS = "(local $i i32) (local $status i32)"


def _filler(call: str, key: int) -> str:
    """Repeat `call` (keyed by the counter at `key`) until it fails: emit how many succeeded and the status.
    The function must declare _FILLER_LOCALS first."""
    return f"""(block $done (loop $again
      (i32.store (i32.const {key}) (local.get $i))
      (local.set $status {call})
      (br_if $done (local.get $status))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $again)))
    (call $emit (local.get $i)) (call $emit (local.get $status))"""


async def test_shared_data_and_queue_items_are_charged_to_their_writer(serve, tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    value = 60000
    key = 61000
    g = WatGuest()
    set_data = g.call("proxy_set_shared_data", key, 4, 0, value, 0)
    overwrite = g.call("proxy_set_shared_data", key, 4, 0, value, 0)
    write_guest(folder, "hoarder", g.module(proxy_on_request_headers=f"""{_FILLER_LOCALS} {_filler(set_data, key)}
    (i32.store (i32.const {key}) (i32.const 0))
    (call $emit {overwrite}) (call $flush) (i32.const 0)"""))
    g = WatGuest()
    other = g.call("proxy_set_shared_data", *g.s("other-key"), 0, value, 0)
    write_guest(folder, "neighbour",
                g.module(proxy_on_request_headers=f"(call $emit {other}) (call $flush) (i32.const 0)"))
    g = WatGuest(pages=2)  # room to receive a dequeued item
    register = g.call("proxy_register_shared_queue", *g.s("q"), U32_A)
    enqueue = g.call("proxy_enqueue_shared_queue", f"(i32.load (i32.const {U32_A}))", 0, value)
    again = g.call("proxy_enqueue_shared_queue", f"(i32.load (i32.const {U32_A}))", 0, value)
    dequeue = g.call("proxy_dequeue_shared_queue", f"(i32.load (i32.const {U32_A}))", *RET)
    write_guest(folder, "producer", g.module(proxy_on_request_headers=f"""{_FILLER_LOCALS} (drop {register})
    {_filler(enqueue, key)}
    (call $emit {dequeue}) (call $emit {again}) (call $flush) (i32.const 0)"""))
    client = await serve(_config(tmp_path, folder))

    status, _, body = await client.call("hoarder")
    r = Results(body)
    fits = LIMIT // (4 + value + SHARED_ENTRY_COST)
    assert status == 200 and (r.u32(), r.u32()) == (fits, Status.INTERNAL_FAILURE)
    assert r.u32() == Status.OK  # overwriting its own value refunds the old one first
    assert client.server.app.services.shared_data.held_by("hoarder") <= LIMIT
    status, _, body = await client.call("neighbour")
    assert status == 200 and Results(body).u32() == Status.OK  # another function's budget is its own

    status, _, body = await client.call("producer")
    r = Results(body)
    queued = LIMIT // (value + SHARED_ENTRY_COST)
    assert status == 200 and (r.u32(), r.u32()) == (queued, Status.INTERNAL_FAILURE)
    assert (r.u32(), r.u32()) == (Status.OK, Status.OK)  # a dequeued item refunds its producer


def test_metric_definitions_are_capped() -> None:
    metrics = Metrics()
    ids = {metrics.define(0, f"m{i}") for i in range(MAX_METRICS)}
    assert None not in ids and len(ids) == MAX_METRICS
    assert metrics.define(0, "one-too-many") is None
    assert metrics.define(0, "m7") is not None  # an existing one is still found
    assert Metrics().define(0, "x" * 5000) is None  # a name is bounded too


# -- log volume ----------------------------------------------------------------------------------------

async def test_guest_log_lines_are_escaped_and_rate_limited(serve, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=GUEST_LOG)
    folder = tmp_path / "functions"
    forged = "ok\n2026-01-01 00:00:00,000 ERROR host.app: [admin] forged\r\x1b[31mred\x1b[0m \u202eevil \xff"
    g = WatGuest()
    text = forged.encode("utf-8", "surrogateescape").replace("\xff".encode(), b"\xff")
    log_line = g.call("proxy_log", 2, *g.s(text))
    write_guest(folder, "chatty", g.module(proxy_on_request_headers=f"""(local $i i32)
    (loop $again (drop {log_line}) (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 500))))
    (i32.const 0)"""))
    g = WatGuest()
    stdout = struct.pack("<II", g.addr("first\nsecond\x1b[2J\n"), len("first\nsecond\x1b[2J\n"))
    write = g.call("fd_write", 1, g.addr(stdout), 1, U32_A, module="wasi_snapshot_preview1")
    write_guest(folder, "printer", g.module(proxy_on_request_headers=f"(drop {write}) (i32.const 0)"))
    client = await serve(_config(tmp_path, folder, guest_log_lines_per_second=50))  # bursts of 100

    assert (await client.call("chatty"))[0] == 200
    lines = [r.getMessage() for r in caplog.records if r.name == GUEST_LOG and r.getMessage().startswith("[chatty]")]
    assert 100 <= len(lines) <= 105  # the burst, plus what the rate refilled during the request
    for line in lines:
        assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u202e" not in line
    assert lines[0] == ("[chatty] ok\\n2026-01-01 00:00:00,000 ERROR host.app: [admin] forged\\r\\x1b[31mred"
                        "\\x1b[0m \\u202eevil \\xff")
    caplog.clear()
    await asyncio.sleep(0.1)  # a few lines' worth of rate
    assert (await client.call("chatty"))[0] == 200
    notice = next(r.getMessage() for r in caplog.records if r.name == GUEST_LOG)
    dropped = int(notice.split("(host: ")[1].split()[0])
    assert 390 <= dropped <= 400 and "dropped" in notice  # the first request's 500 lines less those logged

    caplog.clear()
    assert (await client.call("printer"))[0] == 200
    printed = [r.getMessage() for r in caplog.records if r.name == GUEST_LOG]
    assert printed == ["[printer] first", "[printer] second\\x1b[2J"]  # one log line per line written


# -- instance_num --------------------------------------------------------------------------------------

async def test_instance_num_over_the_configured_maximum_is_refused(serve, tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    g = WatGuest()
    write_guest(folder, "small", g.module(proxy_on_request_headers="(i32.const 0)"))
    write_guest(folder, "big", g.module(proxy_on_request_headers="(i32.const 0)"))
    (folder / "big.toml").write_text("instance_num = 5\n")
    client = await serve(make_config(tmp_path, folder, server={"max_instances_per_function": 4}))
    _, readiness = await client.admin_get("/actuator/health/readiness")
    assert "instance_num 5 is over server.max_instances_per_function (4)" in failure(readiness["details"]["failed"],
                                                                                     "big")
    admin = client.admin
    for action, body in [("update", {"name": "small", "instance_num": 5}),
                         ("install", {"name": "other", "instance_num": 100000,
                                      "vm_config": {"path": str(folder / "small.wat")}})]:
        async with client.session.post(f"{admin}/wasm/{action}", json=body) as response:
            assert response.status == 400, action
            assert "max_instances_per_function" in (await response.json())["error"]
    async with client.session.post(f"{admin}/wasm/update", json={"name": "small", "instance_num": 4}) as response:
        assert response.status == 200
    assert client.server.app.deployments.find("small").version.pool.size == 4


# -- engine limits -------------------------------------------------------------------------------------

_ENGINE_LIMIT_SCRIPT = """
import asyncio, json, os, resource, shutil
from pathlib import Path
from host.app import App
from host.config import validate_config

async def main():
    folder, staged = Path({folder!r}), Path({staged!r})
    config = validate_config({{"server": {{"watch": False, "cache_dir": {cache!r}}}, "functions_dirs": [str(folder)],
                               "function_defaults": {{"instance_num": 1}}}})
    app = App(config)
    await app.start()  # an empty folder: nothing deployed yet
    pages = int(open(f"/proc/{{os.getpid()}}/statm").read().split()[0])
    # Room for about two instances (each reserves over 4 GiB of address space): the third cannot map.
    resource.setrlimit(resource.RLIMIT_AS, (pages * os.sysconf("SC_PAGE_SIZE") + 10 * 2**30,
                                            resource.getrlimit(resource.RLIMIT_AS)[1]))
    for name in os.listdir(staged):
        shutil.copy(staged / name, folder / name)
    wide = await app.deployments.deploy(folder / "wide.wat")
    # What the failed pool started (some in the background) is released, by the host: the address
    # space comes back within seconds, without this script collecting anything.
    margin = 2 * 2**30 // os.sysconf("SC_PAGE_SIZE")
    for _ in range(100):
        if int(open(f"/proc/{{os.getpid()}}/statm").read().split()[0]) < pages + margin:
            break
        await asyncio.sleep(0.05)
    after = await app.deployments.deploy(folder / "after.wat")  # needs what the failed pool held
    print(json.dumps({{"wide": [wide.last_outcome, wide.last_error], "after": [after.last_outcome, after.last_error]}}))
    await app.stop()

asyncio.run(main())
"""


def test_an_mmap_failure_starting_instances_is_a_clean_rejection(tmp_path: Path) -> None:
    staged, folder = tmp_path / "staged", tmp_path / "functions"
    folder.mkdir()
    for name in ("wide", "after"):
        write_guest(staged, name, WatGuest().module(proxy_on_request_headers="(i32.const 0)"))
    (staged / "wide.toml").write_text("instance_num = 30\n")
    (staged / "after.toml").write_text("instance_num = 2\n")
    script = tmp_path / "engine_limit.py"
    script.write_text(textwrap.dedent(_ENGINE_LIMIT_SCRIPT).format(folder=str(folder), staged=str(staged),
                                                                   cache=str(tmp_path / "cache")))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["wide"][0] == Outcome.REJECTED and "mmap" in outcome["wide"][1], outcome
    # The instances the failed pool had started were released: two more fit again.
    assert outcome["after"] == [Outcome.DEPLOYED, None], outcome


# -- memory comes back ---------------------------------------------------------------------------------

def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_memory_is_returned_when_functions_are_removed(tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    count = 200
    for i in range(count):  # distinct modules: each is compiled (then cached) and gets its own pool
        g = WatGuest()
        write_guest(folder, f"fn{i}", g.module(proxy_on_request_headers=f"(call $emit (i32.const {i})) (call $flush) "
                                                                         "(i32.const 0)"))
    paths = sorted(folder.iterdir())
    staged = tmp_path / "staged"
    folder.rename(staged)
    folder.mkdir()
    async with running_app(_config(tmp_path, folder)) as app:
        deployments = app.deployments

        async def round_trip() -> int:
            for path in paths:
                (folder / path.name).write_bytes((staged / path.name).read_bytes())
            records = await asyncio.gather(*(deployments.deploy(folder / path.name) for path in paths))
            assert all(r.last_outcome == Outcome.DEPLOYED for r in records)
            response = await app.dispatcher.call(app.dispatcher.find(f"fn{count - 1}"), request())
            assert Results(response.body).u32() == count - 1
            await asyncio.gather(*(deployments.remove(folder / path.name) for path in paths))
            assert app.router.ids() == [] and not deployments.records
            for path in paths:
                (folder / path.name).unlink()
            # Retired instances are closed in guest threads, then collected by the host (COLLECT_AFTER_S).
            await asyncio.sleep(COLLECT_AFTER_S + 0.5)
            return _rss()

        warm = await round_trip()  # compiles, caches, thread stacks, allocator arenas
        first = await round_trip()
        second = await round_trip()
    print(f"RSS after rounds of {count} deploys and removals: {warm >> 20} MiB, {first >> 20} MiB, "
          f"{second >> 20} MiB")
    assert second - first < 3 * 1024 * 1024, (warm, first, second)  # a leak of the 200 versions was ~6 MiB

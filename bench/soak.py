"""Soak: minutes of mixed load with hot reloads and trapping requests; what was served, what went wrong,
and whether the host's memory grew.

    python bench/soak.py [--duration S] [--quick] [--concurrency N] [--reload-every S] [--out FILE]

Issue: "A soak benchmark in bench/ (minutes, not in the test suite): mixed load with reloads and trapping
requests; report requests served, errors by kind, and the host's memory before and after."

Starts `python -m host serve` (free 127.0.0.1 ports, --log-level warning) on a temporary functions folder
holding copies of examples/functions/*.wasm (hello, id_1 -> id_2 -> memory state store) plus two
generated WAT functions: `trap` (`unreachable` when the request has header x-trap, else 200 "ok") and
`slow` (spins forever when the request has header x-slow, else 200 "fast"; `slow.toml` sets
timeout_ms = 200). Then:

- load: --concurrency client tasks in total (aiohttp, one connection pool of that size): all but one draw
  request kinds at random (hello, demo chain, trapping, trap function answering normally, unknown id,
  slow function answering fast); one sends a deadline-exceeding request (x-slow: expect 504) about
  every --slow-every seconds (each one burns 200 ms of a core);
- reloads: every --reload-every seconds `hello.wasm` is overwritten in place, alternating two
  byte-different but equivalent versions (the second carries an extra custom section); every 4th time a
  corrupt file instead (truncated module / not wasm at all), which must be rejected while the old version
  keeps serving. Each reload's outcome is read back from `GET /functions/hello`;
- memory: resident set (VmRSS, the host process and any children) every --sample-every seconds; reported
  at the start (after --warmup seconds of the same load), mid-run, at the end, and after 5 s idle.

Prints a markdown report (progress on stderr) and saves it as bench/results/<date>-soak.md (or --out).
Unexpected outcomes (a status not expected for the kind, a wrong body, a client error or timeout, a reload
with the wrong outcome) are listed first and loudly, but the exit code stays 0; it is 1 only when the host
cannot be started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import aiohttp

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import cold_start as common  # noqa: E402 - bench/cold_start.py: host process, admin client, machine info

REPO = BENCH.parent
EXAMPLES = REPO / "examples" / "functions"
LOOPBACK = "127.0.0.1"
HELLO_BODY = b"hello method=GET path=/ greeting=-\n"
DEMO_BODY = b"There are 100 inventories for book1."
SLOW_TIMEOUT_MS = 200


def log(message: str) -> None:
    print(f"[soak] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# the two generated functions

_ALLOCATOR = """
  (global $heap (mut i32) (i32.const 4096))
  ;; bump allocator, reset at the start of every request (the host allocates header values with it)
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)
    (if (i32.gt_u (i32.add (global.get $heap) (local.get $n)) (i32.const 131072))
      (then (global.set $heap (i32.const 4096))))
    (local.set $p (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $p) (local.get $n)) (i32.const 7)) (i32.const -8)))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
"""


def header_switch_wat(header: str, when_present: str, body: str) -> str:
    """A proxy-wasm function (id = file stem) that runs `when_present` if request header `header` is set,
    else answers 200 with `body`."""
    return f"""(module
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 32) "{header}")
  (data (i32.const 64) "{body}\\0a")
{_ALLOCATOR}
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (global.set $heap (i32.const 4096))
    ;; map 0 = request headers; status 0 = found
    (if (i32.eqz (call $get (i32.const 0) (i32.const 32) (i32.const {len(header)}) (i32.const 16) (i32.const 20)))
      (then {when_present}))
    (drop (call $set (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 64) (i32.const {len(body) + 1})))
    (i32.const 0)))
"""


TRAP_WAT = header_switch_wat("x-trap", "unreachable", "ok")
SLOW_WAT = header_switch_wat("x-slow", "(loop $spin (br $spin))", "fast")


# --------------------------------------------------------------------------------------------
# request kinds


@dataclass(frozen=True)
class Kind:
    name: str
    headers: dict
    path: str
    expect: int
    body: Optional[bytes] = None  # checked when the expected status is 200
    weight: int = 0  # share of the random mix (0: not drawn; `slow` has its own task)
    what: str = ""


KINDS = {k.name: k for k in (
    Kind("hello", {"id": "hello"}, "/", 200, HELLO_BODY, 40, "hello (C), reloaded under load"),
    Kind("demo", {"id": "id_1"}, "/?name=book1", 200, DEMO_BODY, 25,
         "id_1 → proxy_invoke_service id_2 → proxy_get_state (memory store)"),
    Kind("trap", {"id": "trap", "x-trap": "1"}, "/", 500, None, 10, "guest executes `unreachable`"),
    Kind("trap_ok", {"id": "trap"}, "/", 200, b"ok\n", 5, "the trapping function, no x-trap"),
    Kind("unknown", {"id": "no-such-function"}, "/", 404, None, 10, "an id nobody deployed (random suffix)"),
    Kind("slow_ok", {"id": "slow"}, "/", 200, b"fast\n", 10, "the slow function, no x-slow"),
    Kind("slow", {"id": "slow", "x-slow": "1"}, "/", 504, None, 0,
         f"guest spins past its timeout_ms = {SLOW_TIMEOUT_MS}"),
)}


@dataclass
class KindStats:
    served: int = 0  # an HTTP answer arrived
    statuses: Counter = field(default_factory=Counter)
    unexpected: Counter = field(default_factory=Counter)  # description -> count
    examples: dict = field(default_factory=dict)  # description -> one example detail
    latencies: list = field(default_factory=list)  # seconds, answered requests


class Stats:
    def __init__(self) -> None:
        self.kinds: dict[str, KindStats] = defaultdict(KindStats)
        self.started = time.perf_counter()
        self.ended: Optional[float] = None

    def unexpected(self, kind: str, what: str, example: str) -> None:
        entry = self.kinds[kind]
        entry.unexpected[what] += 1
        entry.examples.setdefault(what, example[:300])


async def one_request(session: aiohttp.ClientSession, base: str, kind: Kind, stats_ref: list) -> None:
    headers = dict(kind.headers)
    if kind.name == "unknown":
        headers["id"] = f"no-such-function-{random.randrange(1 << 30)}"
    started = time.perf_counter()
    stats: Stats = stats_ref[0]  # the phase the request started in
    try:
        async with session.get(base + kind.path, headers=headers) as response:
            body = await response.read()
            status = response.status
    except asyncio.TimeoutError:
        stats.unexpected(kind.name, "client timeout", "no answer within the client timeout")
        return
    except aiohttp.ClientError as error:
        stats.unexpected(kind.name, f"client error: {type(error).__name__}", str(error))
        return
    entry = stats.kinds[kind.name]
    entry.served += 1
    entry.statuses[status] += 1
    entry.latencies.append(time.perf_counter() - started)
    if status != kind.expect:
        stats.unexpected(kind.name, f"status {status} (expected {kind.expect})", body[:300].decode(errors="replace"))
    elif kind.body is not None and body != kind.body:
        stats.unexpected(kind.name, "wrong body", repr(body[:200]))


async def mixer(session, base, stats_ref, stop: asyncio.Event, rng: random.Random) -> None:
    drawn = [k for k in KINDS.values() if k.weight]
    weights = [k.weight for k in drawn]
    while not stop.is_set():
        await one_request(session, base, rng.choices(drawn, weights)[0], stats_ref)


async def slow_pacer(session, base, stats_ref, stop: asyncio.Event, every: float) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await one_request(session, base, KINDS["slow"], stats_ref)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, every - (time.perf_counter() - started)))


# --------------------------------------------------------------------------------------------
# reloads


@dataclass
class Reload:
    number: int
    at_s: float  # seconds into the measured phase
    written: str  # variant A / variant B / corrupt: ...
    expect: str  # deployed | rejected
    outcome: str = "?"
    error: str = ""
    host_ms: Optional[float] = None  # write -> outcome, by the host's clock (last_reload.at)
    seen_ms: Optional[float] = None  # write -> outcome visible in GET /functions/hello (polled every 10 ms)
    serving_before: str = ""
    serving_after: str = ""
    ok: bool = False
    problem: str = ""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def admin_get(session: aiohttp.ClientSession, admin: str, path: str) -> tuple[int, dict]:
    async with session.get(admin + path) as response:
        return response.status, await response.json(content_type=None)


async def hello_version(session, admin: str) -> dict:
    status, body = await admin_get(session, admin, "/functions/hello")
    if status != 200 or not body.get("versions"):
        raise RuntimeError(f"GET /functions/hello answered {status}: {body}")
    return body["versions"][0]


async def reloader(session, admin: str, path: Path, hello: bytes, stop: asyncio.Event, every: float,
                   reloads: list[Reload], phase_start: float) -> None:
    variants = {"variant A (examples/functions/hello.wasm)": hello,
                "variant B (A + a custom section)": hello + common.custom_section(b"soak-variant", b"B" * 64)}
    corrupt = {"corrupt: truncated module": hello[: len(hello) // 2],
               "corrupt: not wasm": bytes(random.Random(7).randrange(256) for _ in range(2048))}
    number = 0
    while True:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        if stop.is_set():
            return
        number += 1
        current = await hello_version(session, admin)
        if number % 4 == 0:
            written, data = list(corrupt.items())[(number // 4) % 2]
            expect = "rejected"
        else:  # whichever good variant is not serving now
            written, data = next((name, d) for name, d in variants.items() if sha(d) != current["sha256"])
            expect = "deployed"
        record = Reload(number, time.perf_counter() - phase_start, written, expect,
                        serving_before=current["sha256"][:12])
        wall = time.time()
        started = time.perf_counter()
        path.write_bytes(data)  # in place, as `cp` would: truncate, write, close
        deadline = started + 10.0
        while time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
            info = await hello_version(session, admin)
            last = info["last_reload"]
            if last["at"] >= wall - 0.001 and last["outcome"] in ("deployed", "rejected"):
                record.seen_ms = (time.perf_counter() - started) * 1000
                record.host_ms = (last["at"] - wall) * 1000
                record.outcome, record.error = last["outcome"], last.get("error") or ""
                record.serving_after = info["sha256"][:12]
                break
        else:
            record.outcome = "no outcome within 10 s"
        if record.outcome != expect:
            record.problem = f"expected {expect}, got {record.outcome}"
        elif expect == "deployed" and record.serving_after != sha(data)[:12]:
            record.problem = f"serving {record.serving_after}, written {sha(data)[:12]}"
        elif expect == "rejected" and record.serving_after != record.serving_before:
            record.problem = f"old version {record.serving_before} no longer serving ({record.serving_after})"
        record.ok = not record.problem
        reloads.append(record)
        log(f"reload {number}: {written} -> {record.outcome}"
            + (f" in {record.host_ms:.0f} ms" if record.host_ms is not None else "")
            + (f"  PROBLEM: {record.problem}" if record.problem else ""))


# --------------------------------------------------------------------------------------------
# memory


@dataclass
class MemorySample:
    label: str
    at_s: float
    rss_kib: int
    processes: int
    threads: int
    fds: int
    readiness: str = ""


def proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children[parent].append(int(entry.name))
    tree, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        tree.append(pid)
        frontier.extend(children.get(pid, []))
    return tree


def memory_sample(label: str, root: int, at_s: float, readiness: str = "") -> MemorySample:
    rss = threads = fds = processes = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            status = proc_status(pid)
            rss += int(status.get("VmRSS", "0 kB").split()[0])
            threads += int(status.get("Threads", "0"))
            fds += len(os.listdir(f"/proc/{pid}/fd"))
            processes += 1
    return MemorySample(label, at_s, rss, processes, threads, fds, readiness)


async def readiness_word(session, admin: str) -> str:
    try:
        _, body = await admin_get(session, admin, "/actuator/health/readiness")
        return str(body.get("status"))
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
        return f"error: {type(error).__name__}"


async def sampler(session, admin: str, pid: int, stop: asyncio.Event, every: float, phase_start: float,
                  samples: list[MemorySample]) -> None:
    while True:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        if stop.is_set():
            return
        word = await readiness_word(session, admin)
        samples.append(memory_sample("sample", pid, time.perf_counter() - phase_start, word))


# --------------------------------------------------------------------------------------------
# the run


@dataclass
class Result:
    stats: Optional[Stats] = None
    warmup_stats: Optional[Stats] = None
    reloads: list[Reload] = field(default_factory=list)
    points: list[MemorySample] = field(default_factory=list)  # start, mid, end, idle
    samples: list[MemorySample] = field(default_factory=list)
    functions_start: dict = field(default_factory=dict)
    functions_end: dict = field(default_factory=dict)
    readiness_end: str = ""
    log_lines: list[str] = field(default_factory=list)
    busy_before: float = float("nan")
    others_during: float = float("nan")
    loadavg: str = ""
    source: str = ""
    notes: list[str] = field(default_factory=list)


async def drive(args: argparse.Namespace, host: "common.HostProcess", folder: Path, result: Result) -> None:
    base = f"http://{LOOPBACK}:{host.port}"
    admin = f"http://{LOOPBACK}:{host.admin}"
    timeout = aiohttp.ClientTimeout(total=args.client_timeout)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    rng = random.Random(args.seed)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session, \
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as admin_session:
        stats_ref = [Stats()]
        result.warmup_stats = stats_ref[0]
        stop = asyncio.Event()
        load = [asyncio.ensure_future(mixer(session, base, stats_ref, stop, random.Random(rng.random())))
                for _ in range(max(1, args.concurrency - 1))]
        load.append(asyncio.ensure_future(slow_pacer(session, base, stats_ref, stop, args.slow_every)))
        log(f"warm-up: {args.warmup} s of load without reloads")
        await asyncio.sleep(args.warmup)

        # measured phase
        result.stats = stats_ref[0] = Stats()
        result.warmup_stats.ended = time.perf_counter()
        phase_start = time.perf_counter()
        result.functions_start = (await admin_get(admin_session, admin, "/functions"))[1]
        result.points.append(memory_sample("start (after warm-up)", host.proc.pid, 0.0,
                                           await readiness_word(admin_session, admin)))
        log(f"measured phase: {args.duration} s; RSS at start {result.points[0].rss_kib / 1024:.1f} MiB")
        side_stop = asyncio.Event()
        side = [asyncio.ensure_future(reloader(admin_session, admin, folder / "hello.wasm",
                                               (EXAMPLES / "hello.wasm").read_bytes(), side_stop,
                                               args.reload_every, result.reloads, phase_start)),
                asyncio.ensure_future(sampler(admin_session, admin, host.proc.pid, side_stop, args.sample_every,
                                              phase_start, result.samples))]
        await asyncio.sleep(args.duration / 2)
        result.points.append(memory_sample("mid-run", host.proc.pid, time.perf_counter() - phase_start,
                                           await readiness_word(admin_session, admin)))
        log(f"mid-run RSS {result.points[-1].rss_kib / 1024:.1f} MiB; "
            f"{sum(k.served for k in result.stats.kinds.values())} requests so far")
        await asyncio.sleep(max(0.0, args.duration - (time.perf_counter() - phase_start)))
        stop.set()
        side_stop.set()
        await asyncio.gather(*load, *side)
        result.stats.ended = time.perf_counter()
        result.points.append(memory_sample("end (load just stopped)", host.proc.pid, result.stats.ended - phase_start,
                                           await readiness_word(admin_session, admin)))
        result.functions_end = (await admin_get(admin_session, admin, "/functions"))[1]
        await asyncio.sleep(5)
        result.readiness_end = await readiness_word(admin_session, admin)
        result.points.append(memory_sample("end + 5 s idle", host.proc.pid, time.perf_counter() - phase_start,
                                           result.readiness_end))


def write_functions(folder: Path) -> None:
    import wasmtime

    folder.mkdir()
    for module in sorted(EXAMPLES.glob("*.wasm")):
        shutil.copy(module, folder / module.name)
    (folder / "trap.wasm").write_bytes(wasmtime.wat2wasm(TRAP_WAT))
    (folder / "slow.wasm").write_bytes(wasmtime.wat2wasm(SLOW_WAT))
    (folder / "slow.toml").write_text(f"timeout_ms = {SLOW_TIMEOUT_MS}\n")


# --------------------------------------------------------------------------------------------
# report


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def fmt_ms(seconds: float) -> str:
    return "–" if seconds != seconds else f"{seconds * 1000:.1f}"


def function_rows(listing: dict) -> dict[str, dict]:
    return {f["id"]: f for f in listing.get("functions", [])}


def normalize_log(line: str) -> str:
    text = re.sub(r"^\S+ \S+ ", "", line)  # timestamp
    text = re.sub(r"\b[0-9a-f]{12,}\b", "<hex>", text)
    text = re.sub(r"\d+(\.\d+)?", "<n>", text)
    return text[:200]


def render(args: argparse.Namespace, result: Result) -> str:
    stats = result.stats
    assert stats is not None
    elapsed = (stats.ended or time.perf_counter()) - stats.started
    lines = ["# wasm-faas-host soak: mixed load, hot reloads, traps", ""]
    lines += [
        f"- date: {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; "
        f"command: `python bench/soak.py {' '.join(sys.argv[1:])}`".rstrip(),
        f"- CPU: {common.cpu_model()}, {os.cpu_count()} cores; Linux {platform.release()}; Python "
        f"{platform.python_version()}, wasmtime {common.pkg_version('wasmtime')}, aiohttp {common.pkg_version('aiohttp')}",
        f"- host source at the start: {result.source}; 1 worker, "
        "`--log-level warning`, default instance_num (one per CPU), memory state store",
        f"- machine load: other processes used {common.fmt_share(result.busy_before)} of the CPU just before the run "
        f"and {common.fmt_share(result.others_during)} during it; load average at the end {result.loadavg}"
        + ("  **— the machine was busy: throughput and latency are skewed**"
           if any(x == x and x > 0.10 for x in (result.busy_before, result.others_during)) else ""),
        f"- load: {args.concurrency} concurrent client tasks (aiohttp, {args.concurrency}-connection pool, "
        f"{args.client_timeout:g} s client timeout, client in one Python process on the same cores): "
        f"{max(1, args.concurrency - 1)} drawing kinds at random "
        f"({', '.join(f'{k.name} {k.weight}' for k in KINDS.values() if k.weight)}), 1 sending `slow` every "
        f"~{args.slow_every:g} s; {args.warmup} s warm-up (not counted), then {args.duration} s measured",
        f"- reloads: `hello.wasm` overwritten in place every {args.reload_every:g} s, alternating two equivalent "
        "versions; every 4th write a corrupt file",
        "",
    ]

    # -- unexpected outcomes first ----------------------------------------------------------------
    unexpected = [(kind, what, count, stats.kinds[kind].examples.get(what, ""))
                  for kind, entry in stats.kinds.items() for what, count in entry.unexpected.items()]
    if result.warmup_stats is not None:  # the warm-up is not measured, but what went wrong in it counts
        unexpected += [(f"{kind} (warm-up)", what, count, entry.examples.get(what, ""))
                       for kind, entry in result.warmup_stats.kinds.items() for what, count in entry.unexpected.items()]
    bad_reloads = [r for r in result.reloads if not r.ok]
    total_unexpected = sum(c for _, _, c, _ in unexpected) + len(bad_reloads)
    not_up = [s for s in [*result.points, *result.samples] if s.readiness and s.readiness != "UP"]
    if total_unexpected or not_up:
        lines += [f"## ⚠ UNEXPECTED OUTCOMES: {total_unexpected}", ""]
        if unexpected:
            lines += ["| kind | outcome | count | example |", "|---|---|--:|---|"]
            lines += [f"| {kind} | **{what}** | {count} | `{example.replace('|', '/')[:160]}` |"
                      for kind, what, count, example in sorted(unexpected, key=lambda u: -u[2])]
        for record in bad_reloads:
            lines.append(f"- **reload {record.number}** ({record.written}): {record.problem}")
        if not_up:
            lines.append(f"- **readiness not UP** in {len(not_up)} sample(s): "
                         + ", ".join(f"{s.at_s:.0f} s: {s.readiness}" for s in not_up[:5]))
        lines.append("")
    else:
        lines += ["## Unexpected outcomes: none", "",
                  "Every answer had the status (and, for 200s, the body) expected for its kind; no client errors or "
                  "timeouts; every reload had the expected outcome; readiness stayed UP.", ""]

    # -- requests -----------------------------------------------------------------------------------
    served = sum(k.served for k in stats.kinds.values())
    failed = sum(sum(k.unexpected.values()) - sum(c for w, c in k.unexpected.items() if w.startswith(("status", "wrong")))
                 for k in stats.kinds.values())
    lines += ["## Requests", "",
              f"{served:,} answered in {elapsed:.1f} s ({served / elapsed:,.0f} req/s), {failed:,} without an answer "
              "(client errors/timeouts).", "",
              "| kind | what | expected | answered | by status | unexpected | p50 ms | p99 ms | max ms |",
              "|---|---|--:|--:|---|--:|--:|--:|--:|"]
    for name, kind in KINDS.items():
        entry = stats.kinds.get(name, KindStats())
        by_status = ", ".join(f"{status}: {count:,}" for status, count in sorted(entry.statuses.items())) or "–"
        bad = sum(entry.unexpected.values())
        lat = entry.latencies
        lines.append(f"| {name} | {kind.what} | {kind.expect} | {entry.served:,} | {by_status} | "
                     f"{'**' + format(bad, ',') + '**' if bad else 0} | {fmt_ms(pct(lat, 0.5))} | "
                     f"{fmt_ms(pct(lat, 0.99))} | {fmt_ms(max(lat) if lat else float('nan'))} |")
    if result.warmup_stats is not None:
        warm = sum(k.served for k in result.warmup_stats.kinds.values())
        warm_bad = sum(sum(k.unexpected.values()) for k in result.warmup_stats.kinds.values())
        lines += ["", f"Warm-up (not in the table): {warm:,} answered, {warm_bad} unexpected."]

    # -- reloads ------------------------------------------------------------------------------------
    good = [r for r in result.reloads if r.expect == "deployed"]
    corrupt = [r for r in result.reloads if r.expect == "rejected"]
    host_good = [r.host_ms for r in good if r.host_ms is not None]
    start_fn = function_rows(result.functions_start).get("hello", {})
    end_fn = function_rows(result.functions_end).get("hello", {})
    lines += ["", "## Reloads of hello.wasm", "",
              f"{len(result.reloads)} writes: {len(good)} good versions "
              f"({sum(r.outcome == 'deployed' for r in good)} deployed), {len(corrupt)} corrupt "
              f"({sum(r.outcome == 'rejected' for r in corrupt)} rejected with the old version still serving). "
              f"Host counter `reloads` for hello: {start_fn.get('reloads', '?')} at the start → "
              f"{end_fn.get('reloads', '?')} at the end (counts successful replacements only)."
              + (f" Write → new version live (host clock): median {statistics.median(host_good):.0f} ms, "
                 f"max {max(host_good):.0f} ms." if host_good else ""), "",
              "| # | at s | written | expected | host outcome | write → outcome, host ms | serving before → after | ok |",
              "|--:|--:|---|---|---|--:|---|---|"]
    for r in result.reloads:
        outcome = r.outcome + (f": {r.error[:90]}" if r.error else "")
        lines.append(f"| {r.number} | {r.at_s:.1f} | {r.written} | {r.expect} | {outcome.replace('|', '/')} | "
                     f"{'–' if r.host_ms is None else f'{r.host_ms:.0f}'} | {r.serving_before} → {r.serving_after} | "
                     f"{'ok' if r.ok else '**' + r.problem + '**'} |")

    # -- memory -------------------------------------------------------------------------------------
    lines += ["", "## Host memory (VmRSS of the host process and its children)", "",
              "| point | at s | RSS MiB | processes | threads | open fds | readiness |", "|---|--:|--:|--:|--:|--:|---|"]
    for p in result.points:
        lines.append(f"| {p.label} | {p.at_s:.0f} | {mib(p.rss_kib)} | {p.processes} | {p.threads} | {p.fds} | {p.readiness} |")
    if len(result.points) >= 3:
        start, mid, end = result.points[0], result.points[1], result.points[2]
        per_k = (end.rss_kib - start.rss_kib) / max(1, served / 1000)
        lines += ["", f"Growth: start → mid {mib(mid.rss_kib - start.rss_kib)} MiB, mid → end "
                      f"{mib(end.rss_kib - mid.rss_kib)} MiB, start → end {mib(end.rss_kib - start.rss_kib)} MiB "
                      f"({per_k:.2f} KiB per 1,000 requests)."]
    if result.samples:
        lines += ["", f"Every {args.sample_every:g} s (s: MiB): "
                  + ", ".join(f"{s.at_s:.0f}: {mib(s.rss_kib)}" for s in result.samples)]

    # -- the host's own view ------------------------------------------------------------------------
    lines += ["", "## The host's view (`GET /functions` at the end)", "",
              "Counters are per deployed version: for hello, since its last reload; the others since start-up "
              "(warm-up included).", "",
              "| id | requests | errors | instances | replaced instances | inline | demotions | last reload |",
              "|---|--:|--:|--:|--:|---|--:|---|"]
    for fid, f in sorted(function_rows(result.functions_end).items()):
        execution = f.get("execution", {})
        last = f.get("last_reload", {})
        lines.append(f"| {fid} | {f.get('requests', '?'):,} | {f.get('errors', '?'):,} | "
                     f"{f.get('instances', {}).get('total', '?')} | {f.get('replaced_instances', '?')} | "
                     f"{execution.get('inline', '?')} | {execution.get('demotions', '?')} | {last.get('outcome', '?')} |")
    lines += ["", f"- module_cache: start `{json.dumps(result.functions_start.get('module_cache'))}`, end "
                  f"`{json.dumps(result.functions_end.get('module_cache'))}`",
              f"- failed: `{json.dumps(result.functions_end.get('failed'))}`; readiness after the run: "
              f"{result.readiness_end}"]
    counts = Counter(normalize_log(line) for line in result.log_lines)
    lines += ["", f"Host log: {len(result.log_lines):,} warning/error lines" + (", most frequent:" if counts else ".")]
    if counts:
        lines += [""] + [f"- {count:,} × `{text.replace('`', chr(39))}`" for text, count in counts.most_common(8)]
    if result.notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in result.notes]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# main


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=180, help="measured seconds (default 180)")
    parser.add_argument("--quick", action="store_true", help="30 s measured, 5 s warm-up")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of load before measuring (default 10)")
    parser.add_argument("--concurrency", type=int, default=16, help="client tasks / connections in total (default 16)")
    parser.add_argument("--reload-every", type=float, default=3.0, help="seconds between writes of hello.wasm")
    parser.add_argument("--slow-every", type=float, default=1.0, help="seconds between deadline-exceeding requests")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between memory samples")
    parser.add_argument("--client-timeout", type=float, default=10.0, help="per-request client timeout (s)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the request mix")
    parser.add_argument("--out", type=Path, default=None, help="report file (default bench/results/<date>-soak.md)")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = min(args.duration, 30)
    if args.warmup is None:
        args.warmup = 5 if args.quick else 10
    if args.duration <= 0 or args.concurrency < 2:
        parser.error("--duration must be positive and --concurrency at least 2")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    out = args.out or common.default_out("soak")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = Result()
    result.source = common.source_state()
    result.busy_before = common.cpu_busy()
    cpu_before = common.RUN.CpuSample.now() if common.RUN is not None else None
    with tempfile.TemporaryDirectory(prefix="wasm-faas-soak-") as tmp:
        workdir = Path(tmp)
        folder = workdir / "functions"
        write_functions(folder)
        config = common.write_config(workdir, "soak", folder, workdir / "module-cache")
        host = common.start_host(config, workdir / "host.log")
        try:
            try:
                ready_s = common.wait_ready(host)
            except RuntimeError as error:
                log(f"host did not start: {error}")
                return 1
            log(f"host ready in {ready_s * 1000:.0f} ms (pid {host.proc.pid})")
            try:
                asyncio.run(drive(args, host, folder, result))
            except KeyboardInterrupt:
                log("interrupted")
                return 130
            except (RuntimeError, OSError, aiohttp.ClientError) as error:
                log(f"error: {error}")
                if result.stats is None:
                    return 1
                result.notes.append(f"run aborted: {str(error).splitlines()[0]}")
            if host.dead():
                result.notes.append(f"**the host exited during the run**: {host.dead()}")
        finally:
            host.stop()
            result.log_lines = host.problems()
    if cpu_before is not None:
        result.others_during = common.RUN.CpuSample.now().others_share_since(cpu_before)
    changed = common.source_note(result.source, "the host was started at the beginning, with the code of then")
    if changed:
        result.notes.append(changed)
    result.loadavg = common.load_average()
    common.publish(render(args, result), out)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

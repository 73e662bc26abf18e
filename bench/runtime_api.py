"""GetState through the host's runtime gRPC API next to the same client reading Redis itself, in one run.

    python bench/runtime_api.py [--duration S] [--rounds N] [--profile] [--quick] [--out FILE]

Issue 12 asks to show what the runtime API costs an application over talking to the store itself
(issue 16's targets: GetState via gRPC >= 0.6x direct Redis, p99 added <= 0.3 ms; Dapr's published
sidecar figures: 0.48 vCPU at 1,000 req/s and +1.4 ms p90). One key is written in Dapr's layout (a
hash with `data` and `version`, through the host's SaveState), then read for `--duration` seconds by
asyncio tasks at concurrency 1 and 16 in four ways from this one process:

- `layotto`: `spec.proto.runtime.v1.Runtime/GetState` on a grpc.aio channel to `python -m host serve`
  (a real subprocess with one redis `state` component);
- `dapr`: `dapr.proto.runtime.v1.Dapr/GetState`, the same port and store;
- `direct`: redis-py asyncio `HMGET key data version`, the very command the host's store sends;
- `hello`: Layotto's `SayHello` on the same channel, answered on the host's event loop with no store and
  no thread hop: what the gRPC server alone costs.

Each round measures the four back to back (the order rotates every round); rows show medians over the
rounds, ratios and added latencies are medians of each round's pair (neighbours in time). Beside
throughput and p50/p90/p99: the host process tree's CPU (utime + stime from /proc) per 1,000 calls,
Redis's, and this client's. `--profile` adds a py-spy recording of the host during a GetState run.
Measures, asserts nothing; writes bench/results/<date>-runtime-api.md. Keys are under a prefix of this
run's own and deleted at the end.

This module also holds the few helpers bench/events.py and bench/imports.py share with it (Redis
clean-up, per-process CPU, guest builds, the report header); bench/run.py's own helpers (servers,
ports, readiness, machine description) are imported, not copied.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # run.py and cold_start.py live beside this file (bench/ is no package)
    sys.path.insert(0, str(BENCH))

import cold_start  # noqa: E402
import run as bench_run  # noqa: E402

REPO = bench_run.REPO
REDIS_HOST, REDIS_PORT = bench_run.REDIS_HOST, bench_run.REDIS_PORT
LOOPBACK = bench_run.LOOPBACK
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

VARIANTS = ("layotto", "dapr", "direct", "hello")
HELLO = "hello"  # Layotto's SayHello: answered on the event loop, no store, no thread hop: the gRPC floor
CONCURRENCIES = (1, 16)
STORE = "bench"
VALUE = b'{"item":"book1","inventory":100,"warehouse":"east"}'

TARGET_RATIO = 0.6  # issue 16: GetState via gRPC >= 0.6x direct Redis
TARGET_P99_ADDED_MS = 0.3  # issue 16: p99 added <= 0.3 ms
DAPR_VCPU_AT_1000 = 0.48  # Dapr's published sidecar figure: 0.48 vCPU at 1,000 req/s
DAPR_P90_ADDED_MS = 1.4  # ... and +1.4 ms p90


def log(message: str) -> None:
    print(f"[runtime-api] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# helpers shared with bench/events.py and bench/imports.py


def run_prefix(kind: str) -> str:
    """A key / stream prefix of this run's own: Redis is shared with others' tests and benches."""
    return f"bench-{kind}-{os.getpid()}-{secrets.token_hex(3)}-"


def delete_prefixed(prefix: str) -> int:
    """Delete every key whose name contains `prefix` (lock and sequencer keys carry it after
    Layotto's `lock|||<app>||`); returns how many went."""
    import redis

    deleted = 0
    with redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=10) as client:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"*{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(client.unlink(*batch))
                batch = []
        if batch:
            deleted += int(client.unlink(*batch))
    return deleted


def redis_reachable() -> str | None:
    """Why Redis cannot be used, or None."""
    import redis

    try:
        with redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=3) as client:
            client.ping()
        return None
    except redis.RedisError as error:
        return f"Redis at {REDIS_HOST}:{REDIS_PORT} unavailable: {error}"


def redis_pid() -> int | None:
    """The Redis server's pid when it runs on this machine where /proc shows it (for its CPU)."""
    import redis

    with contextlib.suppress(redis.RedisError, KeyError, ValueError):
        with redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=3) as client:
            pid = int(client.info("server")["process_id"])
        if Path(f"/proc/{pid}/stat").exists():
            return pid
    return None


def process_cpu_ticks(pid: int) -> int:
    """utime + stime of one process (all its threads), in clock ticks; 0 once it is gone."""
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(rest[11]) + int(rest[12])


def tree_cpu_ticks(root: int) -> int:
    """utime + stime of `root` and every process below it (a host may run workers)."""
    table = bench_run.process_table()
    return sum(process_cpu_ticks(pid) for pid in bench_run.process_tree(root, table))


@dataclass
class CpuWindow:
    """CPU used during one measurement: the host's tree, Redis, this process, and everyone else."""
    host_pid: int | None
    redis: int | None
    _start: tuple[int, int, float, int, int, int] = (0, 0, 0.0, 0, 0, 0)
    host_s: float = float("nan")
    redis_s: float = float("nan")
    client_s: float = float("nan")
    others_share: float = float("nan")  # share of all cores used by processes that are none of the above

    def _sample(self) -> tuple[int, int, float, int, int, int]:
        busy, total = bench_run.system_busy_ticks()
        return (tree_cpu_ticks(self.host_pid) if self.host_pid else 0,
                process_cpu_ticks(self.redis) if self.redis else 0,
                time.process_time(), bench_run.our_ticks(), busy, total)

    def __enter__(self) -> CpuWindow:
        self._start = self._sample()
        return self

    def __exit__(self, *_: object) -> None:
        end = self._sample()
        host, redis_ticks, client, ours, busy, total = (b - a for a, b in zip(self._start, end, strict=True))
        self.host_s = host / CLK_TCK if self.host_pid else float("nan")
        self.redis_s = redis_ticks / CLK_TCK if self.redis else float("nan")
        self.client_s = float(client)
        if total > 0:  # our tree includes the host; Redis is not ours but works for us
            self.others_share = max(0.0, (busy - ours - redis_ticks) / total)


def build_guest(name: str, out_dir: Path) -> Path:
    """bench/functions/<name>.c -> <out_dir>/<name>.wasm with bench/run.py's zig command and flags."""
    out = out_dir / f"{name}.wasm"
    source = (BENCH / "functions" / f"{name}.c").relative_to(REPO)
    cmd = [sys.executable, "-m", "ziglang", "cc", *bench_run.zig_cflags(), "-o", str(out), str(source)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building {name} failed:\n  {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    return out


@contextlib.contextmanager
def host(config_text: str, workdir: Path, name: str = "host") -> Iterator[bench_run.Server]:
    """`python -m host serve --config <workdir>/<name>.toml` (bench/run.py's start and readiness)."""
    config = workdir / f"{name}.toml"
    config.write_text(config_text)
    with bench_run.host_server(bench_run.Tree(REPO, config=config), 1, workdir) as server:
        yield server


def median(values: list[float]) -> float:
    finite = [v for v in values if v == v]
    return statistics.median(finite) if finite else float("nan")


def fmt_ms(ns: float) -> str:
    return f"{ns / 1e6:.3f} ms" if ns == ns else "–"


def fmt_num(value: float, spec: str = ".3f") -> str:
    return format(value, spec) if value == value else "–"


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "**missed**")


@dataclass
class Header:
    """What the report says about the machine and the run (load at the start and at the end)."""
    command: str
    source: str = field(default_factory=cold_start.source_state)
    load_start: str = field(default_factory=cold_start.load_average)
    busy_before: float = field(default_factory=bench_run.cpu_busy)
    load_end: str = "?"

    def finish(self) -> None:
        self.load_end = cold_start.load_average()

    def lines(self, *extra: str) -> list[str]:
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        busy = f"{self.busy_before:.0%}" if self.busy_before == self.busy_before else "?"
        return [
            f"- date: {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; command: `{self.command}`",
            f"- CPU: {bench_run.cpu_model()}, {os.cpu_count()} cores ({usable} usable); Linux {platform.release()}",
            f"- Python {platform.python_version()}, wasmtime {bench_run.version('wasmtime')}, grpcio "
            f"{bench_run.version('grpcio')}, redis-py {bench_run.version('redis')}, uvloop "
            f"{bench_run.version('uvloop')}; Redis at {REDIS_HOST}:{REDIS_PORT}",
            f"- source: {self.source}",
            f"- CPU busy before the run (other processes): {busy}"
            + ("  **— the machine was not idle; numbers are skewed**"
               if self.busy_before > bench_run.OTHERS_CPU_WARN else ""),
            f"- load average (1 / 5 / 15 min): {self.load_start} at the start, {self.load_end} at the end",
            *extra,
        ]


def source_changed_note(header: Header) -> list[str]:
    note = cold_start.source_note(header.source, "rows measured after the change ran other code")
    return [note] if note else []


# --------------------------------------------------------------------------------------------
# the measurement


@dataclass
class Sample:
    variant: str
    concurrency: int
    calls: int
    seconds: float
    p50_ns: float
    p90_ns: float
    p99_ns: float
    cpu: CpuWindow
    errors: int = 0

    @property
    def rps(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else float("nan")

    def per_1000(self, cpu_s: float) -> float:
        return cpu_s / self.calls * 1000 if self.calls else float("nan")


def percentile(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_ns:
        return float("nan")
    return float(sorted_ns[min(len(sorted_ns) - 1, max(0, int(q * len(sorted_ns) + 0.5) - 1))])


async def drive(call: Callable[[], Awaitable[bytes]], concurrency: int, seconds: float
                ) -> tuple[list[int], int, float]:
    """`concurrency` tasks calling `call` in a loop for `seconds`: latencies (ns), errors, elapsed."""
    latencies: list[int] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        clock = time.perf_counter_ns
        while time.perf_counter() < deadline:
            start = clock()
            try:
                data = await call()
            except Exception:  # noqa: BLE001 - counted; a failing row says so
                errors += 1
                continue
            latencies.append(clock() - start)
            if data != VALUE:
                errors += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - began


@dataclass
class Clients:
    calls: dict[str, Callable[[], Awaitable[bytes]]]
    close: Callable[[], Awaitable[None]]


async def open_clients(grpc_target: str, key: str) -> Clients:
    import grpc
    import redis.asyncio as aioredis

    from host.grpc.proto.dapr.proto.runtime.v1 import dapr_pb2, dapr_pb2_grpc
    from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2, runtime_pb2_grpc

    channel = grpc.aio.insecure_channel(grpc_target)
    layotto = runtime_pb2_grpc.RuntimeStub(channel)
    dapr = dapr_pb2_grpc.DaprStub(channel)
    layotto_request = runtime_pb2.GetStateRequest(store_name=STORE, key=key)
    dapr_request = dapr_pb2.GetStateRequest(store_name=STORE, key=key)
    direct = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT, max_connections=max(CONCURRENCIES))

    hello_request = runtime_pb2.SayHelloRequest(service_name="helloworld", name="bench")

    async def via_hello() -> bytes:
        answer = await layotto.SayHello(hello_request, timeout=10)
        return VALUE if answer.hello == "greetings, bench" else answer.hello.encode()

    async def via_layotto() -> bytes:
        return (await layotto.GetState(layotto_request, timeout=10)).data

    async def via_dapr() -> bytes:
        return (await dapr.GetState(dapr_request, timeout=10)).data

    async def via_redis() -> bytes:
        data, _version = await direct.hmget(key, "data", "version")  # what host/components/state/redis.py sends
        return data if isinstance(data, bytes) else b""

    async def close() -> None:
        await channel.close()
        await direct.aclose()

    # The value goes in through the host (Dapr's hash layout), and each way must read it back.
    await layotto.SaveState(runtime_pb2.SaveStateRequest(store_name=STORE, states=[
        runtime_pb2.StateItem(key=key, value=VALUE)]), timeout=10)
    for name, call in (("layotto", via_layotto), ("dapr", via_dapr), ("direct", via_redis), (HELLO, via_hello)):
        got = await call()
        if got != VALUE:
            raise RuntimeError(f"{name} GetState answered {got!r}, expected {VALUE!r}")
    return Clients({"layotto": via_layotto, "dapr": via_dapr, "direct": via_redis, HELLO: via_hello}, close)


async def measure(clients: Clients, variant: str, concurrency: int, seconds: float, warmup: float,
                  host_pid: int, redis: int | None) -> Sample:
    if warmup > 0:
        await drive(clients.calls[variant], concurrency, warmup)
    # The host's CPU is only the grpc variants' cost; for direct it shows what an idle host uses.
    with CpuWindow(host_pid, redis) as cpu:
        latencies, errors, elapsed = await drive(clients.calls[variant], concurrency, seconds)
    latencies.sort()
    return Sample(variant, concurrency, len(latencies), elapsed, percentile(latencies, 0.50),
                  percentile(latencies, 0.90), percentile(latencies, 0.99), cpu, errors)


# --------------------------------------------------------------------------------------------
# py-spy: where the host's time goes during a gRPC run


PROFILE_RATE = 200  # samples per second
PROFILE_SECONDS = 12  # native unwinding is slow: py-spy keeps up with far fewer than PROFILE_RATE a second


def profile_host(pid: int, seconds: float, out_dir: Path, native: bool = True) -> tuple[str, str]:
    """(a `py-spy dump` of the host's threads, a summary of `py-spy record --threads [--native]`), or why
    not. Native frames show the C work (gRPC's core, the event loop) that Python frames hide; when py-spy
    cannot merge them (it sometimes cannot), the recording is retried without them."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        return "py-spy not installed (`pip install py-spy` in the venv)", ""
    dump = subprocess.run([py_spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60)
    for with_native in ([True, False] if native else [False]):
        raw = out_dir / f"host-{pid}-{time.monotonic_ns()}.collapsed"
        record = subprocess.run([py_spy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
                                 "--rate", str(PROFILE_RATE), "--format", "raw", "--threads",
                                 *(["--native"] if with_native else ["--nonblocking"]), "--output", str(raw)],
                                capture_output=True, text=True, timeout=seconds + 60)
        if record.returncode == 0 and raw.exists():
            return (dump.stdout or dump.stderr).strip(), summarize_collapsed(raw.read_text(), native=with_native)
    return (dump.stdout or dump.stderr).strip(), f"py-spy record failed: {(record.stderr or record.stdout)[-500:]}"


def _frame(frame: str) -> str:
    """Native frames without symbols (`0x7f.. (lib.so)`) merge per library."""
    if frame.startswith("0x") and " (" in frame:
        return "<native> " + frame.split(" ", 1)[1]
    return frame


def _thread(frame: str) -> str:
    """`thread (1234): runtime-api_3` -> `runtime-api_*` (a pool's threads count together)."""
    name = frame.split(":", 1)[1].strip() if ":" in frame else frame
    stem = name.rstrip("0123456789")
    return stem + "*" if stem != name and stem.endswith(("_", "-")) else name


RUNNING = "running"
STATES = (RUNNING, "GIL wait", "I/O wait", "idle")


def _state(frames: list[str]) -> str:
    """What a thread was doing in one native sample. CPython's locks and queues wait in
    PyThread_acquire_lock_timed (idle: no work); 3.11's take_gil is inlined into its caller and waits in
    pthread_cond_timedwait (a thread back from a system call or a switch waiting for the GIL); a stack
    ending in poll / epoll waits for a socket or timer."""
    names = [frame.split(" (", 1)[0] for frame in frames]
    if "PyThread_acquire_lock_timed" in names:
        return "idle"
    if "pthread_cond_timedwait" in names:
        before = frames[names.index("pthread_cond_timedwait") - 1] if names.index("pthread_cond_timedwait") else ""
        return "idle" if "cygrpc" in before else "GIL wait"  # gRPC core's own condition variables: idle
    if names[-1] in ("poll", "epoll_wait", "epoll_pwait", "select", "ppoll"):
        return "I/O wait"
    return RUNNING


# Frames under every stack of a thread (start-up, thread bootstrap): left out of the inclusive list.
_PLUMBING = ("(threading.py:", "<frozen runpy>", "(asyncio/runners.py:", "(host/__main__.py:", "(host/cli/__init__.py:",
             "(host/process/serve.py:", "<native> (libc.so", "thread_run (", "(concurrent/futures/thread.py:",
             "(loop.c:", "(object.h:", "(core.c:", "(queue.h:", "(loop-watcher.c:")


def summarize_collapsed(text: str, top: int = 16, native: bool = True) -> str:
    """Collapsed stacks (`thread (tid): name;a;b;c count`) -> per thread, the share of its samples
    running / waiting for the GIL / in an I/O wait / idle (native stacks only: without them every
    sample py-spy keeps counts as running); then the heaviest frames of the running samples, self
    (leaf) and inclusive, as shares of all running samples."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    threads: dict[str, dict[str, int]] = {}
    running = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame.strip() for frame in stack.split(";") if frame.strip()]
        thread = _thread(frames.pop(0)) if frames and frames[0].startswith("thread (") else "?"
        if not frames:
            continue
        state = _state(frames) if native else RUNNING
        states = threads.setdefault(thread, dict.fromkeys(STATES, 0))
        states[state] += count
        if state != RUNNING:
            continue
        running += count
        merged = [_frame(frame) for frame in frames]
        own[merged[-1]] = own.get(merged[-1], 0) + count
        for frame in set(merged):
            if not any(marker in frame for marker in _PLUMBING):
                inclusive[frame] = inclusive.get(frame, 0) + count
    if not running:
        return "no running samples"

    def table(counts: dict[str, int]) -> list[str]:
        return [f"{n / running:6.1%}  {frame}" for frame, n in sorted(counts.items(), key=lambda kv: -kv[1])[:top]]

    by_thread = [f"{name:28} {sum(states.values()):6} samples: "
                 + ", ".join(f"{state} {n / sum(states.values()):.0%}" for state, n in states.items() if n)
                 for name, states in sorted(threads.items(), key=lambda kv: -kv[1][RUNNING])]
    how = "native frames included" if native else "Python frames only (--nonblocking: what py-spy sees as active)"
    return "\n".join([f"py-spy record at {PROFILE_RATE} Hz, {how}", "", "threads (samples, and what they were doing):",
                      *by_thread, "", f"running samples ({running}), self (leaf frames):", *table(own), "",
                      "running samples, inclusive (thread start-up and event-loop plumbing left out):",
                      *table(inclusive)])


# --------------------------------------------------------------------------------------------
# report


@dataclass
class Result:
    header: Header
    samples: list[Sample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dump: str = ""
    profile: str = ""


def rows(result: Result, variant: str, concurrency: int) -> list[Sample]:
    return [s for s in result.samples if s.variant == variant and s.concurrency == concurrency]


def med(samples: list[Sample], value: Callable[[Sample], float]) -> float:
    return median([value(s) for s in samples])


def paired(samples: list[Sample], direct: list[Sample], value: Callable[[Sample, Sample], float]) -> list[float]:
    """`value(way, direct)` for each round: the two ran seconds apart, under the same foreign load."""
    return [value(s, d) for s, d in zip(samples, direct, strict=False)]


def render(result: Result, args: argparse.Namespace) -> str:
    lines = ["# Runtime API: GetState via gRPC next to direct Redis", "",
             *result.header.lines(f"- load: {args.rounds} round(s), each measuring {', '.join(VARIANTS)} back to "
                                  f"back (order rotating), {args.warmup} s warm-up + {args.duration} s per row; "
                                  "client: one process, asyncio (default loop), one grpc.aio channel / a redis-py "
                                  "asyncio pool; client, host and Redis share the cores"),
             "",
             "| conc. | way | calls/s | p50 | p90 | p99 | host CPU s / 1,000 calls (= vCPU at 1,000/s) | "
             "Redis CPU s / 1,000 | client CPU s / 1,000 | others' CPU | errors | vs direct |",
             "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    # Ratios and added latencies are medians of each round's pair (way, direct), not ratios of medians.
    checks: list[str] = []
    for concurrency in CONCURRENCIES:
        direct = rows(result, "direct", concurrency)
        for variant in VARIANTS:
            samples = rows(result, variant, concurrency)
            if not samples:
                continue
            rps = med(samples, lambda s: s.rps)
            ratios = paired(samples, direct, lambda s, d: s.rps / d.rps if d.rps > 0 else float("nan"))
            each = ", ".join(f"{r:.2f}×" for r in ratios)
            vs = "" if variant == "direct" else f"**{median(ratios):.2f}×** (rounds: {each})"
            host_cpu = fmt_num(med(samples, lambda s: s.per_1000(s.cpu.host_s))) if variant != "direct" else \
                f"({fmt_num(med(samples, lambda s: s.per_1000(s.cpu.host_s)))}: idle)"
            lines.append(
                f"| {concurrency} | {variant} | {rps:,.0f} | {fmt_ms(med(samples, lambda s: s.p50_ns))} | "
                f"{fmt_ms(med(samples, lambda s: s.p90_ns))} | {fmt_ms(med(samples, lambda s: s.p99_ns))} | "
                f"{host_cpu} | {fmt_num(med(samples, lambda s: s.per_1000(s.cpu.redis_s)))} | "
                f"{fmt_num(med(samples, lambda s: s.per_1000(s.cpu.client_s)))} | "
                f"{bench_run.fmt_share(med(samples, lambda s: s.cpu.others_share))} | "
                f"{sum(s.errors for s in samples)} | {vs} |")
        for variant in ("layotto", "dapr"):
            samples = rows(result, variant, concurrency)
            if not samples or not direct:
                continue
            ratio = median(paired(samples, direct, lambda s, d: s.rps / d.rps if d.rps > 0 else float("nan")))
            p99_added = median(paired(samples, direct, lambda s, d: s.p99_ns - d.p99_ns)) / 1e6
            p90_added = median(paired(samples, direct, lambda s, d: s.p90_ns - d.p90_ns)) / 1e6
            vcpu = med(samples, lambda s: s.per_1000(s.cpu.host_s))
            checks += [
                f"| {variant}, {concurrency} conc.: calls/s ÷ direct | {ratio:.2f}× | ≥ {TARGET_RATIO}× (issue 16) | "
                f"{verdict(ratio >= TARGET_RATIO)} |",
                f"| {variant}, {concurrency} conc.: p99 added | {p99_added:+.3f} ms | ≤ {TARGET_P99_ADDED_MS} ms "
                f"(issue 16) | {verdict(p99_added <= TARGET_P99_ADDED_MS)} |",
                f"| {variant}, {concurrency} conc.: p90 added | {p90_added:+.3f} ms | Dapr sidecar: "
                f"+{DAPR_P90_ADDED_MS} ms | {'below' if p90_added < DAPR_P90_ADDED_MS else 'above'} |",
                f"| {variant}, {concurrency} conc.: host CPU s / 1,000 calls | {fmt_num(vcpu)} | Dapr sidecar: "
                f"{DAPR_VCPU_AT_1000} vCPU at 1,000 req/s | {'below' if vcpu < DAPR_VCPU_AT_1000 else 'above'} |"]
    lines += ["", "| check | measured | target / reference | |", "|---|--:|---|---|", *checks, "",
              "`hello` is Layotto's SayHello on the same channel: answered on the host's event loop with no store "
              "and no thread hop, it is what the gRPC server alone costs. Host CPU per call (ms, medians):"]
    for concurrency in CONCURRENCIES:
        hello = med(rows(result, HELLO, concurrency), lambda s: s.per_1000(s.cpu.host_s))
        get = med(rows(result, "layotto", concurrency), lambda s: s.per_1000(s.cpu.host_s))
        lines.append(f"- concurrency {concurrency}: SayHello {fmt_num(hello)}, GetState {fmt_num(get)}: the API, "
                     f"the executor hop and the Redis call add {fmt_num(get - hello)}")
    lines += ["", f"Each round's samples (calls/s; {' / '.join(VARIANTS)}):", ""]
    for concurrency in CONCURRENCIES:
        per_round = zip(*(rows(result, v, concurrency) for v in VARIANTS), strict=False)
        text = "; ".join(" / ".join(f"{s.rps:,.0f}" for s in group) for group in per_round)
        lines.append(f"- concurrency {concurrency}: {text}")
    notes = [*result.notes, *source_changed_note(result.header)]
    if notes:
        lines += ["", "Notes:", "", *[f"- {note}" for note in notes]]
    if result.profile:
        lines += ["", "## py-spy of the host during a gRPC run (layotto, concurrency 16)", "", "```",
                  result.profile, "```"]
    if result.dump:
        lines += ["", "One `py-spy dump` of the host in that run:", "", "```", result.dump[:6000], "```"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# main


def config_text(workdir: Path, grpc_port: int, prefix: str) -> str:
    return f"""\
app_id = "{prefix}app"

[server]
grpc = "{LOOPBACK}:{grpc_port}"
dapr_http = ""
cache_dir = {str(workdir / "module-cache")!r}

[state.{STORE}]
type = "redis"
address = "{REDIS_HOST}:{REDIS_PORT}"
"""


async def run_rounds(args: argparse.Namespace, result: Result, server: bench_run.Server, grpc_port: int,
                     key: str, workdir: Path) -> None:
    clients = await open_clients(f"{LOOPBACK}:{grpc_port}", key)
    host_pid = server.procs[0].pid
    redis = redis_pid()
    if redis is None:
        result.notes.append("Redis's pid is not visible here: its CPU column is empty")
    try:
        for concurrency in CONCURRENCIES:
            for round_index in range(args.rounds):
                shift = round_index % len(VARIANTS)
                order = VARIANTS[shift:] + VARIANTS[:shift]
                for variant in order:
                    log(f"concurrency {concurrency}, round {round_index + 1}/{args.rounds}: {variant}")
                    warmup = args.warmup if round_index == 0 else min(args.warmup, 0.5)
                    result.samples.append(await measure(clients, variant, concurrency, args.duration, warmup,
                                                        host_pid, redis))
                    if server.dead():
                        raise RuntimeError(server.dead())
        if args.profile:
            log("py-spy: profiling the host during a layotto run at concurrency 16")
            task = asyncio.ensure_future(drive(clients.calls["layotto"], 16, PROFILE_SECONDS + 4))
            await asyncio.sleep(1)
            result.dump, result.profile = await asyncio.to_thread(profile_host, host_pid, PROFILE_SECONDS, workdir)
            latencies, _errors, elapsed = await task
            result.profile += (f"\n\n(calls/s while py-spy sampled, which pauses the host at each sample: "
                               f"{len(latencies) / elapsed:,.0f})")
    finally:
        await clients.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=2.0, help="measured seconds per row (default 2)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before a row (default 1)")
    parser.add_argument("--rounds", type=int, default=7,
                        help="alternating rounds; rows show medians (default 7: short rows, many pairs, because a "
                             "shared machine's load drifts)")
    parser.add_argument("--profile", action="store_true", help="py-spy the host during one extra gRPC run")
    parser.add_argument("--quick", action="store_true", help="1 s rows, 1 round: a smoke run")
    parser.add_argument("--out", type=Path, default=None, help="report file (default results/<date>-runtime-api.md)")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.rounds = 1.0, 0.3, 1
    args.rounds = max(1, args.rounds)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally blocks stop the host, delete keys
    problem = redis_reachable()
    if problem:
        print(f"runtime-api: {problem}", file=sys.stderr)
        return 1
    result = Result(Header(f"python bench/runtime_api.py {' '.join(sys.argv[1:] if argv is None else argv)}".strip()))
    prefix = run_prefix("rtapi")
    key = f"{prefix}book1"
    try:
        with tempfile.TemporaryDirectory(prefix="wasm-faas-rtapi-") as tmp:
            workdir = Path(tmp)
            grpc_port = bench_run.free_port()
            with host(config_text(workdir, grpc_port, prefix), workdir) as server:
                asyncio.run(run_rounds(args, result, server, grpc_port, key, workdir))
                bench_run.note_problems(bench_run.Report(notes=result.notes), server)
    except KeyboardInterrupt:
        log("interrupted; host stopped")
        return 130
    except (RuntimeError, OSError) as error:
        log(f"error: {error}")
        if not result.samples:
            return 1
        result.notes.append(f"run aborted: {str(error).splitlines()[0]}")
    finally:
        log(f"deleted {delete_prefixed(prefix)} key(s) under {prefix}")
    result.header.finish()
    cold_start.publish(render(result, args), args.out or cold_start.default_out("runtime-api"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

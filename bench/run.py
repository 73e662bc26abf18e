"""Side-by-side benchmark: every host scenario right next to its bare-aiohttp baseline, in one run.

    python bench/run.py [--duration S] [--connections C] [--quick] [--out FILE] [--also-tree DIR]

Starts every server itself on free 127.0.0.1 ports, warms up, drives it with wrk, stops it, and
prints a markdown table (requests/s, p50, p99, non-2xx, host/baseline) plus the targets; with
--also-tree, another checkout's host is measured in the same rounds (before/after a change).
Progress goes to stderr, the report to stdout (and --out). See bench/README.md.

Needs only the standard library, aiohttp (bench/baseline.py), redis (seeding book1) and the
`wrk` binary. Nothing here asserts speed: a missed target is reported, not failed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import os
import platform
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
CPU_HASH_SRC = BENCH / "functions" / "cpu_hash.c"
NOOP_SRC = BENCH / "functions" / "noop.wat"  # hello's answer from one host call: the ABI path's floor
# Issue 16's targets (ratios of req/s in one run, medians).
TARGET_HELLO = 1.00  # hello / bare aiohttp, with 1 worker and with 2
TARGET_DEMO = 0.80  # demo chain / aiohttp + redis.asyncio GET
TARGET_GUEST = 0.85  # hello / the no-op function answering the same bytes (the ABI path alone)
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
LOOPBACK = "127.0.0.1"

HELLO_BODY = b"hello method=GET path=/ greeting=-\n"
# The demo's book under a name of this run's own (Redis is shared): written before row c, deleted after it.
DEMO_KEY = f"bench-{os.getpid()}-book1"
DEMO_PATH = f"/?name={DEMO_KEY}"
DEMO_BODY = f"There are 100 inventories for {DEMO_KEY}.".encode()
CPU_HASH_ANSWER = re.compile(rb"[0-9a-f]{16}\n")

# Fallback for scripts/build_guests.py's CFLAGS (used when that module cannot be loaded).
CPU_HASH_CFLAGS = ["-target", "wasm32-wasi", "-mexec-model=reactor", "-O2", "-I", "sdk-guest/c", "-s",
                   "-Wl,-z,stack-size=1048576"]

# urllib honours http_proxy; the benchmark must only ever talk to 127.0.0.1 directly.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))

SCENARIOS = ("hello", "workers", "demo", "latency", "cpu", "guest")
OTHERS_CPU_WARN = 0.10  # above this share of the cores used by foreign processes, a row is suspect


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# wrk


@dataclass
class WrkResult:
    rps: float
    p50_us: float
    p99_us: float
    requests: int
    non_2xx: int  # wrk's "Non-2xx or 3xx responses" (status >= 400)
    socket_errors: int  # connect + read + write + timeout
    others_cpu: float = float("nan")  # share of all cores used by processes not ours during the run
    # CPU time the server's process tree spent per answered request: unlike req/s, barely moved by
    # foreign load on the machine (a busy neighbour steals time, not instructions)
    server_cpu_us: float = float("nan")


_TIME_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def parse_wrk_time(text: str) -> float:
    """`812.00us`, `1.23ms`, `2.00s` -> microseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise ValueError(f"unexpected wrk time {text!r}")
    return float(match.group(1)) * _TIME_UNITS_US[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """Parse `wrk --latency` output (the Latency Distribution block gives p50/p99)."""
    def find(pattern: str, default: str | None = None) -> str:
        match = re.search(pattern, output, re.MULTILINE)
        if match:
            return match.group(1)
        if default is None:
            raise ValueError(f"wrk output lacks {pattern!r}:\n{output}")
        return default

    socket_errors = 0
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if match:
        socket_errors = sum(int(n) for n in match.groups())
    return WrkResult(
        rps=float(find(r"^Requests/sec:\s+([\d.]+)")),
        p50_us=parse_wrk_time(find(r"^\s+50%\s+(\S+)")),
        p99_us=parse_wrk_time(find(r"^\s+99%\s+(\S+)")),
        requests=int(find(r"^\s+(\d+) requests in")),
        non_2xx=int(find(r"Non-2xx or 3xx responses: (\d+)", "0")),
        socket_errors=socket_errors,
    )


@dataclass
class Load:
    """How wrk drives one measurement."""
    duration: int
    warmup: int
    threads: int
    rounds: int = 1  # each pair measured this many times, alternating; the medians are reported
    busy_before: float = 0.0  # CPU share used by others just before the run


def run_wrk(url: str, headers: dict[str, str], connections: int, seconds: int, threads: int) -> str:
    cmd = ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency",
           "--timeout", "10s"]
    for key, value in headers.items():
        cmd += ["-H", f"{key}: {value}"]
    proc = subprocess.run([*cmd, url], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return proc.stdout


def measure(url: str, headers: dict[str, str], connections: int, load: Load, warm_up: bool = True,
            server_pids: Sequence[int] = ()) -> WrkResult:
    """Warm up (JIT-free, but pools, caches, Redis connections and CPU clocks), then measure."""
    if warm_up and load.warmup > 0:
        run_wrk(url, headers, connections, load.warmup, load.threads)
    before, server_before = CpuSample.now(), tree_ticks(server_pids)
    result = parse_wrk(run_wrk(url, headers, connections, load.duration, load.threads))
    result.others_cpu = CpuSample.now().others_share_since(before)
    if server_pids and result.requests > 0:
        ticks = tree_ticks(server_pids) - server_before
        result.server_cpu_us = ticks * 1e6 / os.sysconf("SC_CLK_TCK") / result.requests
    return result


def tree_ticks(roots: Sequence[int]) -> int:
    """CPU ticks of these processes and their descendants (a server's workers)."""
    if not roots:
        return 0
    table = process_table()
    pids = set().union(*(process_tree(root, table) for root in roots))
    return sum(table[pid][1] for pid in pids if pid in table)


# --------------------------------------------------------------------------------------------
# CPU used by others: the machine may be shared, and every row is skewed by foreign load


def system_busy_ticks() -> tuple[int, int]:
    """(busy, total) ticks over all cores, from /proc/stat. irq/softirq are left out of busy: they are
    mostly our own loopback traffic, and per-process times do not include them."""
    fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = fields
    return user + nice + system + steal, sum(fields)


def process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, CPU ticks: utime + stime + cutime + cstime) for every process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            rest = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended meanwhile
        table[int(entry.name)] = (int(rest[1]), sum(int(n) for n in rest[11:15]))
    return table


def process_tree(root: int, table: dict[int, tuple[int, int]]) -> set[int]:
    """root and all its descendants."""
    tree, frontier = set(), {root}
    while frontier:
        tree |= frontier
        frontier = {pid for pid, (parent, _) in table.items() if parent in frontier} - tree
    return tree


def our_ticks() -> int:
    """CPU ticks of this process tree: live descendants (servers, their workers, threads included)
    plus children already reaped (every finished wrk)."""
    return tree_ticks([os.getpid()])


@dataclass
class CpuSample:
    busy: int
    total: int
    ours: int

    @classmethod
    def now(cls) -> CpuSample:
        try:
            busy, total = system_busy_ticks()
            return cls(busy, total, our_ticks())
        except (OSError, ValueError, IndexError):
            return cls(0, 0, 0)

    def others_share_since(self, before: CpuSample) -> float:
        total = self.total - before.total
        if total <= 0:
            return float("nan")
        others = (self.busy - before.busy) - (self.ours - before.ours)
        return max(0.0, others / total)


# --------------------------------------------------------------------------------------------
# servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0
             ) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with HTTP.open(request, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


@dataclass
class Server:
    """A group of server processes we started (each in its own session, so Ctrl-C reaches us first)."""
    name: str
    port: int
    log_path: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def dead(self) -> str | None:
        for proc in self.procs:
            if proc.poll() is not None:
                return f"{self.name} exited with code {proc.returncode}:\n{self.log_tail()}"
        return None

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def logged_problems(self) -> list[str]:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [line for line in text.splitlines() if re.search(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b", line)]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)  # the group: also the host's worker processes
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


class WorkersUnsupported(Exception):
    """The host does not know `--workers` yet."""


@dataclass(frozen=True)
class Tree:
    """A checkout whose host is measured: this one, or --also-tree's (same venv, that tree's code,
    examples and generated config)."""
    root: Path
    label: str = ""  # "" for this checkout; names the other tree's rows
    config: Path = Path()

    @property
    def examples(self) -> Path:
        return self.root / "examples" / "functions"

    def env(self) -> dict[str, str] | None:
        """For another tree, its code first on the path (cwd alone does not reach worker processes)."""
        if self.root == REPO:
            return None
        return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(self.root),
                                                                          os.environ.get("PYTHONPATH")]))}


def spawn(cmd: list[str], log_file: IO[bytes], stdout: int | None = None, cwd: Path = REPO,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=stdout or log_file,
                            stderr=log_file, start_new_session=True)


def wait_host_ready(server: Server, admin_port: int, timeout: float = 120.0) -> None:
    url = f"http://{LOOPBACK}:{admin_port}/actuator/health/readiness"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        problem = server.dead()
        if problem:
            if "--workers" in problem and ("unrecognized arguments" in problem or "no such option" in problem):
                raise WorkersUnsupported(problem)
            raise RuntimeError(problem)
        with contextlib.suppress(OSError):
            status, _, body = http_get(url, timeout=1.0)
            if status == 200:
                return
            if b'"DOWN"' in body:  # start-up failed for good (e.g. a function did not load)
                raise RuntimeError(f"{server.name} is DOWN: {body.decode(errors='replace')}\n{server.log_tail()}")
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready after {timeout:.0f}s:\n{server.log_tail()}")


@contextlib.contextmanager
def host_server(tree: Tree, workers: int, workdir: Path) -> Iterator[Server]:
    port, admin = free_port(), free_port()
    label = f" {tree.label}" if tree.label else ""
    server = Server(f"host{label} ({workers} worker{'s' if workers > 1 else ''})", port,
                    workdir / f"host{label.replace(' ', '-')}-{workers}w.log")
    cmd = [sys.executable, "-m", "host", "serve", "--config", str(tree.config), "--listen", f"{LOOPBACK}:{port}",
           "--admin", f"{LOOPBACK}:{admin}", "--log-level", "warning"]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    with open(server.log_path, "ab") as log_file:
        server.procs.append(spawn(cmd, log_file, cwd=tree.root, env=tree.env()))
    try:
        wait_host_ready(server, admin)
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def baseline_server(processes: int, workdir: Path, timeout: float = 30.0) -> Iterator[Server]:
    """bench/baseline.py started `processes` times on one port (SO_REUSEPORT)."""
    port = free_port()
    server = Server(f"bare aiohttp ({processes} process{'es' if processes > 1 else ''})", port,
                    workdir / f"bare-{processes}p.log")
    cmd = [sys.executable, str(BENCH / "baseline.py"), "--listen", f"{LOOPBACK}:{port}",
           "--redis", f"{REDIS_HOST}:{REDIS_PORT}"]
    try:
        with open(server.log_path, "ab") as log_file:
            for _ in range(processes):
                server.procs.append(spawn(cmd, log_file, stdout=subprocess.PIPE))
        for proc in server.procs:  # each prints "ready" once it listens
            assert proc.stdout is not None  # spawned with stdout=PIPE
            ready, _, _ = select.select([proc.stdout], [], [], timeout)
            if not ready or proc.stdout.readline().strip() != b"ready":
                raise RuntimeError(server.dead() or f"{server.name} not ready after {timeout:.0f}s")
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------
# set-up: the cpu_hash guest, the host config, Redis


def zig_cflags() -> list[str]:
    """The same flags as scripts/build_guests.py (which only builds examples/ and tests/)."""
    spec = importlib.util.spec_from_file_location("build_guests", REPO / "scripts" / "build_guests.py")
    try:
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        return list(module.CFLAGS)
    except Exception as error:  # noqa: BLE001 - the script is not ours; fall back to known flags
        log(f"could not read CFLAGS from scripts/build_guests.py ({error}); using the bench's own")
        return CPU_HASH_CFLAGS


def build_cpu_hash(out_dir: Path) -> Path:
    out = out_dir / "cpu_hash.wasm"
    cmd = [sys.executable, "-m", "ziglang", "cc", *zig_cflags(), "-o", str(out), str(CPU_HASH_SRC.relative_to(REPO))]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building cpu_hash failed:\n  {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    return out


def write_host_config(workdir: Path, functions_dir: Path, instance_num: int, tree: Tree) -> Tree:
    """The tree's example functions + cpu_hash (when built); state_demo is Redis, as in configs/redis.toml.
    Returns the tree with its config."""
    suffix = f"-{tree.label}" if tree.label else ""
    config = workdir / f"host{suffix}.toml"
    module = functions_dir / "cpu_hash.wasm"
    cpu_hash = f"""
[functions.cpu_hash]
path = {str(module)!r}
instance_num = 2        # two instances on one worker: parallel only if the GIL is released
""" if module.exists() else ""
    # The runtime API listeners are not measured here (and would take fixed ports); a tree from before
    # the runtime API (no host/grpc/server.py) has no such settings and refuses them.
    api_off = 'grpc = ""\ndapr_http = ""\n' if (tree.root / "host" / "grpc" / "server.py").exists() else ""
    config.write_text(f"""\
functions_dirs = [{str(tree.examples)!r}, {str(functions_dir)!r}]

[server]
cache_dir = {str(workdir / f"module-cache{suffix}")!r}
{api_off}
[function_defaults]
instance_num = {instance_num}
{cpu_hash}
[state.state_demo]
type = "redis"
address = "{REDIS_HOST}:{REDIS_PORT}"
""")
    return replace(tree, config=config)


def seed_redis() -> str | None:
    """`set <DEMO_KEY> 100`; returns why not, if Redis is unreachable."""
    try:
        import redis

        with redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=3) as client:
            client.set(DEMO_KEY, "100")
        return None
    except Exception as error:  # noqa: BLE001 - reported as a skipped row
        return f"Redis at {REDIS_HOST}:{REDIS_PORT} unavailable: {error}"


def unseed_redis() -> None:
    """Delete what seed_redis wrote: Redis is shared with others' tests."""
    import redis

    try:
        with redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=3) as client:
            client.delete(DEMO_KEY)
    except redis.RedisError as error:
        log(f"could not delete {DEMO_KEY} from Redis: {error}")


# --------------------------------------------------------------------------------------------
# results


@dataclass
class Row:
    scenario: str
    server: str
    connections: int
    result: WrkResult | None = None
    ratio: float | None = None  # host / baseline (or 2 conns / 1 conn)
    note: str = ""


@dataclass
class Check:
    name: str
    measured: float | None
    target: str
    passed: bool | None
    unit: str = "×"


@dataclass
class Comparison:
    """--also-tree: the other host against this one in one scenario, medians and each round."""
    scenario: str
    label: str
    ratio: float | None  # other / current, of the medians
    rounds: list[float | None]  # other / current in each round
    bare_rps: list[float]  # the baseline's req/s in each round: its spread is the machine's noise


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    loadavg_start: str = "?"
    loadavg_end: str = "?"


def ratio(a: WrkResult | None, b: WrkResult | None) -> float | None:
    return a.rps / b.rps if a and b and b.rps > 0 else None


def check_ratio(report: Report, name: str, value: float | None, minimum: float) -> None:
    report.checks.append(Check(name, value, f"≥ {minimum:.2f}×", None if value is None else value >= minimum))


def verify_answer(report: Report, server: Server, headers: dict[str, str], path: str,
                  body: bytes | re.Pattern[bytes], extra_header: tuple[str, str] | None = None) -> None:
    """One request before measuring: wrk counts statuses, not bodies."""
    try:
        status, got_headers, got_body = http_get(server.url + path, headers)
    except OSError as error:
        report.notes.append(f"{server.name}, id {headers.get('id')}: request failed: {error}")
        return
    problems = []
    if status != 200:
        problems.append(f"status {status}")
    if not (body.fullmatch(got_body) if isinstance(body, re.Pattern) else got_body == body):
        problems.append(f"body {got_body[:120]!r}, expected {body!r}")
    if extra_header and got_headers.get(extra_header[0]) != extra_header[1]:
        problems.append(f"header {extra_header[0]}={got_headers.get(extra_header[0])!r}")
    if problems:
        report.notes.append(f"{server.name}, id {headers.get('id')}: wrong answer: {'; '.join(problems)}")


# --------------------------------------------------------------------------------------------
# scenarios


@dataclass
class Context:
    load: Load
    connections: int
    workdir: Path
    trees: list[Tree]  # this checkout first, then --also-tree's
    report: Report
    hello_1w: dict[str, WrkResult] = field(default_factory=dict)  # for the 2-worker / 1-worker ratio


HELLO = {"id": "hello"}
NOOP = {"id": "noop"}
DEMO = {"id": "id_1"}
DEMO_BLOCKING = {"id": "id_1_blocking"}  # bench/baseline.py: the same chain, its GET blocking the loop
CPU = {"id": "cpu_hash"}


def median(results: list[WrkResult]) -> WrkResult:
    """The measurement with the median req/s (the upper one of an even count)."""
    return sorted(results, key=lambda result: result.rps)[len(results) // 2]


def rounds_note(ratios: list[float | None]) -> str:
    return "rounds: " + ", ".join("-" if r is None else f"{r:.2f}×" for r in ratios) if len(ratios) > 1 else ""


def pair(ctx: Context, scenario: str, hosts: list[Server], bare: Server, headers: dict[str, str], path: str,
         body: bytes | re.Pattern[bytes], connections: int, extra: tuple[str, str] | None = None
         ) -> tuple[WrkResult, WrkResult]:
    """Each host (this tree's, then --also-tree's), then the baseline right after, same load;
    `--rounds` times, alternating (a noisy machine drifts: each round's rows are neighbours in
    time). Rows show the medians; returns this tree's host's and the baseline's."""
    servers = [*hosts, bare]
    results: list[list[WrkResult]] = [[] for _ in servers]
    for round_index in range(ctx.load.rounds):
        for server, measured in zip(servers, results, strict=True):
            if round_index == 0:
                verify_answer(ctx.report, server, headers, path, body, extra)
            log(f"{scenario}: {server.name}, {connections} connection(s), round {round_index + 1}/{ctx.load.rounds}")
            measured.append(measure(server.url + path, headers, connections, ctx.load, warm_up=round_index == 0,
                                    server_pids=[proc.pid for proc in server.procs]))
            if server.dead():
                raise RuntimeError(server.dead())
    medians = [median(measured) for measured in results]
    bare_rounds, bare_result = results[-1], medians[-1]
    for server, host_rounds, host_result in zip(hosts, results, medians, strict=False):
        note = "; ".join(filter(None, [
            cpu_note(host_rounds, bare_rounds),
            rounds_note([ratio(h, b) for h, b in zip(host_rounds, bare_rounds, strict=True)])]))
        ctx.report.rows.append(Row(scenario, server.name, connections, host_result, ratio(host_result, bare_result),
                                   note))
    ctx.report.rows.append(Row(scenario, bare.name, connections, bare_result))
    for tree, other_rounds, other_result in zip(ctx.trees[1:], results[1:-1], medians[1:-1], strict=True):
        ctx.report.comparisons.append(Comparison(
            scenario, tree.label, ratio(other_result, medians[0]),
            [ratio(o, c) for o, c in zip(other_rounds, results[0], strict=True)], [b.rps for b in bare_rounds]))
    return medians[0], bare_result


def cpu_note(host_rounds: list[WrkResult], bare_rounds: list[WrkResult]) -> str:
    """Median over rounds of bare CPU/request ÷ host CPU/request: the efficiency ratio, which foreign
    load skews far less than req/s (1.0× = the host spends what the bare handler spends per request)."""
    ratios = sorted(b.server_cpu_us / h.server_cpu_us for h, b in zip(host_rounds, bare_rounds, strict=True)
                    if h.server_cpu_us > 0 and b.server_cpu_us > 0)
    return f"CPU/req bare ÷ host: {ratios[len(ratios) // 2]:.2f}×" if ratios else ""


def host_row(ctx: Context) -> Row:
    """This tree's host row of the pair just measured (the other trees' and the baseline's follow it)."""
    return ctx.report.rows[-len(ctx.trees) - 1]


def scenario_hello(ctx: Context, hosts: list[Server], bare: Server) -> None:
    h, b = pair(ctx, "a. hello", hosts, bare, HELLO, "/", HELLO_BODY, ctx.connections, ("x-hello", "1"))
    ctx.hello_1w.update(host=h, bare=b)
    check_ratio(ctx.report, "hello, 1 worker: host / bare req/s", ratio(h, b), TARGET_HELLO)


def scenario_demo(ctx: Context, hosts: list[Server], bare: Server) -> None:
    name = "c. demo id_1→id_2→Redis"
    problem = seed_redis()
    if problem:
        ctx.report.rows.append(Row(name, "host / bare", ctx.connections, note=f"skipped: {problem}"))
        check_ratio(ctx.report, "demo chain: host / bare req/s", None, TARGET_DEMO)
        return
    try:
        h, b = pair(ctx, name, hosts, bare, DEMO, DEMO_PATH, DEMO_BODY, ctx.connections)
        blocking = demo_blocking_floor(ctx, name, bare)
    finally:
        unseed_redis()
    check_ratio(ctx.report, "demo chain: host / bare req/s", ratio(h, b), TARGET_DEMO)
    ctx.report.rows.append(Row(name, "bare aiohttp, GET blocking the loop", ctx.connections, blocking,
                               ratio(blocking, b), "ratio to bare aiohttp: the floor of the host's inline "
                               "reads (one request at a time while Redis answers), without wasm"))


def demo_blocking_floor(ctx: Context, name: str, bare: Server) -> WrkResult:
    """The baseline's chain with its Redis GET blocking the event loop, as the host's inline reads
    wait (host/loop_budget.py): what that design allows without wasm."""
    verify_answer(ctx.report, bare, DEMO_BLOCKING, DEMO_PATH, DEMO_BODY, None)
    measured = []
    for round_index in range(ctx.load.rounds):
        log(f"{name}: {bare.name}, GET blocking the loop, round {round_index + 1}/{ctx.load.rounds}")
        measured.append(measure(bare.url + DEMO_PATH, DEMO_BLOCKING, ctx.connections, ctx.load,
                                warm_up=round_index == 0, server_pids=[proc.pid for proc in bare.procs]))
    return median(measured)


def scenario_latency(ctx: Context, hosts: list[Server], bare: Server) -> None:
    h, b = pair(ctx, "d. hello, 1 conn", hosts, bare, HELLO, "/", HELLO_BODY, 1, ("x-hello", "1"))
    diff = h.p50_us - b.p50_us
    row = host_row(ctx)
    row.note = "; ".join(filter(None, [f"p50 host − bare: {diff:+.0f} µs", row.note]))
    ctx.report.checks.append(Check("hello p50 at 1 connection: host − bare", diff, "≤ 100 µs", diff <= 100, " µs"))


def scenario_cpu(ctx: Context, host: Server) -> None:
    """One worker, cpu_hash instance_num=2: does a 2nd connection double the throughput?"""
    verify_answer(ctx.report, host, CPU, "/", CPU_HASH_ANSWER)
    measured: dict[int, list[WrkResult]] = {1: [], 2: []}
    for round_index in range(ctx.load.rounds):
        for connections in (1, 2):
            log(f"e. cpu_hash: {host.name}, {connections} connection(s), round {round_index + 1}/{ctx.load.rounds}")
            measured[connections].append(measure(host.url + "/", CPU, connections, ctx.load, warm_up=round_index == 0))
    results = {connections: median(values) for connections, values in measured.items()}
    value = ratio(results[2], results[1])
    name = "e. cpu_hash (8 × FNV-1a over 1 MiB)"
    rounds = rounds_note([ratio(two, one) for one, two in zip(measured[1], measured[2], strict=True)])
    note = "; ".join(filter(None, ["ratio: 2 conns / 1 conn", rounds]))
    ctx.report.rows.append(Row(name, f"{host.name}, instance_num=2", 1, results[1]))
    ctx.report.rows.append(Row(name, f"{host.name}, instance_num=2", 2, results[2], value, note))
    check_ratio(ctx.report, "cpu_hash, 1 worker: 2 conns / 1 conn req/s", value, 1.70)


def scenario_workers(ctx: Context) -> None:
    name = "b. hello, 2 workers"
    try:
        with contextlib.ExitStack() as servers:
            hosts = [servers.enter_context(host_server(tree, 2, ctx.workdir)) for tree in ctx.trees]
            bare = servers.enter_context(baseline_server(2, ctx.workdir))
            processes = len(process_tree(hosts[0].procs[0].pid, process_table()))
            h, b = pair(ctx, name, hosts, bare, HELLO, "/", HELLO_BODY, ctx.connections, ("x-hello", "1"))
            row = host_row(ctx)
            row.note = "; ".join(filter(None, [f"{processes} process(es) in the host's tree", row.note]))
            for host in hosts:
                note_problems(ctx.report, host)
    except WorkersUnsupported:
        log("skipped: --workers not available")
        ctx.report.rows.append(Row(name, "host (2 workers)", ctx.connections, note="skipped: --workers not available"))
        check_ratio(ctx.report, "hello, 2 workers: host / bare req/s", None, TARGET_HELLO)
        check_ratio(ctx.report, "hello, host 2 workers / 1 worker req/s", None, 1.60)
        return
    check_ratio(ctx.report, "hello, 2 workers: host / bare req/s", ratio(h, b), TARGET_HELLO)
    check_ratio(ctx.report, "hello, host 2 workers / 1 worker req/s", ratio(h, ctx.hello_1w.get("host")), 1.60)
    bare_scaling = ratio(b, ctx.hello_1w.get("bare"))
    if bare_scaling is not None:  # what this machine allows: wrk shares the cores with the servers
        ctx.report.notes.append(f"for comparison, bare aiohttp 2 processes / 1 process: {bare_scaling:.2f}×")


def scenario_guest(ctx: Context, host: Server) -> None:
    """Guest overhead: hello (7 guest calls, 5 host calls) against bench/functions/noop.wat, which
    answers the same bytes and header with one proxy_send_local_response — same host, same path
    through the listener, pool and stream lifecycle; what differs is the ABI work of a real guest."""
    name = "f. guest overhead: hello / noop"
    verify_answer(ctx.report, host, NOOP, "/", HELLO_BODY, ("x-hello", "1"))
    results: dict[str, list[WrkResult]] = {"hello": [], "noop": []}
    pids = [proc.pid for proc in host.procs]
    for round_index in range(ctx.load.rounds):
        for label, headers in (("hello", HELLO), ("noop", NOOP)):
            log(f"f. guest overhead: {label}, round {round_index + 1}/{ctx.load.rounds}")
            results[label].append(measure(host.url + "/", headers, ctx.connections, ctx.load,
                                          warm_up=round_index == 0, server_pids=pids))
    hello, noop = median(results["hello"]), median(results["noop"])
    value = ratio(hello, noop)
    note = "; ".join(filter(None, [cpu_note(results["hello"], results["noop"]).replace("bare", "noop"),
                                   rounds_note([ratio(h, n) for h, n in zip(results["hello"], results["noop"],
                                                                            strict=True)])]))
    ctx.report.rows.append(Row(name, f"{host.name}, id hello", ctx.connections, hello, value, note))
    ctx.report.rows.append(Row(name, f"{host.name}, id noop", ctx.connections, noop))
    check_ratio(ctx.report, "guest overhead: hello / noop req/s", value, TARGET_GUEST)


def note_problems(report: Report, server: Server) -> None:
    problems = server.logged_problems()
    if problems:
        shown = "; ".join(line[-200:] for line in problems[:3])
        report.notes.append(f"{server.name} logged {len(problems)} warning/error line(s), e.g.: {shown}")


# --------------------------------------------------------------------------------------------
# report


def fmt_us(us: float) -> str:
    return f"{us:.0f} µs" if abs(us) < 1000 else f"{us / 1000:.2f} ms"


def fmt_row(row: Row) -> str:
    r = row.result
    if r is None:
        return f"| {row.scenario} | {row.server} | {row.connections} | – | – | – | – | – | – | – | – | {row.note} |"
    ratio_text = f"**{row.ratio:.2f}×**" if row.ratio is not None else ""
    cpu_text = "?" if r.server_cpu_us != r.server_cpu_us else f"{r.server_cpu_us:.0f} µs"
    return (f"| {row.scenario} | {row.server} | {row.connections} | {r.rps:,.0f} | {fmt_us(r.p50_us)} | "
            f"{fmt_us(r.p99_us)} | {r.non_2xx} | {r.socket_errors} | {fmt_share(r.others_cpu)} | {cpu_text} | "
            f"{ratio_text} | {row.note} |")


def fmt_share(share: float) -> str:
    if share != share:  # NaN: not measurable here
        return "?"
    text = f"{share:.0%}"
    return f"**{text}**" if share > OTHERS_CPU_WARN else text


def fmt_check(check: Check) -> str:
    if check.measured is None:
        measured, verdict = "–", "not measured"
    else:
        measured = f"{check.measured:+.0f}{check.unit}" if check.unit != "×" else f"{check.measured:.2f}×"
        verdict = "met" if check.passed else "**missed**"
    return f"| {check.name} | {measured} | {check.target} | {verdict} |"


def command_output(cmd: list[str], tree: Tree | None = None) -> str:
    """The first line `cmd` prints, run in the tree (default: this checkout), or "?"."""
    tree = tree or Tree(REPO)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tree.root, timeout=10,
                              env={**(tree.env() or os.environ), "GIT_OPTIONAL_LOCKS": "0"})  # read-only git
        return (proc.stdout or proc.stderr).strip().splitlines()[0] if (proc.stdout or proc.stderr) else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def engine_backend(tree: Tree) -> str:
    """The back-end the tree's host will use (native unless its C extension is missing)."""
    code = "from abi.engine import available_backends; print(available_backends()[0])"
    return os.environ.get("WASM_FAAS_ENGINE_BACKEND") or command_output([sys.executable, "-c", code], tree)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, or "?" where /proc/loadavg does not exist."""
    with contextlib.suppress(OSError):
        return " / ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def cpu_busy(seconds: float = 1.0) -> float:
    """Share of all cores busy over `seconds` before anything of ours runs."""
    before = CpuSample.now()
    time.sleep(seconds)
    return CpuSample.now().others_share_since(before)


def machine_lines(report: Report, load: Load, connections: int, trees: list[Tree]) -> list[str]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    wrk_version = command_output(["wrk", "-v"]).split(" [")[0]
    others = [f"- also measured: the host of `{tree.root}` (rows \"host {tree.label}\"), commit "
              f"{command_output(['git', 'rev-parse', '--short', 'HEAD'], tree)}, engine back-end "
              f"{engine_backend(tree)}: same venv, that tree's code and example functions; each round runs "
              f"this host, then {tree.label}, then bare" for tree in trees[1:]]
    return [
        f"- date: {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; "
        f"command: `python bench/run.py {' '.join(sys.argv[1:])}`".rstrip(),
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores ({usable} usable); Linux {platform.release()}",
        f"- Python {platform.python_version()}, wasmtime {version('wasmtime')}, aiohttp {version('aiohttp')}, "
        f"httptools {version('httptools')}, uvloop {version('uvloop')} (both servers use it when installed), "
        f"{wrk_version}; host engine back-end: {engine_backend(trees[0])}",
        f"- host commit: {command_output(['git', 'rev-parse', '--short', 'HEAD'])} "
        "(uncommitted changes are measured too)",
        *others,
        f"- CPU busy before the run (other processes): {load.busy_before:.0%}"
        + ("  **— the machine was not idle; numbers are skewed**" if load.busy_before > OTHERS_CPU_WARN else ""),
        f"- load average (1 / 5 / 15 min): {report.loadavg_start} at the start, {report.loadavg_end} at the end",
        f"- load: wrk {load.threads} thread(s), {connections} connections unless noted, "
        f"{load.warmup} s warm-up + {load.duration} s measured per row"
        f"{f', {load.rounds} alternating rounds per pair (medians shown)' if load.rounds > 1 else ''}; "
        "wrk runs on the same cores",
    ]


def fmt_comparison(comparison: Comparison) -> str:
    value = "–" if comparison.ratio is None else f"**{comparison.ratio:.2f}×**"
    rounds = ", ".join("-" if r is None else f"{r:.2f}×" for r in comparison.rounds)
    bare = sorted(comparison.bare_rps)
    spread = (bare[-1] - bare[0]) / bare[len(bare) // 2] if bare and bare[0] > 0 else float("nan")
    return (f"| {comparison.scenario} | {value} | {rounds} | "
            f"{' / '.join(f'{rps:,.0f}' for rps in comparison.bare_rps)} ({spread:.1%}) |")


def render(report: Report, load: Load, connections: int, trees: list[Tree]) -> str:
    lines = ["# wasm-faas-host benchmark", "", *machine_lines(report, load, connections, trees), "",
             "| scenario | server | conns | req/s | p50 | p99 | non-2xx | socket errors | others' CPU "
             "| server CPU/req | host/baseline | note |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
             *[fmt_row(row) for row in report.rows], "",
             "| check | measured | target | |", "|---|--:|--:|---|",
             *[fmt_check(check) for check in report.checks]]
    if report.comparisons:  # --also-tree: the other host next to this one
        label = report.comparisons[0].label
        lines += ["", f"| scenario | {label} / this host, req/s (medians) | each round | "
                      "bare req/s each round (max − min over median: the machine's own noise) |",
                  "|---|--:|--:|--:|", *[fmt_comparison(comparison) for comparison in report.comparisons]]
    notes = list(report.notes)
    suspect = [row for row in report.rows if row.result and row.result.others_cpu > OTHERS_CPU_WARN]
    if suspect:
        notes.append(f"{len(suspect)} row(s) ran while other processes used more than "
                     f"{OTHERS_CPU_WARN:.0%} of the CPU (others' CPU column): rerun on a quiet machine")
    if notes:
        lines += ["", "Notes:", "", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="measured seconds per row (default 10)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up seconds per row (default 2, 1 with --quick)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections for a, b, c (default 16)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure each pair this many times, alternating host and baseline; rows show "
                             "the medians and the note each round's ratio (default 1)")
    parser.add_argument("--instances", type=int, default=2, help="instance_num for hello, id_1, id_2 (default 2)")
    parser.add_argument("--quick", action="store_true", help="2 s rows, 1 s warm-up: a smoke run")
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help=f"comma-separated subset of {','.join(SCENARIOS)} (default: all)")
    parser.add_argument("--out", type=Path, help="also write the markdown report to this file")
    parser.add_argument("--also-tree", type=Path, metavar="DIR",
                        help="also measure the host of another checkout of this project (same venv, its code "
                             "and examples), alternating with this host and the baseline in every round")
    parser.add_argument("--also-label", metavar="NAME",
                        help="name of --also-tree's rows (default: the folder's name)")
    args = parser.parse_args(argv)
    if args.also_tree:
        args.also_tree = args.also_tree.resolve()
        if not (args.also_tree / "host" / "__main__.py").exists():
            parser.error(f"--also-tree {args.also_tree}: no host/__main__.py there")
        if args.also_tree == REPO:
            parser.error("--also-tree is this checkout")
        args.also_label = args.also_label or args.also_tree.name
    args.only = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = args.only - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}")
    if args.quick:
        args.duration = min(args.duration, 2)
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.duration < 1 or args.connections < 1 or args.threads < 1:
        parser.error("--duration, --connections and --threads must be at least 1")
    return args


def run_scenarios(ctx: Context, only: set[str]) -> None:
    """Rows in table order, on one 1-worker host per tree and one 1-process baseline."""
    with contextlib.ExitStack() as servers:
        hosts = [servers.enter_context(host_server(tree, 1, ctx.workdir)) for tree in ctx.trees]
        bare = servers.enter_context(baseline_server(1, ctx.workdir))
        if "hello" in only or "workers" in only:  # the 2-worker ratio needs the 1-worker numbers
            scenario_hello(ctx, hosts, bare)
        if "workers" in only:
            scenario_workers(ctx)  # its own servers; the 1-worker ones idle meanwhile
        if "demo" in only:
            scenario_demo(ctx, hosts, bare)
        if "latency" in only:
            scenario_latency(ctx, hosts, bare)
        if "cpu" in only:
            scenario_cpu(ctx, hosts[0])  # this tree's host only
        if "guest" in only:
            scenario_guest(ctx, hosts[0])
        for host in hosts:
            note_problems(ctx.report, host)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench: `wrk` is not on PATH; install it first, e.g. `sudo apt-get install wrk`", file=sys.stderr)
        return 2
    # Ctrl-C -> KeyboardInterrupt even if our parent ignored SIGINT (background jobs), and
    # SIGTERM -> SystemExit: either way the finally blocks stop every server we started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load = Load(duration=args.duration, warmup=args.warmup, threads=args.threads, rounds=max(1, args.rounds))
    report = Report(loadavg_start=load_average())
    load.busy_before = cpu_busy()
    trees = [Tree(REPO), *([Tree(args.also_tree, args.also_label)] if args.also_tree else [])]
    with tempfile.TemporaryDirectory(prefix="wasm-faas-bench-") as tmp:
        workdir = Path(tmp)
        functions = workdir / "functions"
        functions.mkdir()
        try:
            if "cpu" in args.only:
                log("building bench/functions/cpu_hash.c")
                build_cpu_hash(functions)
            shutil.copy(NOOP_SRC, functions / NOOP_SRC.name)  # the host compiles .wat itself
            trees = [write_host_config(workdir, functions, args.instances, tree) for tree in trees]
            ctx = Context(load, args.connections, workdir, trees, report)
            run_scenarios(ctx, args.only)
        except KeyboardInterrupt:
            log("interrupted; servers stopped")
            return 130
        except (RuntimeError, OSError, ValueError) as error:
            log(f"error: {error}")
            if not report.rows:
                return 1
            report.notes.append(f"run aborted: {str(error).splitlines()[0]}")
    report.loadavg_end = load_average()
    text = render(report, load, args.connections, trees)
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

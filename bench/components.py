"""Functions written in Python and JavaScript (WebAssembly components) beside the same functions in C.

    python bench/components.py [--requests N] [--reps R] [--rounds N] [--skip-compile] [--out FILE]

Issue 13: "Cold start from the cache (file landing -> first 200) and per-request cost of a Python and
a JavaScript function beside the same function in C, in one bench run."

The functions are the Layotto demo's, which exist in all three languages: id_2 (reads a key from the
state store: examples/functions/function_2.c, examples/functions/python/function_2.py) and id_1
(asks id_2, answers a sentence: function_1.c, javascript/function_1.js). The components are built by
scripts/build_components.py (cached) and compiled once into this run's module cache; a hand-written
WAT component (tests/components_wasm/guests/cw_echo.wat) next to C `hello` shows the host's own cost
of the component path, without a language runtime.

1. Compile (once each, no cache): what a component costs the first time it is ever deployed.
2. Cold start from the cache: a new host process (the compiled artifact on disk, nothing in memory),
   the file lands (`os.replace` of a `.partial`), `--poll-ms` polling until the first 200. Then the
   warm case: the file is deleted, and the same bytes land under another name in the same process
   (compiled artifact in memory).
3. Per request: one host process per row (ids collide across rows), `--requests` sequential requests
   on one keep-alive connection after a warm-up; the host's CPU time per request (utime + stime of
   its process, from /proc) and the client-side latency percentiles; `--rounds` alternating rounds,
   medians reported (and each round's CPU figure: on a busy machine they spread).

Prints a markdown report (progress on stderr) and saves it (bench/results/<date>-components.md, or
--out). Measures, asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
EXAMPLES = REPO / "examples" / "functions"
ECHO_WAT = REPO / "tests" / "components_wasm" / "guests" / "cw_echo.wat"
LOOPBACK = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[components] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Call:
    """The request a row sends: (function id, method, path, body) and the answer it expects."""
    function_id: str
    method: str
    path: str
    body: bytes
    expect: bytes


ID_2 = Call("id_2", "POST", "/", b"book1", b"100")
ID_1 = Call("id_1", "GET", "/?name=book1", b"", b"There are 100 inventories for book1.")
HELLO = Call("hello", "GET", "/", b"", b"")  # any 200
ECHO = Call("echo", "POST", "/", b"ping", b"ping")


# -- a host process -----------------------------------------------------------------------------------
@dataclass
class Host:
    proc: subprocess.Popen[bytes]
    port: int
    admin: int
    folder: Path
    log_path: Path

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(LOOPBACK, self.port, timeout=30)


def _config(workdir: Path, folder: Path, cache: Path) -> Path:
    # Every listener on port 0: the ports are read from the log (a free port picked beforehand could
    # be taken by another program meanwhile, and the bench would measure that one).
    path = workdir / f"host-{folder.name}.toml"
    path.write_text(f"""\
functions_dirs = [{str(folder)!r}]

[server]
listen = "{LOOPBACK}:0"
admin = "{LOOPBACK}:0"
grpc = "{LOOPBACK}:0"
dapr_http = "{LOOPBACK}:0"
cache_dir = {str(cache)!r}
watch_debounce_ms = 20

[function_defaults]
instance_num = 1

[state.state_demo]
type = "memory"
seed = {{ book1 = "100" }}
""")
    return path


@contextlib.contextmanager
def host(workdir: Path, cache: Path, *modules: Path) -> Iterator[Host]:
    folder = Path(tempfile.mkdtemp(prefix="functions-", dir=workdir))
    for module in modules:
        shutil.copyfile(module, folder / module.name)
    log_path = workdir / f"host-{folder.name}.log"
    with open(log_path, "ab") as log_file:
        config = _config(workdir, folder, cache)
        # Info: the line naming the ports is logged at that level.
        proc = subprocess.Popen([sys.executable, "-m", "host", "serve", "--config", str(config), "--log-level", "info"],
                                cwd=REPO, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                                start_new_session=True)
    running = Host(proc, 0, 0, folder, log_path)
    try:
        _wait_ready(running)
        yield running
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


_LISTENING = re.compile(r"functions listening on \S+ \(port (\d+)\), admin on \S+ \(port (\d+)\)")


def _wait_ready(running: Host, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running.proc.poll() is not None:
            raise RuntimeError(f"host exited:\n{running.log_path.read_text(errors='replace')[-3000:]}")
        if not running.port:
            found = _LISTENING.search(running.log_path.read_text(errors="replace"))
            if found is None:
                time.sleep(0.05)
                continue
            running.port, running.admin = int(found[1]), int(found[2])
        with contextlib.suppress(OSError):
            connection = http.client.HTTPConnection(LOOPBACK, running.admin, timeout=1)
            connection.request("GET", "/actuator/health/readiness")
            if connection.getresponse().status == 200:
                return
        time.sleep(0.05)
    raise RuntimeError("host not ready")


def send(connection: http.client.HTTPConnection, call: Call) -> tuple[int, bytes]:
    connection.request(call.method, call.path, body=call.body or None, headers={"id": call.function_id})
    response = connection.getresponse()
    return response.status, response.read()


def check(status: int, body: bytes, call: Call) -> None:
    if status != 200 or (call.expect and body != call.expect):
        raise RuntimeError(f"{call.function_id}: answered {status} {body[:200]!r}, expected {call.expect!r}")


# -- 1. compile ----------------------------------------------------------------------------------------
def compile_times(components: dict[str, Path]) -> dict[str, float]:
    from abi.engine import WasmEngine
    from host.functions.cache import ModuleCache

    engine = WasmEngine()
    times = {}
    for name, path in components.items():
        with tempfile.TemporaryDirectory() as scratch:
            started = time.perf_counter()
            ModuleCache(engine, Path(scratch)).load_component(path.read_bytes())
            times[name] = time.perf_counter() - started
            log(f"compiled {name} in {times[name]:.1f}s")
    return times


# -- 2. cold start ----------------------------------------------------------------------------------------
def land(running: Host, module: Path, name: str, call: Call, poll_s: float) -> float:
    """Seconds from the rename of `module` into the folder as `name` to the first 200 for `call`."""
    partial = running.folder / f"{name}.partial"
    shutil.copyfile(module, partial)
    connection = running.connect()
    started = time.perf_counter()
    os.replace(partial, running.folder / name)
    while True:
        try:
            status, body = send(connection, call)
        except (OSError, http.client.HTTPException):
            connection = running.connect()
            status, body = 0, b""
        if status == 200:
            check(status, body, call)
            return time.perf_counter() - started
        if time.perf_counter() - started > 120:
            raise RuntimeError(f"{name} not answering 200 after 120s ({status} {body[:200]!r})")
        time.sleep(poll_s)


def unland(running: Host, name: str, call: Call) -> None:
    (running.folder / name).unlink()
    connection = running.connect()
    deadline = time.monotonic() + 30
    while send(connection, call)[0] != 404:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} still served 30s after its deletion")
        time.sleep(0.01)


@dataclass
class ColdRow:
    label: str
    cold_ms: list[float]
    warm_ms: list[float]


def cold_starts(workdir: Path, cache: Path, label: str, module: Path, call: Call, beside: tuple[Path, ...],
                reps: int, poll_s: float) -> ColdRow:
    row = ColdRow(label, [], [])
    for rep in range(reps):
        with host(workdir, cache, *beside) as running:
            row.cold_ms.append(land(running, module, module.name, call, poll_s) * 1000)
            unland(running, module.name, call)
            row.warm_ms.append(land(running, module, f"again-{rep}-{module.name}", call, poll_s) * 1000)
    log(f"cold start {label}: {statistics.median(row.cold_ms):.0f} ms from disk, "
        f"{statistics.median(row.warm_ms):.0f} ms from memory")
    return row


# -- 3. per request ------------------------------------------------------------------------------------
@dataclass
class RequestRow:
    label: str
    cpu_us: float
    p50_us: float
    p90_us: float
    p99_us: float
    rounds: list[float] = field(default_factory=list)  # host CPU per request in each round


def per_request(workdir: Path, cache: Path, label: str, call: Call, modules: tuple[Path, ...],
                requests: int) -> RequestRow:
    with host(workdir, cache, *modules) as running:
        connection = running.connect()
        for _ in range(max(200, requests // 10)):  # warm-up: caches, the execution policy's learning
            check(*send(connection, call), call)
        latencies = []
        cpu_before = running.cpu_seconds()
        for _ in range(requests):
            started = time.perf_counter_ns()
            status, body = send(connection, call)
            latencies.append((time.perf_counter_ns() - started) / 1000)
            if status != 200:
                check(status, body, call)
        cpu = (running.cpu_seconds() - cpu_before) / requests * 1e6
    cuts = statistics.quantiles(latencies, n=100)
    row = RequestRow(label, cpu, cuts[49], cuts[89], cuts[98])
    log(f"{label}: {row.cpu_us:.0f} us host CPU per request, p50 {row.p50_us:.0f} us")
    return row


def median_row(label: str, rounds: list[RequestRow]) -> RequestRow:
    median = statistics.median
    return RequestRow(label, median(r.cpu_us for r in rounds), median(r.p50_us for r in rounds),
                      median(r.p90_us for r in rounds), median(r.p99_us for r in rounds),
                      [r.cpu_us for r in rounds])


# -- report ------------------------------------------------------------------------------------------------
def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return f"{os.cpu_count()} CPUs ({cpu}), load average at the start {load}"


def report(compiled: dict[str, float], cold: list[ColdRow], rows: list[RequestRow], sizes: dict[str, int],
           requests: int, reps: int, rounds: int) -> str:
    lines = [f"# Components beside C ({dt.date.today().isoformat()})", "",
             f"Machine: {machine()}; Python {sys.version.split()[0]}; one host process per row, "
             f"instance_num 1, memory state.", "",
             "## Compile (first deploy ever, no cache)", "", "| component | size | compile |", "|---|---:|---:|"]
    lines += [f"| {name} | {sizes[name] / 1e6:.1f} MB | {seconds:.1f} s |" for name, seconds in compiled.items()]
    lines += ["", f"## Cold start from the cache: file landing -> first 200 (median of {reps}, [min-max])", "",
              "| function | new process (compiled artifact on disk) | same process (in memory) |", "|---|---:|---:|"]
    for row in cold:
        lines.append(f"| {row.label} | {statistics.median(row.cold_ms):.0f} ms [{min(row.cold_ms):.0f}-"
                     f"{max(row.cold_ms):.0f}] | {statistics.median(row.warm_ms):.0f} ms [{min(row.warm_ms):.0f}-"
                     f"{max(row.warm_ms):.0f}] |")
    lines += ["", f"## Per request ({requests} sequential requests, one keep-alive connection; medians of "
                  f"{rounds} alternating rounds)", "",
              "| function | host CPU / request | each round | p50 | p90 | p99 |", "|---|---:|---|---:|---:|---:|"]
    lines += [f"| {r.label} | {r.cpu_us:.0f} µs | {', '.join(f'{v:.0f}' for v in r.rounds)} | {r.p50_us:.0f} µs | "
              f"{r.p90_us:.0f} µs | {r.p99_us:.0f} µs |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--reps", type=int, default=5, help="cold-start repetitions (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="per-request rounds (default: %(default)s)")
    parser.add_argument("--poll-ms", type=float, default=1.0)
    parser.add_argument("--skip-compile", action="store_true", help="do not measure compiling without a cache")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / f"{dt.date.today().isoformat()}-components.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-components-") as scratch:
        workdir = Path(scratch)
        # The compiled cache the tests share: compiling a component takes tens of seconds.
        built, cache = workdir / "components", REPO / ".cache" / "components" / "compiled"
        log("building the components (scripts/build_components.py, cached) and compiling them once")
        subprocess.run([sys.executable, str(REPO / "scripts" / "build_components.py"), "--out", str(built),
                        "--precompile", str(cache)], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        import wasmtime

        echo = workdir / "echo.wasm"
        echo.write_bytes(bytes(wasmtime.wat2wasm(ECHO_WAT.read_text())))
        python_2, js_1 = built / "function_2.wasm", built / "function_1.wasm"
        c_1, c_2, c_hello = EXAMPLES / "function_1.wasm", EXAMPLES / "function_2.wasm", EXAMPLES / "hello.wasm"
        sizes = {"Python id_2 (function_2.py)": python_2.stat().st_size,
                 "JavaScript id_1 (function_1.js)": js_1.stat().st_size}
        compiled = {} if args.skip_compile else compile_times(
            {"Python id_2 (function_2.py)": python_2, "JavaScript id_1 (function_1.js)": js_1})
        poll = args.poll_ms / 1000
        cold = [
            cold_starts(workdir, cache, "id_2 in C (function_2.c)", c_2, ID_2, (), args.reps, poll),
            cold_starts(workdir, cache, "id_2 in Python", python_2, ID_2, (), args.reps, poll),
            cold_starts(workdir, cache, "id_1 in C (beside C id_2)", c_1, ID_1, (c_2,), args.reps, poll),
            cold_starts(workdir, cache, "id_1 in JavaScript (beside C id_2)", js_1, ID_1, (c_2,), args.reps, poll),
        ]
        scenarios: list[tuple[str, Call, tuple[Path, ...]]] = [
            ("hello in C (proxy-wasm)", HELLO, (c_hello,)),
            ("echo, hand-written WAT component (the adapter alone)", ECHO, (echo,)),
            ("id_2 in C", ID_2, (c_2,)),
            ("id_2 in Python", ID_2, (python_2,)),
            ("id_1 in C -> id_2 in C", ID_1, (c_1, c_2)),
            ("id_1 in JavaScript -> id_2 in C", ID_1, (js_1, c_2)),
            ("id_1 in JavaScript -> id_2 in Python", ID_1, (js_1, python_2)),
        ]
        # Rounds alternate the rows, so a burst of load from elsewhere touches every row alike.
        measured: dict[str, list[RequestRow]] = {label: [] for label, _, _ in scenarios}
        for round_number in range(args.rounds):
            log(f"per-request round {round_number + 1}/{args.rounds}")
            for label, call, modules in scenarios:
                measured[label].append(per_request(workdir, cache, label, call, modules, args.requests))
        rows = [median_row(label, found) for label, found in measured.items()]
        text = report(compiled, cold, rows, sizes, args.requests, args.reps, args.rounds)
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    log(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

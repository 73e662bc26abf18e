"""Cold start: time from a new module file landing in the functions folder to its first 200.

    python bench/cold_start.py [--reps N] [--poll-ms MS] [--also-tree DIR] [--out FILE]

Issue: "Report the time from a new file landing in the folder to its first successful response, for a
small C function and a ~300 KB module, with a cold and a warm cache. Layotto's published figure for its
FaaS warm pool is 1 s." Targets (issue 16): "Cold start with a warm cache ≤ 10 ms for a file written and
closed (or renamed) into the folder; ≤ 300 ms cold for a 300 KB module; `serve` ready ≤ 300 ms."

What it does (all servers on free 127.0.0.1 ports, started and stopped by this script):

1. `python -m host serve` readiness: time from process start to `GET /actuator/health/readiness` = 200
   with the example functions, with an empty compiled-module cache (cold), with a filled one (warm), and
   warm with the runtime API listeners a default config has (gRPC, Dapr HTTP; each must accept a
   connection right after readiness), next to the time `python -c "import host.process.serve"` alone
   takes (the interpreter + imports floor). Host processes run from compiled bytecode (see `Tree.env`).
2. File landing, host A (empty functions folder, empty cache dir): for each module, two ways: *rename*
   (the bytes written to `name.wasm.partial`, then `os.replace`d to `name.wasm`; the clock starts just
   before the rename) and *write+close* (`name.wasm` created, written, closed; the clock starts before
   the open). `GET /` with header `id: <id>` is polled on one keep-alive connection every --poll-ms until
   it answers 200. Then the file is deleted and the runner waits for 404.
   - cold: bytes this cache dir has never seen (the module plus a custom section holding a nonce, so
     every repetition compiles: same code, new content hash);
   - warm (memory): the same bytes as an earlier cold landing, under a new file name — the compiled
     module is reused from the host's memory.
3. File landing, host B: a new process on the same cache dir lands the cold variants again — compiled
   artifacts come from disk (`module_cache.compiled` stays 0, `disk_hits` grows: read from `GET /functions`).

Modules: `examples/functions/hello.wasm` (C, id `hello`) and a generated WAT module with a few thousand
small functions compiled to ~300 KB of wasm (id `big`, reported by `proxy_get_id`).

--also-tree DIR measures another checkout's host too (same venv, PYTHONPATH=DIR): its landings after
this tree's, its readiness rows interleaved with this tree's — a before/after under the same load.

Prints a markdown report (progress on stderr) and saves it as bench/results/<date>-cold-start.md
(or --out). Measures, asserts nothing: a missed target reads **missed**, the exit code stays 0.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
EXAMPLES = REPO / "examples" / "functions"
RESULTS = BENCH / "results"
LOOPBACK = "127.0.0.1"
WARM_TARGET_MS = 10.0  # issue 16: file written and closed (or renamed) into the folder, warm cache
COLD_BIG_TARGET_MS = 300.0  # issue 16: a ~300 KB module, cold cache
READY_TARGET_MS = 300.0  # issue 16: `serve` ready
LAYOTTO_WARM_POOL_MS = 1000.0
HELLO_BODY = b"hello method=GET path=/ greeting=-\n"
BIG_BODY = b"big ok\n"


def _load_run_helpers():
    """bench/run.py's helpers (servers, ports, machine description), if importable."""
    spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
    try:
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules["bench_run"] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        return module
    except Exception as error:  # noqa: BLE001 - we then use the small copies below
        sys.modules.pop("bench_run", None)
        print(f"[cold-start] bench/run.py not importable ({error}); using own helpers", file=sys.stderr)
        return None


RUN = _load_run_helpers()


def log(message: str) -> None:
    print(f"[cold-start] {message}", file=sys.stderr, flush=True)


def cpu_probe_ms() -> float:
    """A fixed piece of pure-Python work (best of 3), to compare the speed of the machine between runs:
    start-up is CPU-bound, so a run on a slower machine (or a busier host under the VM) is slower alike."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        sum(range(10**7))
        best = min(best, (time.perf_counter() - started) * 1000)
    return best


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, or "?" where /proc/loadavg does not exist."""
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "?"


def publish(text: str, out: Path) -> None:
    """A report on stdout and in `out` (progress goes to stderr)."""
    print(text, end="")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


# --------------------------------------------------------------------------------------------
# small fallbacks for bench/run.py's helpers


def free_port() -> int:
    if RUN is not None:
        return RUN.free_port()
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def cpu_model() -> str:
    if RUN is not None:
        return RUN.cpu_model()
    return platform.processor() or "unknown CPU"


def pkg_version(name: str) -> str:
    if RUN is not None:
        return RUN.version(name)
    import importlib.metadata
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def git_commit() -> str:
    return _git(["rev-parse", "--short", "HEAD"]).strip() or "?"


def _git(args: list[str]) -> str:
    """Read-only git (GIT_OPTIONAL_LOCKS=0: not even the index is refreshed)."""
    try:
        proc = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO, timeout=10,
                              env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
        return proc.stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def source_state() -> str:
    """What the host runs: the commit and the uncommitted files outside bench/ (read at the start: other
    sessions may commit or edit while a run is going)."""
    dirty = sorted({line[3:].strip() for line in _git(["status", "--porcelain", "--untracked-files=no"]).splitlines()
                    if line[3:].strip() and not line[3:].strip().startswith("bench/")})
    if not dirty:
        return f"{git_commit()} (clean outside bench/)"
    diff = hashlib.sha256(_git(["diff", "HEAD", "--", *dirty]).encode()).hexdigest()[:8]
    return f"{git_commit()} plus uncommitted changes in {', '.join(dirty)} (diff {diff})"


def source_note(at_start: str, consequence: str) -> Optional[str]:
    """A note when the source changed while the run was going."""
    now = source_state()
    if now == at_start:
        return None
    return (f"**the source changed during the run** (another session): at the start `{at_start}`, at the end "
            f"`{now}`; {consequence}")


def cpu_busy(seconds: float = 1.0) -> float:
    """Share of all cores used by other processes over `seconds` (nan if unknown)."""
    return RUN.cpu_busy(seconds) if RUN is not None else float("nan")


# --------------------------------------------------------------------------------------------
# modules


def custom_section(name: bytes, payload: bytes) -> bytes:
    """A wasm custom section: id 0, LEB128 size, LEB128 name length, name, payload."""
    def leb(n: int) -> bytes:
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)
    content = leb(len(name)) + name + payload
    return b"\x00" + leb(len(content)) + content


def with_nonce(wasm: bytes, nonce: str) -> bytes:
    """Same code, new content hash: the host's cache has never seen these bytes."""
    return wasm + custom_section(b"bench-nonce", nonce.encode())


def big_module_wat(function_id: str, functions: int, export_every: int = 0) -> str:
    """A valid proxy-wasm function reporting `function_id`, with `functions` small functions (every
    `export_every`-th one exported; 0: only the ABI entry points are). Each does a little integer
    arithmetic and calls its predecessor (call chains of at most 16); the request handler runs one chain."""
    lines = [
        "(module",
        '  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))',
        '  (memory (export "memory") 2)',
        f'  (data (i32.const 16) "{function_id}")',
        f'  (data (i32.const 32) "{BIG_BODY.decode().strip()}\\0a")',
        "  (global $heap (mut i32) (i32.const 4096))",
        '  (func (export "proxy_abi_version_0_2_1"))',
        '  (func (export "proxy_get_id")',
        f"    (drop (call $set (i32.const 8) (i32.const 0) (i32.const {len(function_id)}) (i32.const 16) "
        f"(i32.const {len(function_id)}))))",
        '  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)',
        "    (if (i32.gt_u (i32.add (global.get $heap) (local.get $n)) (i32.const 131072))",
        "      (then (global.set $heap (i32.const 4096))))",
        "    (local.set $p (global.get $heap))",
        "    (global.set $heap (i32.and (i32.add (i32.add (local.get $p) (local.get $n)) (i32.const 7)) (i32.const -8)))",
        "    (local.get $p))",
    ]
    for i in range(functions):
        export = f' (export "f{i}")' if export_every and i % export_every == 0 else ""
        call = f"\n    (local.set $y (i32.add (local.get $y) (call $f{i - 1} (local.get $y))))" if i % 16 else ""
        lines.append(
            f"  (func $f{i}{export} (param $x i32) (result i32) (local $y i32)\n"
            f"    (local.set $y (i32.add (i32.mul (local.get $x) (i32.const {2 * i + 3})) (i32.const {i * 7919 % 65521})))\n"
            f"    (local.set $y (i32.xor (local.get $y) (i32.shr_u (local.get $y) (i32.const {i % 13 + 1}))))"
            f"{call}\n"
            f"    (i32.sub (i32.rotl (local.get $y) (i32.const {i % 31 + 1})) (local.get $x)))")
    lines += [
        '  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)',
        f"    (i32.store (i32.const 64) (call $f{functions - 1} (local.get $ctx)))",
        f"    (drop (call $set (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 32) (i32.const {len(BIG_BODY)})))",
        "    (i32.const 0))",
        ")",
    ]
    return "\n".join(lines)


def build_big_module(function_id: str, target_kb: int, export_every: int = 0) -> tuple[bytes, int]:
    """wat2wasm a generated module close to target_kb KiB; returns (wasm, function count)."""
    import wasmtime

    functions = 3000
    wasm = wasmtime.wat2wasm(big_module_wat(function_id, functions, export_every))
    for _ in range(3):  # size is nearly linear in the function count
        functions = max(16, round(functions * target_kb * 1024 / len(wasm)))
        wasm = wasmtime.wat2wasm(big_module_wat(function_id, functions, export_every))
        if abs(len(wasm) - target_kb * 1024) < 0.02 * target_kb * 1024:
            break
    return wasm, functions


@dataclass
class Module:
    label: str
    function_id: str
    wasm: bytes
    body: bytes
    detail: str


# --------------------------------------------------------------------------------------------
# a tiny keep-alive HTTP/1.1 client (blocking, one connection): cheap per poll, exact timing


class RawClient:
    def __init__(self, port: int, timeout: float = 5.0):
        self.port = port
        self.timeout = timeout
        self.sock: Optional[socket.socket] = None
        self.reconnects = 0

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((LOOPBACK, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reconnects += 1
        return sock

    def get(self, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        request = (f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}:{self.port}\r\n"
                   + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
        for attempt in range(2):  # the server may have closed an idle keep-alive connection
            if self.sock is None:
                self.sock = self._connect()
            try:
                self.sock.sendall(request)
                return self._read_response()
            except (ConnectionError, socket.timeout, OSError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _read_response(self) -> tuple[int, bytes]:
        assert self.sock is not None
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by the server")
            buffer += chunk
        head, _, rest = buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed mid-body")
            rest += chunk
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, rest[:length]


def admin_json(admin_port: int, path: str) -> dict:
    client = RawClient(admin_port)
    try:
        status, body = client.get(path, {})
    finally:
        client.close()
    if status != 200:
        raise RuntimeError(f"admin {path} answered {status}: {body[:200]!r}")
    return json.loads(body)


# --------------------------------------------------------------------------------------------
# the host process


@dataclass(frozen=True)
class Tree:
    """A checkout whose host is measured: this one, or --also-tree's (same venv, that tree's code)."""

    label: str
    root: Path

    def env(self) -> dict[str, str]:
        """The host runs from compiled bytecode, as an installed host does: with PYTHONDONTWRITEBYTECODE
        set (some shells and CI set it) every start would compile the host's sources again."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        tag = hashlib.sha256(str(self.root).encode()).hexdigest()[:8]
        env["PYTHONPYCACHEPREFIX"] = str(REPO / ".cache" / "bench-pycache" / tag)
        if self.root != REPO:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.root), os.environ.get("PYTHONPATH")]))
        return env


THIS_TREE = Tree("this tree", REPO)


@dataclass
class HostProcess:
    proc: subprocess.Popen
    port: int
    admin: int
    log_path: Path
    started: float  # perf_counter just before Popen
    listeners: dict[str, int] = field(default_factory=dict)  # gRPC / Dapr HTTP ports, when configured
    cpu_at_ready: tuple[float, float] = (float("nan"), float("nan"))  # cpu_ms() at readiness

    def dead(self) -> Optional[str]:
        if self.proc.poll() is None:
            return None
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"host exited with code {self.proc.returncode}:\n" + "\n".join(text.splitlines()[-20:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def problems(self) -> list[str]:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [line for line in text.splitlines()
                if any(word in line for word in ("WARNING", "ERROR", "CRITICAL", "Traceback"))]


def write_config(workdir: Path, name: str, functions: Path, cache: Path,
                 listeners: bool = False) -> tuple[Path, dict[str, int]]:
    """A host config; `listeners`: also the runtime API listeners a default config has (gRPC, Dapr HTTP)."""
    ports = {"gRPC": free_port(), "Dapr HTTP": free_port()} if listeners else {}
    grpc = f"{LOOPBACK}:{ports['gRPC']}" if listeners else ""
    dapr = f"{LOOPBACK}:{ports['Dapr HTTP']}" if listeners else ""
    config = workdir / f"{name}.toml"
    config.write_text(f"""\
functions_dirs = [{str(functions)!r}]

[server]
cache_dir = {str(cache)!r}
grpc = {grpc!r}
dapr_http = {dapr!r}

[state.state_demo]
type = "memory"
seed = {{ book1 = "100" }}
""")
    return config, ports


def start_host(config: tuple[Path, dict[str, int]], log_path: Path, tree: Tree = THIS_TREE) -> HostProcess:
    port, admin = free_port(), free_port()
    cmd = [sys.executable, "-m", "host", "serve", "--config", str(config[0]), "--listen", f"{LOOPBACK}:{port}",
           "--admin", f"{LOOPBACK}:{admin}", "--log-level", "warning"]
    log_file = open(log_path, "ab")
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=tree.root, env=tree.env(), stdin=subprocess.DEVNULL, stdout=log_file,
                            stderr=log_file, start_new_session=True)
    log_file.close()
    return HostProcess(proc, port, admin, log_path, started, dict(config[1]))


def cpu_ms(pid: int) -> tuple[float, float]:
    """(on a CPU, waiting for one) in ms over the threads `pid` has now (Linux /proc/<pid>/task/*/schedstat:
    ns run, ns runnable but waiting): on a machine shared with other work the second part is theirs."""
    run = wait = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (task / "schedstat").read_text().split()
                run, wait = run + int(fields[0]), wait + int(fields[1])
    return run / 1e6, wait / 1e6


def wait_ready(host: HostProcess, timeout: float = 120.0, poll_s: float = 0.002) -> float:
    """Seconds from Popen to readiness 200 (polled every poll_s on a fresh connection)."""
    url_path = "/actuator/health/readiness"
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        problem = host.dead()
        if problem:
            raise RuntimeError(problem)
        client = RawClient(host.admin, timeout=2.0)
        try:
            status, body = client.get(url_path, {})
            if status == 200:
                elapsed = time.perf_counter() - host.started
                host.cpu_at_ready = cpu_ms(host.proc.pid)
                return elapsed
            if b'"DOWN"' in body:
                raise RuntimeError(f"host is DOWN: {body.decode(errors='replace')}")
        except OSError:
            pass
        finally:
            client.close()
        time.sleep(poll_s)
    raise RuntimeError(f"host not ready after {timeout:.0f}s")


def refused_listeners(host: HostProcess) -> list[str]:
    """The configured runtime API listeners that do not accept a connection (asked right after readiness)."""
    refused = []
    for name, port in host.listeners.items():
        try:
            socket.create_connection((LOOPBACK, port), timeout=1.0).close()
        except OSError:
            refused.append(name)
    return refused


@contextlib.contextmanager
def running_host(config: tuple[Path, dict[str, int]], log_path: Path, tree: Tree = THIS_TREE) -> Iterator[HostProcess]:
    host = start_host(config, log_path, tree)
    try:
        wait_ready(host)
        yield host
    finally:
        host.stop()


# --------------------------------------------------------------------------------------------
# measurements

HOW = {"rename": "rename", "write": "write+close"}


@dataclass
class Landing:
    tree: str
    module: str
    cache: str  # cold | warm (memory) | warm (disk, restarted host)
    how: str  # rename | write+close
    file_name: str
    ms: float  # landing -> first 200 seen by the client
    host_live_ms: Optional[float]  # landing -> router swap, by the host's own clock (last_reload.at)
    polls: int
    counters: str  # which module_cache counter moved
    removal_ms: Optional[float] = None  # unlink -> first 404
    problem: str = ""


@dataclass
class Report:
    readiness: dict[str, list[float]] = field(default_factory=dict)
    readiness_counters: dict[str, str] = field(default_factory=dict)
    readiness_cpu: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # row -> cpu_ms() each
    landings: list[Landing] = field(default_factory=list)
    cache_proofs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    modules: list[Module] = field(default_factory=list)
    trees: list[Tree] = field(default_factory=list)
    busy_before: float = float("nan")
    others_during: float = float("nan")
    loadavg: str = ""
    source: str = ""
    probe_ms: tuple[float, float] = (float("nan"), float("nan"))  # cpu_probe_ms() at the start and the end


def cache_stats(host: HostProcess) -> dict[str, int]:
    return admin_json(host.admin, "/functions")["module_cache"]


def counter_delta(before: dict[str, int], after: dict[str, int]) -> str:
    moved = [f"{key} +{after[key] - before.get(key, 0)}" for key in ("compiled", "disk_hits", "memory_hits")
             if after.get(key, 0) != before.get(key, 0)]
    return ", ".join(moved) or "none"


def land(folder: Path, name: str, data: bytes, how: str) -> tuple[float, float]:
    """Put `data` at folder/name; (perf_counter, wall clock) when the clock starts.
    rename: written to name.partial, then renamed into place (the clock starts just before the rename);
    write: opened as name (created), written, closed (the clock starts just before the open)."""
    if how == "rename":
        partial = folder / f"{name}.partial"
        partial.write_bytes(data)
        wall = time.time()
        start = time.perf_counter()
        os.replace(partial, folder / name)
        return start, wall
    wall = time.time()
    start = time.perf_counter()
    with open(folder / name, "wb") as handle:
        handle.write(data)
    return start, wall


def poll_status(client: RawClient, function_id: str, want: int, start: float, poll_s: float,
                timeout: float = 30.0) -> tuple[float, int, bytes]:
    """Poll GET / until `want`; (seconds since start, polls, body)."""
    polls = 0
    while True:
        status, body = client.get("/", {"id": function_id})
        polls += 1
        if status == want:
            return time.perf_counter() - start, polls, body
        if status not in (200, 404):
            raise RuntimeError(f"id {function_id}: unexpected status {status}: {body[:200]!r}")
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"id {function_id}: no {want} after {timeout:.0f}s (last {status})")
        if poll_s > 0:
            time.sleep(poll_s)


def measure_landing(host: HostProcess, client: RawClient, folder: Path, module: Module, cache: str, how: str,
                    file_name: str, data: bytes, poll_s: float, tree: Tree = THIS_TREE) -> Landing:
    before = cache_stats(host)
    start, wall = land(folder, file_name, data, how)
    elapsed, polls, body = poll_status(client, module.function_id, 200, start, poll_s)
    problem = "" if body == module.body else f"body {body[:80]!r}, expected {module.body!r}"
    host_live = None
    with contextlib.suppress(Exception):
        info = admin_json(host.admin, f"/functions/{module.function_id}")
        host_live = (info["versions"][0]["last_reload"]["at"] - wall) * 1000
    after = cache_stats(host)
    landing = Landing(tree.label, module.label, cache, HOW[how], file_name, elapsed * 1000, host_live, polls,
                      counter_delta(before, after), problem=problem)
    # delete it again and wait for the 404 (the watcher removes the function)
    unlink_start = time.perf_counter()
    (folder / file_name).unlink()
    removal, _, _ = poll_status(client, module.function_id, 404, unlink_start, poll_s)
    landing.removal_ms = removal * 1000
    log(f"{tree.label}: {module.label}, {cache}, {HOW[how]}: {landing.ms:.1f} ms ({polls} polls; {landing.counters})"
        + (f"  PROBLEM: {problem}" if problem else ""))
    return landing


def import_floor_ms(tree: Tree) -> tuple[float, tuple[float, float]]:
    """`python -c 'import host.process.serve'` until imported (a marker line), not until exit; and its
    cpu_ms() then (it waits for its stdin to close before exiting)."""
    code = "import host.process.serve, sys; print('imported', flush=True); sys.stdin.read()"
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tree.root, env=tree.env(), stdout=subprocess.PIPE,
                            stdin=subprocess.PIPE)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    elapsed = (time.perf_counter() - started) * 1000
    cpu = cpu_ms(proc.pid)
    proc.stdin.close()  # type: ignore[union-attr]
    proc.wait()
    if line.strip() != b"imported":
        raise RuntimeError(f"`python -c 'import host.process.serve'` failed in {tree.root}")
    return elapsed, cpu


READY_KINDS = {"cold": "cold cache", "warm": "warm cache", "listeners": "warm cache, + gRPC and Dapr HTTP listeners"}


def readiness_row(tree: Tree, kind: str, trees: int) -> str:
    prefix = f"{tree.label}: " if trees > 1 else ""
    if kind == "floor":
        return f"{prefix}`python -c 'import host.process.serve'` until imported (interpreter + imports, no serving)"
    return f"{prefix}`python -m host serve` → readiness 200, {READY_KINDS[kind]}"


def measure_readiness(report: Report, workdir: Path, reps: int) -> None:
    functions = workdir / "examples"
    functions.mkdir()
    for wasm in sorted(EXAMPLES.glob("*.wasm")):
        shutil.copy(wasm, functions / wasm.name)
    names = ", ".join(p.stem for p in sorted(functions.glob("*.wasm")))
    report.notes.append(f"readiness rows: functions folder = copies of examples/functions/*.wasm ({names}); "
                        "readiness polled every 2 ms on a fresh connection; the gRPC and Dapr HTTP rows configure "
                        "both runtime API listeners (as the default config does) and check right after readiness "
                        "that both accept a connection")

    # Interleaved per repetition (floor, cold, warm, listeners; each tree), so a burst of load on a
    # shared machine hits every row alike. The floor is interpreter + imports alone.
    trees = report.trees
    times: dict[str, list[float]] = {readiness_row(t, k, len(trees)): []
                                     for t in trees for k in ("floor", *READY_KINDS)}
    counters: dict[str, set[str]] = {}
    refused: list[str] = []
    for index, tree in enumerate(trees):
        warm_cache = workdir / f"readiness-cache-warm-{index}"
        with running_host(write_config(workdir, f"ready-fill-{index}", functions, warm_cache),
                          workdir / "host-ready-fill.log", tree):
            pass  # fills the warm cache (and the bytecode cache), untimed
        import_floor_ms(tree)  # untimed: bytecode of anything the host did not import
    for rep in range(reps):
        for index, tree in enumerate(trees):
            floor, cpu = import_floor_ms(tree)
            times[readiness_row(tree, "floor", len(trees))].append(floor)
            report.readiness_cpu.setdefault(readiness_row(tree, "floor", len(trees)), []).append(cpu)
            for kind in READY_KINDS:
                cache = (workdir / f"readiness-cache-cold-{index}-{rep}" if kind == "cold"
                         else workdir / f"readiness-cache-warm-{index}")
                config = write_config(workdir, f"ready-{kind}-{index}-{rep}", functions, cache,
                                      listeners=kind == "listeners")
                host = start_host(config, workdir / f"host-ready-{kind}.log", tree)
                try:
                    times[readiness_row(tree, kind, len(trees))].append(wait_ready(host) * 1000)
                    report.readiness_cpu.setdefault(readiness_row(tree, kind, len(trees)), []).append(host.cpu_at_ready)
                    refused += [f"{tree.label}, rep {rep + 1}: {name}" for name in refused_listeners(host)]
                    counters.setdefault(readiness_row(tree, kind, len(trees)), set()).add(
                        json.dumps(cache_stats(host), sort_keys=True))
                finally:
                    host.stop()
            last = {kind: times[readiness_row(tree, kind, len(trees))][-1] for kind in ("floor", *READY_KINDS)}
            log(f"readiness rep {rep + 1}, {tree.label}: " + ", ".join(f"{k} {v:.0f} ms" for k, v in last.items()))
    report.readiness.update(times)
    for row, seen in counters.items():
        report.readiness_counters[row] = "; ".join(sorted(seen))
    report.notes.append("runtime API listeners at readiness: " + (
        "every configured listener accepted a connection right after readiness 200" if not refused
        else "**refused right after readiness 200:** " + ", ".join(refused)))


def measure_landings(report: Report, workdir: Path, modules: list[Module], reps: int, poll_s: float,
                     tree: Tree = THIS_TREE) -> None:
    folder = workdir / f"functions-{len(report.cache_proofs)}"
    folder.mkdir()
    cache = workdir / f"landing-cache-{len(report.cache_proofs)}"
    config = write_config(workdir, "landing", folder, cache)
    prefix = f"{tree.label}: " if len(report.trees) > 1 else ""

    def nonce(module: Module, how: str, rep: int) -> bytes:
        return with_nonce(module.wasm, f"{module.function_id}-{how}-{rep}")

    log(f"{tree.label}, host A: empty functions folder, empty cache")
    with running_host(config, workdir / "host-A.log", tree) as host:
        client = RawClient(host.port)
        try:
            # one untimed landing first: first-use code paths in the host (imports, thread pool start)
            hello = modules[0]
            measure_landing(host, client, folder, hello, "warm-up", "rename", "warmup.wasm",
                            with_nonce(hello.wasm, "warm-up"), poll_s, tree)
            for module in modules:
                for cache_kind, name in (("cold", "cold"), ("warm (memory)", "warm")):
                    for how in HOW:
                        for rep in range(reps):
                            report.landings.append(measure_landing(
                                host, client, folder, module, cache_kind, how,
                                f"{module.function_id}-{name}-{how}-{rep}.wasm", nonce(module, how, rep), poll_s, tree))
            stats_a = cache_stats(host)
        finally:
            client.close()
        report.notes.extend(f"{prefix}host A logged: {line[-240:]}" for line in host.problems()[:5])
    report.cache_proofs.append(f"{prefix}host A after all landings: `{json.dumps(stats_a)}`")

    log(f"{tree.label}, host B: new process, same cache dir")
    with running_host(config, workdir / "host-B.log", tree) as host:
        before_b = cache_stats(host)
        client = RawClient(host.port)
        try:
            for module in modules:
                for how in HOW:
                    for rep in range(reps):
                        report.landings.append(measure_landing(
                            host, client, folder, module, "warm (disk, restarted host)", how,
                            f"{module.function_id}-restart-{how}-{rep}.wasm", nonce(module, how, rep), poll_s, tree))
            stats_b = cache_stats(host)
        finally:
            client.close()
        report.notes.extend(f"{prefix}host B logged: {line[-240:]}" for line in host.problems()[:5])
    grew = stats_b["compiled"] - before_b["compiled"]
    report.cache_proofs.append(
        f"{prefix}host B (same cache dir) at readiness: `{json.dumps(before_b)}`, after its landings: "
        f"`{json.dumps(stats_b)}` — `compiled` grew by {grew}"
        + (" (no compile: every module came from disk)" if grew == 0 else " **(it recompiled)**"))


# --------------------------------------------------------------------------------------------
# report


def summary(values: list[float]) -> str:
    if not values:
        return "– | – | –"
    return f"{min(values):.1f} | {statistics.median(values):.1f} | {max(values):.1f}"


def fmt_share(share: float) -> str:
    return "?" if share != share else f"{share:.0%}"


def verdict(values: list[float], target: float) -> tuple[bool, str]:
    met = statistics.median(values) <= target
    text = f"≤ {target:.0f} ms (median): " + ("met" if met else "**missed**")
    if met and max(values) > target:
        text += f" (max {max(values):.1f} ms over)"
    return met, text


def render(report: Report, args: argparse.Namespace) -> str:
    lines = ["# wasm-faas-host cold start: new file → first 200", ""]
    lines += [
        f"- date: {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; "
        f"command: `python bench/cold_start.py {' '.join(sys.argv[1:])}`".rstrip(),
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores; Linux {platform.release()}; "
        f"Python {platform.python_version()}, wasmtime {pkg_version('wasmtime')}, aiohttp {pkg_version('aiohttp')}, "
        f"watchdog {pkg_version('watchdog')}",
        f"- host source at the start: {report.source}",
        f"- machine load: other processes used {fmt_share(report.busy_before)} of the CPU just before the run and "
        f"{fmt_share(report.others_during)} during it; load average at the end {report.loadavg}"
        + ("  **— the machine was busy; times are inflated**"
           if (report.others_during == report.others_during and report.others_during > 0.10)
           or (report.busy_before == report.busy_before and report.busy_before > 0.10) else ""),
        f"- CPU speed probe (`sum(range(10**7))` in this process, best of 3): {report.probe_ms[0]:.0f} ms at the start, "
        f"{report.probe_ms[1]:.0f} ms at the end (start-up is CPU-bound: compare runs with this in mind)",
        f"- {args.reps} repetitions per row; first-200 polling: `GET /` + header `id`, one keep-alive connection, "
        f"{args.poll_ms:g} ms sleep between polls (resolution ≈ poll interval + one round trip)",
        "- every host process runs from compiled bytecode (`PYTHONPYCACHEPREFIX` under .cache/, "
        "`PYTHONDONTWRITEBYTECODE` removed), as an installed host does",
        "- modules: " + "; ".join(f"**{m.label}** ({m.detail})" for m in report.modules),
    ]
    if len(report.trees) > 1:
        lines.append("- trees: " + "; ".join(f"**{t.label}** = `{t.root}`" for t in report.trees)
                     + " (same venv; runs interleaved or back to back under the same load)")
    lines += [
        "",
        "## File landing → first 200",
        "",
        "Two ways a file lands: *rename* — bytes written to `name.wasm.partial`, then `os.replace` to `name.wasm`, the",
        "clock starting just before the rename; *write+close* — `name.wasm` created, written and closed in place, the",
        "clock starting just before the open. *host: live* is the host's own timestamp of the router swap",
        "(`last_reload.at` in `GET /functions/{id}`) minus the wall clock at the start: the rest is polling.",
        "",
        "| tree | module | cache | landing | min ms | median ms | max ms | host: live, median ms "
        "| unlink → 404, median ms | module_cache counters moved | target |",
        "|---|---|---|---|--:|--:|--:|--:|--:|---|---|",
    ]
    groups: dict[tuple[str, str, str, str], list[Landing]] = {}
    for landing in report.landings:
        groups.setdefault((landing.tree, landing.module, landing.cache, landing.how), []).append(landing)
    checks = []
    for (tree, module, cache, how), rows in groups.items():
        times = [r.ms for r in rows]
        live = [r.host_live_ms for r in rows if r.host_live_ms is not None]
        removal = [r.removal_ms for r in rows if r.removal_ms is not None]
        counters = sorted({r.counters for r in rows})
        target = ""
        if cache.startswith("warm"):
            met, target = verdict(times, WARM_TARGET_MS)
            checks.append((f"{tree}: {module}, {cache}, {how} — warm cache ≤ {WARM_TARGET_MS:.0f} ms", met))
        elif module.startswith("big (") and cache == "cold":
            met, target = verdict(times, COLD_BIG_TARGET_MS)
            checks.append((f"{tree}: {module}, cold, {how} — ~300 KB cold ≤ {COLD_BIG_TARGET_MS:.0f} ms", met))
        live_text = f"{statistics.median(live):.1f}" if live else "–"
        removal_text = f"{statistics.median(removal):.1f}" if removal else "–"
        lines.append(f"| {tree} | {module} | {cache} | {how} | {summary(times)} | {live_text} | {removal_text} | "
                     f"{'; '.join(counters)} | {target} |")
    lines += ["", "Each repetition (ms, landing → first 200):", ""]
    for (tree, module, cache, how), rows in groups.items():
        lines.append(f"- {tree}: {module}, {cache}, {how}: " + ", ".join(f"{r.ms:.1f}" for r in rows))
    problems = [r for r in report.landings if r.problem]
    if problems:
        lines += ["", "**Wrong answers:**", ""] + [f"- {r.tree}: {r.module}, {r.cache}, {r.file_name}: {r.problem}"
                                                      for r in problems]
    lines += ["", "Compiled-module cache (`module_cache` from `GET /functions`):", ""]
    lines += [f"- {proof}" for proof in report.cache_proofs]

    lines += ["", "## `python -m host serve` start-up → readiness", "",
              "*on a CPU* / *waiting for a CPU*: the host process's threads at readiness, from /proc/<pid>/task/*/schedstat",
              "(time run, and time runnable but waiting for a CPU other processes held), medians.", "",
              "| what | min ms | median ms | max ms | on a CPU, median ms | waiting for a CPU, median ms | target |",
              "|---|--:|--:|--:|--:|--:|---|"]
    for name, values in report.readiness.items():
        target = ""
        if values and "readiness 200" in name:
            met, target = verdict(values, READY_TARGET_MS)
            checks.append((f"{name} — serve ready ≤ {READY_TARGET_MS:.0f} ms", met))
        cpu = report.readiness_cpu.get(name, [])
        run = statistics.median(c[0] for c in cpu) if cpu else float("nan")
        waited = statistics.median(c[1] for c in cpu) if cpu else float("nan")
        lines.append(f"| {name} | {summary(values)} | {run:.0f} | {waited:.0f} | {target} |")
    if report.readiness_counters:
        lines.append("")
    for row, counters in report.readiness_counters.items():
        lines.append(f"- module_cache at readiness, {row}: `{counters}`")

    lines += ["", "## Against the targets", ""]
    for name, met in checks:
        lines.append(f"- {name}: {'met' if met else '**missed**'}")
    lines.append(f"- for reference, Layotto's published FaaS warm-pool figure: {LAYOTTO_WARM_POOL_MS / 1000:.0f} s")
    if report.notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def exports_cost_notes() -> list[str]:
    """Why a module with many exports deploys slowly: the engine adapter (abi/engine/_guest.py) reads
    `instance.exports(store)` for every new instance, and wasmtime-py builds that mapping with one
    `wasmtime_instance_export_nth` call per index, whose cost grows with the export count: quadratic overall."""
    import wasmtime

    engine = wasmtime.Engine()
    timings = []
    for count in (500, 1000, 2000, 4000):
        wat = "(module " + " ".join(f'(func (export "f{i}") (result i32) i32.const {i})' for i in range(count)) + ")"
        module = wasmtime.Module(engine, wasmtime.wat2wasm(wat))
        store = wasmtime.Store(engine)
        instance = wasmtime.Instance(store, module, [])
        started = time.perf_counter()
        instance.exports(store)
        timings.append(f"{count:,}: {(time.perf_counter() - started) * 1000:.1f} ms")
    return ["big vs big, many exports: wasmtime-py's `Instance.exports()` builds the whole export map with one "
            "`wasmtime_instance_export_nth` call per index, and the cost per call grows with the export count, so "
            "the walk is quadratic. Measured here in-process, `exports()` on one instance of a module with N exported "
            "functions — " + ", ".join(timings) + ". The `big, many exports` rows show how much of that a deploy "
            "still pays (on 2026-11-26 the host walked every export of every new instance: ~300 ms warm). Real "
            "proxy-wasm modules export a few dozen functions at most, so the `big` rows are the representative ones."]


def default_out(name: str) -> Path:
    return RESULTS / f"{dt.date.today().isoformat()}-{name}.md"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="repetitions per row (default 5)")
    parser.add_argument("--poll-ms", type=float, default=1.0, help="sleep between first-200 polls (default 1 ms)")
    parser.add_argument("--big-kb", type=int, default=300, help="size of the generated module in KiB (default 300)")
    parser.add_argument("--no-many-exports", dest="many_exports", action="store_false",
                        help="skip the extra ~300 KB module that exports every 2nd function")
    parser.add_argument("--skip-readiness", action="store_true", help="only the file-landing rows")
    parser.add_argument("--skip-landings", action="store_true", help="only the readiness rows")
    parser.add_argument("--also-tree", type=Path, default=None, metavar="DIR",
                        help="also measure the host of another checkout (same venv, PYTHONPATH=DIR)")
    parser.add_argument("--also-label", default="other tree", help="how the report names --also-tree")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the report here (default bench/results/<date>-cold-start.md)")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    out = args.out or default_out("cold-start")

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    report = Report()
    report.trees = [THIS_TREE]
    if args.also_tree is not None:
        if not (args.also_tree / "host" / "__main__.py").exists():
            parser.error(f"--also-tree {args.also_tree}: no host/__main__.py there")
        report.trees.append(Tree(args.also_label, args.also_tree.resolve()))
    report.source = source_state()
    start_probe = cpu_probe_ms()
    report.busy_before = cpu_busy()
    before = RUN.CpuSample.now() if RUN is not None else None

    hello_wasm = (EXAMPLES / "hello.wasm").read_bytes()
    big_wasm, functions = build_big_module("big", args.big_kb)
    report.modules = [
        Module("hello (C)", "hello", hello_wasm, HELLO_BODY, f"examples/functions/hello.wasm, {len(hello_wasm):,} bytes"),
        Module("big (WAT)", "big", big_wasm, BIG_BODY,
               f"generated: {functions:,} small internal functions, only the proxy-wasm entry points exported, "
               f"wat2wasm → {len(big_wasm):,} bytes"),
    ]
    log(f"big module: {functions} functions, {len(big_wasm)} bytes")
    if args.many_exports:
        wide_wasm, wide_functions = build_big_module("big_exports", args.big_kb, export_every=2)
        exports = (wide_functions + 1) // 2
        report.modules.append(Module(
            "big, many exports (WAT)", "big_exports", wide_wasm, BIG_BODY,
            f"the same generator with every 2nd function exported: {wide_functions:,} functions, "
            f"{exports:,} of them exported, {len(wide_wasm):,} bytes"))
        report.notes.extend(exports_cost_notes())
    with tempfile.TemporaryDirectory(prefix="wasm-faas-coldstart-") as tmp:
        workdir = Path(tmp)
        try:
            if not args.skip_landings:
                for tree in report.trees:
                    measure_landings(report, workdir, report.modules, args.reps, args.poll_ms / 1000, tree)
            if not args.skip_readiness:
                measure_readiness(report, workdir, args.reps)
        except KeyboardInterrupt:
            log("interrupted")
            return 130
        except (RuntimeError, OSError, ValueError) as error:
            log(f"error: {error}")
            if not report.landings and not report.readiness:
                return 1
            report.notes.append(f"run aborted: {str(error).splitlines()[0]}")
    if before is not None:
        report.others_during = RUN.CpuSample.now().others_share_since(before)
    changed = source_note(report.source, "host processes started after the change ran the new code")
    if changed:
        report.notes.append(changed)
    report.loadavg = load_average()
    report.probe_ms = (start_probe, cpu_probe_ms())
    publish(render(report, args), out)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

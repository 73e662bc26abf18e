"""Density: how many distinct functions one host process holds, what each costs, and whether all answer.

    python bench/density.py [--counts 1000,3000,10000] [--kind distinct|same] [--set FIELD=VALUE ...]
                            [--idle-wait-s S] [--out FILE]

Issue 16: "10,000 distinct functions deployed on one host in <= 20 s, all answering; memory per idle
function <= 64 KiB above the host's baseline", and reaching a limit (the process's memory-map count,
`vm.max_map_count`; thread creation) must refuse further deploys, never abort the host.

Each count runs in two fresh child processes over one temporary folder (so each has its own baseline):

1. the first writes N modules into the functions folder: a tiny proxy-wasm module (about 300 bytes)
   whose `proxy_get_id` reports `fn-NNNNNN` and whose request callback answers that id
   (`--kind distinct`, N distinct modules, each compiled on its own), or N copies of one module
   without `proxy_get_id`, named by their file stem (`--kind same`: shared compiled code); then it
   deploys them with an empty compiled-module cache (every module compiled: the cold deploy time);
2. the second starts an in-process `host.app.App` with an empty folder (no listener, no watcher) and
   records the baseline: RSS (`VmRSS`), memory mappings (lines of /proc/self/maps), threads; then
   deploys the N files concurrently, exactly as `App.start` does (artifacts from the cache: the warm
   deploy time);
3. measures after the deploy, then after `--idle-wait-s` (idle pools scale to their minimum),
   then sends one request to every function through the one call path and checks each answers its own
   id (a scaled-to-zero function starts an instance on that request), and measures again;
4. prints one JSON line: times (wall, and the process's CPU time, which a loaded machine inflates
   less), per-function deltas, refusals (with their messages), readiness and the memory-map budget.

A third kind of child (`--startup`, run once) measures what compiling one distinct tiny module costs
(the floor of a cold deploy) against reading it back from the disk cache, and what a scaled-to-zero
function pays on its first request, with `examples/functions/hello.wasm`: one instantiation from the
pre-linked module, an instance with its start-up callbacks (`_initialize`, `proxy_get_id`, root
context, `proxy_on_vm_start`, `proxy_on_configure`), and a request through the dispatcher when the
pool is at zero (idle timeout 0: every request starts a fresh instance) next to one served by a warm
instance.

`--set FIELD=VALUE` sets `[function_defaults]` fields (e.g. `--set instance_num=2` for the old fixed
pools, `--set min_instances=0 --set idle_timeout_ms=500`); `--server FIELD=VALUE` sets `[server]`
fields. The parent prints a markdown table (and saves it with --out). Measures, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import datetime as dt
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
ID_WIDTH = 6  # fn-NNNNNN: every id has the same length, so one compiled template is patched per id

TEMPLATE_ID = "fn-" + "0" * ID_WIDTH
# Answers its id; proxy_get_id reports it (buffer 8, call data). Buffer 1 is the response body.
_WAT = """(module
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "{id}")
  (func (export "proxy_abi_version_0_2_1"))
  {get_id}
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 4096))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $set (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 1024) (i32.const {size})))
    (i32.const 0)))"""
_GET_ID = """(func (export "proxy_get_id")
    (drop (call $set (i32.const 8) (i32.const 0) (i32.const 0) (i32.const 1024) (i32.const {size}))))"""


def log(message: str) -> None:
    print(f"[density] {message}", file=sys.stderr, flush=True)


# -------------------------------------------------------------------------------------------------
# the child: one count in one process


def function_id(index: int) -> str:
    return f"fn-{index:0{ID_WIDTH}d}"


def write_modules(folder: Path, count: int, kind: str) -> list[str]:
    """N modules in `folder`; returns the function ids they answer to."""
    import wasmtime

    size = len(TEMPLATE_ID)
    get_id = _GET_ID.format(size=size) if kind == "distinct" else ""
    template = bytes(wasmtime.wat2wasm(_WAT.format(id=TEMPLATE_ID, get_id=get_id, size=size)))
    assert template.count(TEMPLATE_ID.encode()) == 1
    ids = []
    for index in range(count):
        fid = function_id(index)
        name = fid if kind == "distinct" else f"same-{index:0{ID_WIDTH}d}"
        # `same`: one module, so the id is the file stem (no proxy_get_id) and it answers the template id.
        data = template.replace(TEMPLATE_ID.encode(), fid.encode()) if kind == "distinct" else template
        (folder / f"{name}.wasm").write_bytes(data)
        ids.append(name)
    return ids


def _malloc_trim() -> None:
    """Give freed heap back to the OS before reading RSS (glibc only): RSS then says what is held."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status() -> dict[str, str]:
    return dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)


def sample() -> dict[str, int]:
    """RSS as it is (`rss_raw_kib`) and after returning freed heap (`rss_kib`), maps, threads."""
    raw = int(_status()["VmRSS"].split()[0])
    _malloc_trim()
    status = _status()
    with open("/proc/self/maps", "rb") as maps:
        map_count = sum(1 for _ in maps)
    return {"rss_kib": int(status["VmRSS"].split()[0]), "rss_raw_kib": raw, "maps": map_count,
            "threads": int(status["Threads"])}


def per_function(after: dict[str, int], base: dict[str, int], count: int) -> dict[str, float]:
    return {"rss_kib": round((after["rss_kib"] - base["rss_kib"]) / count, 2),
            "rss_raw_kib": round((after["rss_raw_kib"] - base["rss_raw_kib"]) / count, 2),
            "maps": round((after["maps"] - base["maps"]) / count, 3)}


def _pairs(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, _, raw = item.partition("=")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


async def _deploy_all(app: Any, folder: Path) -> tuple[float, float, dict[str, str]]:
    """(wall s, CPU s of the whole process, failures): the CPU time is what a shared machine's load
    does not inflate."""
    from host.functions.sources import discover

    paths = discover(app.config)
    started, cpu = time.perf_counter(), time.process_time()
    await app.deployments.deploy_all(paths)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return elapsed, cpu, app.deployments.failures()


def _instances(app: Any) -> dict[str, int]:
    totals = {"instances": 0, "idle": 0, "busy": 0}
    for version in app.router.versions():
        stats = version.pool.stats()
        for key in totals:
            totals[key] += stats[key]
    return totals


async def child(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from abi import HttpRequest
    from host.app import App
    from host.config import validate_config

    result: dict[str, Any] = {"count": args.count, "kind": args.kind, "defaults": _pairs(args.set),
                              "server": _pairs(args.server)}
    tmp = Path(args.workdir)
    folder = tmp / "functions"
    raw = {"functions_dirs": [str(folder)], "function_defaults": _pairs(args.set),
           "server": {"watch": False, "cache_dir": str(tmp / "cache"), "grpc": "", "dapr_http": "",
                      **_pairs(args.server)}}
    config = validate_config(raw, "density")
    empty = tmp / "empty"
    empty.mkdir(exist_ok=True)
    base_config = validate_config({**raw, "functions_dirs": [str(empty)]}, "density")
    if args.phase == "cold":  # every module compiled (and stored in the cache)
        folder.mkdir()
        write_modules(folder, args.count, args.kind)
        cold = App(base_config)
        await cold.start()
        cold.config = config
        result["cold_deploy_s"], result["cold_deploy_cpu_s"], cold_failed = await _deploy_all(cold, folder)
        result["cold_failed"] = len(cold_failed)
        await cold.stop()
        return result
    app = App(base_config)  # the warm cache, measured
    await app.start()
    base = sample()
    result["baseline"] = base
    app.config = config
    result["deploy_s"], result["deploy_cpu_s"], failed = await _deploy_all(app, folder)
    result["deployed"] = len(app.router.ids())
    result["refused"] = len(failed)
    result["refusals"] = sorted(set(failed.values()))[:3]
    after_deploy = sample()
    result["after_deploy"] = {**after_deploy, **_instances(app),
                              "per_function": per_function(after_deploy, base, args.count)}
    if args.idle_wait_s:
        await asyncio.sleep(args.idle_wait_s)
        idle = sample()
        result["idle"] = {**idle, **_instances(app), "per_function": per_function(idle, base, args.count)}

    # every function answers its own id (a scaled-to-zero one starts an instance for it)
    request = HttpRequest.build("GET", "/", [], authority="localhost")
    wrong: list[str] = []
    started = time.perf_counter()
    for name in sorted(app.router.ids()):
        try:
            version = app.dispatcher.find(name)
            response = app.dispatcher.try_now(version, request) or await app.dispatcher.call(version, request)
            expected = (name if args.kind == "distinct" else TEMPLATE_ID).encode()
            if response.status != 200 or response.body != expected:
                wrong.append(f"{name}: {response.status} {response.body[:40]!r}")
        except Exception as error:  # noqa: BLE001 - counted and reported
            wrong.append(f"{name}: {error}")
    result["answer_all_s"] = round(time.perf_counter() - started, 3)
    result["answered"] = result["deployed"] - len(wrong)
    result["wrong"] = wrong[:3]
    answered = sample()
    result["after_answer"] = {**answered, **_instances(app),
                              "per_function": per_function(answered, base, args.count)}
    status, details = app.readiness()
    result["readiness"] = str(status)
    result["readiness_limits"] = details.get("limits")
    await app.stop()
    return result


async def startup(rounds: int = 7, per_round: int = 100) -> dict[str, Any]:
    """µs of CPU (median over rounds, each the mean of `per_round`) for hello's cold start pieces."""
    sys.path.insert(0, str(REPO))
    import statistics

    from abi import HostServices, HttpRequest, PluginSettings, ProxyWasmVM, WasmEngine, all_host_functions
    from host.app import App
    from host.config import validate_config

    hello = REPO / "examples" / "functions" / "hello.wasm"
    engine = WasmEngine()
    linker = engine.linker(all_host_functions())
    module = engine.compile(hello.read_bytes())
    settings = PluginSettings(name="hello", memory_limit_bytes=256 << 20)
    services = HostServices()

    def measure(work: Any) -> float:
        means = []
        for _ in range(rounds):
            started = time.thread_time_ns()
            for _ in range(per_round):
                work()
            means.append((time.thread_time_ns() - started) / per_round / 1000)
        return round(statistics.median(means), 1)

    def started_instance() -> None:
        ProxyWasmVM(engine, linker, module, settings, services).start()

    result: dict[str, Any] = {
        "instantiate_us": measure(lambda: engine.instantiate(linker, module, None, memory_limit_bytes=256 << 20)),
        "instance_and_startup_us": measure(started_instance)}
    # What a cold deploy of a distinct tiny module cannot avoid: compiling it (wall: wasmtime compiles
    # its functions in parallel threads); and what the disk cache's warm deploy pays instead.
    import wasmtime

    size = len(TEMPLATE_ID)
    template = bytes(wasmtime.wat2wasm(_WAT.format(id=TEMPLATE_ID, get_id=_GET_ID.format(size=size), size=size)))
    tiny = [template.replace(TEMPLATE_ID.encode(), function_id(900_000 + i).encode()) for i in range(200)]
    started = time.perf_counter()
    compiled = [engine.compile(wasm) for wasm in tiny]
    result["tiny_compile_ms"] = round((time.perf_counter() - started) / len(tiny) * 1000, 3)
    artifacts = [m.serialize() for m in compiled]
    started = time.perf_counter()
    for artifact in artifacts:
        engine.deserialize(artifact)
    result["tiny_deserialize_us"] = round((time.perf_counter() - started) / len(tiny) * 1e6, 1)
    with tempfile.TemporaryDirectory(prefix="density-startup-") as tmp:
        folder = Path(tmp) / "functions"
        folder.mkdir()
        (folder / "hello.wasm").write_bytes(hello.read_bytes())
        for idle_ms, key in ((0, "request_from_zero"), (60_000, "request_warm")):
            app = App(validate_config({"functions_dirs": [str(folder)],
                                       "function_defaults": {"idle_timeout_ms": idle_ms},
                                       "server": {"watch": False, "cache_dir": str(Path(tmp) / "cache"),
                                                  "grpc": "", "dapr_http": ""}}, "density"))
            await app.start()
            version = app.dispatcher.find("hello")
            request = HttpRequest.build("GET", "/", [], authority="localhost")
            walls, cpus = [], []
            for _ in range(rounds * 40):
                wall, cpu = time.perf_counter_ns(), time.process_time_ns()  # the start runs in a guest thread
                response = app.dispatcher.try_now(version, request) or await app.dispatcher.call(version, request)
                walls.append((time.perf_counter_ns() - wall) / 1000)
                cpus.append((time.process_time_ns() - cpu) / 1000)
                assert response.status == 200, response
                await asyncio.sleep(0.001)  # the retired instance is closed in between (not measured)
            result[f"{key}_wall_us"] = round(statistics.median(walls), 1)
            result[f"{key}_cpu_us"] = round(statistics.median(cpus), 1)
            result[f"{key}_started"] = version.pool.scaling()["started_on_demand"]
            await app.stop()
    return result


# -------------------------------------------------------------------------------------------------
# the parent: one child per count, a table


def _run(command: list[str], args: argparse.Namespace) -> dict[str, Any]:
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=args.timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"child did not finish within --timeout-s {args.timeout_s:g}"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        return {"error": f"child exited {done.returncode}: " + " | ".join(tail)}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_child(count: int, args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="density-") as workdir:
        command = [sys.executable, str(Path(__file__).resolve()), "--child", str(count), "--kind", args.kind,
                   "--idle-wait-s", str(args.idle_wait_s), "--workdir", workdir]
        for item in args.set:
            command += ["--set", item]
        for item in args.server:
            command += ["--server", item]
        cold = _run(command + ["--phase", "cold"], args)
        result = {**_run(command + ["--phase", "warm"], args), **cold} if "error" not in cold else cold
    result["count"] = count
    result["wall_s"] = round(time.perf_counter() - started, 2)
    return result


def startup_report(result: dict[str, Any]) -> list[str]:
    if "error" in result:
        return ["", f"Cold start of hello: **{result['error']}**"]
    return ["", f"A distinct tiny module: compiled in {result['tiny_compile_ms']} ms (wall, wasmtime's "
            f"parallel compilation), deserialized from the disk cache in {result['tiny_deserialize_us']} µs.",
            "", "Cold start of `hello` (µs, median; CPU time unless marked wall):", "",
            "| instantiate (pre-linked) | + start-up callbacks (a started instance) | request from zero, CPU "
            "| request from zero, wall | warm request, CPU | warm request, wall |",
            "|---|---|---|---|---|---|",
            f"| {result['instantiate_us']} | {result['instance_and_startup_us']} "
            f"| {result['request_from_zero_cpu_us']} | {result['request_from_zero_wall_us']} "
            f"| {result['request_warm_cpu_us']} | {result['request_warm_wall_us']} |",
            "", f"- instances started on demand: {result['request_from_zero_started']} for the requests from zero, "
            f"{result['request_warm_started']} for the warm ones (the instance the deploy started serves them)"]


def _budget(limits: dict[str, Any]) -> str:
    maps = limits.get("memory_maps", {})
    return (f"limit {maps.get('limit')}, in use {maps.get('in_use')}, reserve {maps.get('reserve')}, "
            f"instance margin {maps.get('instance_margin')}, reclaims {maps.get('reclaims')}, "
            f"refused {maps.get('refused')}")


def _cell(result: dict[str, Any], stage: str, key: str) -> str:
    value = result.get(stage, {}).get("per_function", {}).get(key)
    return "-" if value is None else f"{value:g}"


def report(results: list[dict[str, Any]], args: argparse.Namespace, start: dict[str, Any] | None) -> str:
    with open("/proc/sys/vm/max_map_count") as limit:
        max_maps = limit.read().strip()
    lines = [f"# Density ({dt.date.today().isoformat()})", "",
             f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
             f"vm.max_map_count {max_maps}, load average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}",
             f"- modules: `--kind {args.kind}`; function_defaults: {', '.join(args.set) or 'defaults'}; "
             f"server: {', '.join(args.server) or 'defaults'}; idle wait {args.idle_wait_s:g} s",
             "- per function = (process after - process with no function) / N; RSS after malloc_trim", "",
             "| N | deploy cold s (CPU s) | deploy warm s (CPU s) | deployed | refused | answered "
             "| instances after deploy "
             "| RSS KiB/fn deployed | maps/fn deployed | instances idle | RSS KiB/fn idle | maps/fn idle "
             "| answer all s | RSS KiB/fn after answer | readiness |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['count']:,} | **{r['error']}** |" + " |" * 13)
            continue
        lines.append(
            f"| {r['count']:,} | {r['cold_deploy_s']:.2f} ({r['cold_deploy_cpu_s']:.1f}) "
            f"| {r['deploy_s']:.2f} ({r['deploy_cpu_s']:.1f}) | {r['deployed']:,} | {r['refused']:,} "
            f"| {r['answered']:,} | {r['after_deploy']['instances']:,} | {_cell(r, 'after_deploy', 'rss_kib')} "
            f"| {_cell(r, 'after_deploy', 'maps')} | {r.get('idle', {}).get('instances', '-')} "
            f"| {_cell(r, 'idle', 'rss_kib')} | {_cell(r, 'idle', 'maps')} | {r['answer_all_s']:.2f} "
            f"| {_cell(r, 'after_answer', 'rss_kib')} | {r['readiness']} |")
    notes = [f"- N={r['count']:,}: memory-map budget at the end: {_budget(r['readiness_limits'])}"
             for r in results if r.get("readiness_limits")]
    notes += [f"- N={r['count']:,}: refused with: {r['refusals'][0]}" for r in results if r.get("refusals")]
    notes += [f"- N={r['count']:,}: wrong answers: {r['wrong']}" for r in results if r.get("wrong")]
    return "\n".join(lines + [""] + notes + (startup_report(start) if start is not None else [])) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--counts", default="1000,3000,10000")
    parser.add_argument("--kind", choices=("distinct", "same"), default="distinct")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--server", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--idle-wait-s", type=float, default=0.0)
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--json", action="store_true", help="also print each child's JSON")
    parser.add_argument("--no-startup", action="store_true", help="skip the cold-start measurement of hello")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=("cold", "warm"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--startup", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.startup:
        print(json.dumps(asyncio.run(startup())), flush=True)
        return 0
    if args.child is not None:
        args.count = args.child
        print(json.dumps(asyncio.run(child(args))), flush=True)
        return 0
    start = None
    if not args.no_startup:
        log("cold start of hello ...")
        start = _run([sys.executable, str(Path(__file__).resolve()), "--startup"], args)
        log(json.dumps(start))
    results = []
    for count in (int(c) for c in args.counts.split(",")):
        log(f"{count:,} functions ...")
        result = run_child(count, args)
        results.append(result)
        if args.json or "error" in result:
            log(json.dumps(result))
    text = report(results, args, start)
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tracing's cost per request: `hello` and the Layotto demo chain (id_1 -> proxy_invoke_service ->
id_2 -> Redis) with tracing off, propagation only, and spans exported; optionally next to another
checkout's host (the code before tracing) in the same rounds.

    python bench/tracing.py [--duration S] [--rounds N] [--connections C] [--before DIR] [--out FILE]

Rows (each server is this checkout's host, one worker, unless named "before"):
- off:        no traceparent sent, no exporter configured (what every request paid before tracing,
              plus a flag check per call);
- propagate:  a sampled traceparent sent, no exporter: the context is parsed and re-emitted by hand
              wherever a call is made (the demo: the invoke; hello makes none, so pays nothing);
- on:         a sampled traceparent sent, spans exported over OTLP/gRPC to a sink receiver in this
              process (tests/tracing/otlp_receiver.py): a SERVER span per function call;
- on, unsampled: the same host, the caller's flag 00: the sampling decision is taken before the SDK;
- before:     --before DIR's host (no traceparent), when given.

The figure to read is the server's CPU time per request (its process tree, from /proc): unlike
req/s it barely moves with others' load on the machine. Nothing here asserts speed.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
if str(BENCH.parent) not in sys.path:
    sys.path.insert(0, str(BENCH.parent))

import run as bench_run  # noqa: E402

from tests.tracing.otlp_receiver import OtlpReceiver  # noqa: E402

SAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
UNSAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"


@dataclass
class Row:
    scenario: str
    mode: str
    server: str  # which server (key of the servers dict)
    headers: dict[str, str]
    path: str
    body: bytes
    results: list[bench_run.WrkResult] = field(default_factory=list)


def write_config(workdir: Path, name: str, tree: Path, tracing: str) -> Path:
    config = workdir / f"{name}.toml"
    config.write_text(f"""\
functions_dirs = [{str(tree / "examples" / "functions")!r}]

[server]
cache_dir = {str(workdir / f"cache-{name}")!r}
grpc = ""
dapr_http = ""

[function_defaults]
instance_num = 2

[state.state_demo]
type = "redis"
address = "{bench_run.REDIS_HOST}:{bench_run.REDIS_PORT}"
{tracing}""")
    return config


@contextlib.contextmanager
def servers(workdir: Path, receiver: OtlpReceiver, before: Path | None) -> Iterator[dict[str, bench_run.Server]]:
    trees = {"host": (bench_run.Tree(bench_run.REPO), ""),
             "host+otlp": (bench_run.Tree(bench_run.REPO), f"""
[tracing]
otlp_endpoint = "{receiver.endpoint}"
batch_delay_ms = 200
""")}
    if before is not None:
        trees["before"] = (bench_run.Tree(before, label="before"), "")
    with contextlib.ExitStack() as stack:
        started = {}
        for name, (tree, tracing) in trees.items():
            tree = bench_run.Tree(tree.root, tree.label or name.replace("+", "-"),
                                  write_config(workdir, name.replace("+", "-"), tree.root, tracing))
            started[name] = stack.enter_context(bench_run.host_server(tree, 1, workdir))
        yield started


def rows(with_before: bool) -> list[Row]:
    hello = ({"id": "hello"}, "/", bench_run.HELLO_BODY)
    demo = ({"id": "id_1"}, bench_run.DEMO_PATH, bench_run.DEMO_BODY)
    made = []
    for scenario, (headers, path, body) in (("hello", hello), ("demo", demo)):
        if with_before:
            made.append(Row(scenario, "before", "before", headers, path, body))
        made += [Row(scenario, "off", "host", headers, path, body),
                 Row(scenario, "propagate", "host", {**headers, "traceparent": SAMPLED}, path, body),
                 Row(scenario, "on", "host+otlp", {**headers, "traceparent": SAMPLED}, path, body),
                 Row(scenario, "on, unsampled", "host+otlp", {**headers, "traceparent": UNSAMPLED}, path, body)]
    return made


def check(row: Row, server: bench_run.Server) -> None:
    status, _, body = bench_run.http_get(server.url + row.path, row.headers)
    if status != 200 or body != row.body:
        raise RuntimeError(f"{row.scenario}/{row.mode}: HTTP {status} {body[:200]!r}")


def render(table: list[Row], load: bench_run.Load, connections: int, receiver: OtlpReceiver) -> str:
    lines = [f"tracing bench: {load.duration}s per row x {load.rounds} round(s), {connections} connections, "
             f"1 worker, load average {bench_run.load_average()}", "",
             "| scenario | mode | server CPU µs/req (median) | each round | req/s | p50 | p99 | non-2xx |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for row in table:
        cpu = [r.server_cpu_us for r in row.results]
        rps = statistics.median(r.rps for r in row.results)
        lines.append(f"| {row.scenario} | {row.mode} | {statistics.median(cpu):.1f} | "
                     f"{', '.join(f'{c:.1f}' for c in cpu)} | {rps:,.0f} | "
                     f"{bench_run.fmt_us(statistics.median(r.p50_us for r in row.results))} | "
                     f"{bench_run.fmt_us(statistics.median(r.p99_us for r in row.results))} | "
                     f"{sum(r.non_2xx for r in row.results)} |")
    lines += ["", f"spans received by the sink: {receiver.count} in {receiver.exports} export(s)"]
    return "\n".join(lines)


def micro(count: int = 20000) -> str:
    """The tracing work on the call path alone, in this process (CPU µs per operation, best of 3):
    steadier than the server rows on a shared machine."""
    import time

    from abi import HttpRequest
    from host.tracing.context import context_of
    from host.tracing.setup import ExportSettings
    from host.tracing.spans import Spans

    def request(traceparent: str | None) -> HttpRequest:
        headers = [("id", "hello"), ("host", "127.0.0.1"), ("user-agent", "wrk")]
        return HttpRequest.build("GET", "/", headers + ([("traceparent", traceparent)] if traceparent else []),
                                 lowered=True)

    receiver = OtlpReceiver(keep=False)
    recorder = Spans(ExportSettings(receiver.endpoint, "bench", delay_ms=200))

    def per_op(work: object, flush: bool = False, count: int = count) -> float:
        best = float("inf")
        for _ in range(3):
            requests = [request(SAMPLED) for _ in range(count)]
            started = time.process_time()
            for made in requests:
                work(made)  # type: ignore[operator]
            if flush:
                recorder.flush()
            best = min(best, (time.process_time() - started) / count * 1e6)
        return best

    def propagate(made: HttpRequest) -> None:
        context_of(made).headers()  # what a call (invoke, http, publish) adds: parse, new span id, re-emit

    def unsampled(made: HttpRequest) -> None:
        made.headers[-1] = ("traceparent", UNSAMPLED)
        recorder.begin("hello", made)
        recorder.end(made, 200)

    def sampled(made: HttpRequest) -> None:
        recorder.begin("hello", made)
        recorder.end(made, 200)

    try:
        rows = [("propagation: context + child traceparent", per_op(propagate)),
                ("on, unsampled: begin + end (no SDK call)", per_op(unsampled)),
                # 1500 stay within the SDK's span queue (2048): none is dropped unexported
                ("on, sampled: SERVER span begin + end, export (this process's share)",
                 per_op(sampled, flush=True, count=1500))]
    finally:
        recorder.shutdown()
        receiver.stop()
    return "\n".join(["| per request (in-process, CPU) | µs |", "|---|---:|",
                      *(f"| {name} | {value:.1f} |" for name, value in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="measured seconds per row (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up seconds per row (default 1)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, rows alternating within each (default 2)")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections (default 4)")
    parser.add_argument("--before", type=Path, metavar="DIR", help="another checkout's host, measured alongside")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    parser.add_argument("--micro", action="store_true", help="only the in-process per-operation costs")
    args = parser.parse_args(argv)
    if args.micro:
        print(micro())
        return 0
    problem = bench_run.seed_redis()
    if problem:
        bench_run.log(problem)
        return 1
    load = bench_run.Load(duration=args.duration, warmup=args.warmup, threads=1, rounds=args.rounds)
    receiver = OtlpReceiver(keep=False)  # counts spans, keeps none
    table = rows(args.before is not None)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-tracing-") as tmp, \
                servers(Path(tmp), receiver, args.before.resolve() if args.before else None) as started:
            for row in table:
                check(row, started[row.server])
            for round_number in range(args.rounds):
                for row in table:
                    server = started[row.server]
                    bench_run.log(f"round {round_number + 1}: {row.scenario} / {row.mode}")
                    row.results.append(bench_run.measure(server.url + row.path, row.headers, args.connections,
                                                         load, server_pids=[p.pid for p in server.procs]))
    finally:
        bench_run.unseed_redis()
        receiver.stop()
    report = render(table, load, args.connections, receiver) + "\n\n" + micro()
    print(report)
    if args.out:
        args.out.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What one runtime host import costs a guest, next to the same work from Python, in one run.

    python bench/imports.py [--k K] [--rounds R] [--quick] [--out FILE]

Issue 11 asks for the cost per call of the runtime imports. bench/functions/import_cost.c calls one
import K times (default 1,000) inside one request and answers the nanoseconds between two
`proxy_get_current_time_nanoseconds` around the loop (the host's clock), for:

- `proxy_get_state_with_etag`, `proxy_set_state` (no ETag), `proxy_try_lock` + `proxy_unlock` (one
  iteration is two imports), `proxy_get_next_id`, each with memory and with Redis components;
- `proxy_get_log_level`, a pure import touching nothing (the floor of crossing into the host), and the
  empty loop.

Beside them, from this process and K times in a loop: the host's own component (the same backend
class and config, called from Python: what the component costs without the ABI), redis-py's client
sending the command(s) the Redis backend sends (HMGET; EVALSHA of the store's set script; SET NX PX +
EVALSHA of the unlock script; INCR), and a bare redis-py `Connection` doing the same (send_command /
read_response: the network floor; the host's Redis client uses such connections). Rounds alternate
host-first and Python-first; the table shows medians in µs per call. Measures, asserts nothing;
writes bench/results/<date>-imports.md. Keys are under a prefix of this run's own and deleted at the end.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import cold_start  # noqa: E402
import redis  # noqa: E402
import run as bench_run  # noqa: E402
import runtime_api as shared  # noqa: E402

from host.components import registry  # noqa: E402
from host.components.base import ComponentContext  # noqa: E402
from host.components.lock.base import lock_key  # noqa: E402
from host.components.lock.redis import _UNLOCK as UNLOCK_SCRIPT  # noqa: E402
from host.components.sequencer.base import sequencer_key  # noqa: E402
from host.components.state import StateItem  # noqa: E402
from host.components.state.redis import _SET as STORE_SET_SCRIPT  # noqa: E402

OPS = ("set_state", "get_state", "lock", "next_id")  # set first: get reads what it wrote
STORES = ("memory", "redis")
IMPORTS = {"get_state": "proxy_get_state_with_etag", "set_state": "proxy_set_state",
           "lock": "proxy_try_lock + proxy_unlock", "next_id": "proxy_get_next_id",
           "log_level": "proxy_get_log_level (pure: the floor)", "none": "(empty loop)"}
CALLS_PER_ITERATION = {"lock": 2}
CAPABILITY = {"get_state": "state", "set_state": "state", "lock": "lock", "next_id": "sequencer"}
VALUE = b"import-cost-value"  # what the guest writes (bench/functions/import_cost.c)
OWNER = "import-cost"
LOCK_EXPIRE_S = 30
FUNCTION = {"id": "import_cost"}


def log(message: str) -> None:
    print(f"[imports] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# the host's side: one request runs K calls inside the guest


def host_config(workdir: Path, wasm: Path, prefix: str) -> str:
    redis_address = f'address = "{shared.REDIS_HOST}:{shared.REDIS_PORT}"'
    components = "\n".join(f'[{capability}.memory]\ntype = "memory"\n\n[{capability}.redis]\ntype = "redis"\n'
                           f"{redis_address}\n" for capability in ("state", "lock", "sequencer"))
    return f"""\
app_id = "{prefix}app"

[server]
grpc = ""
dapr_http = ""
cache_dir = {str(workdir / "module-cache")!r}
request_timeout_ms = 300000

[functions.import_cost]
path = {str(wasm)!r}
instance_num = 1
timeout_ms = 300000     # a request of K Redis calls on a busy machine may take long

{components}"""


def key_for(op: str, prefix: str) -> str:
    """The state key / lock resource / sequence the guest is told to use."""
    return f"{prefix}{CAPABILITY.get(op, 'none')}"


def guest_ns(server: bench_run.Server, op: str, store: str, key: str, k: int) -> float:
    """ns for k iterations measured inside the guest; raises when a call failed."""
    headers = {**FUNCTION, "op": op, "store": store, "key": key, "k": str(k)}
    status, _, body = bench_run.http_get(server.url + "/", headers, timeout=120)
    text = body.decode(errors="replace").strip()
    if status != 200:
        raise RuntimeError(f"import_cost {op}/{store}: HTTP {status}: {text}")
    elapsed, failures = (int(part) for part in text.split())
    if failures:
        raise RuntimeError(f"import_cost {op}/{store}: {failures} of {k} iterations did not answer OK")
    return float(elapsed)


# --------------------------------------------------------------------------------------------
# this process's side: the component alone, redis-py's client, a bare connection


def component(capability: str, kind: str, prefix: str) -> Any:
    """The host's backend for `capability`, built by the host's registry from the same config."""
    module = registry.backends(capability)[kind]
    fields: dict[str, Any] = {"type": kind}
    if kind == "redis":
        fields["address"] = f"{shared.REDIS_HOST}:{shared.REDIS_PORT}"
    context = ComponentContext(kind, app_id=f"{prefix}app", logger=logging.getLogger("bench.imports"))
    return registry.build(capability, module.Config(**fields), context)


def component_call(op: str, backend: Any, key: str) -> Callable[[], object]:
    if op == "get_state":
        return lambda: backend.get(key)
    if op == "set_state":
        item = StateItem(key, VALUE)
        return lambda: backend.set(item)
    if op == "lock":
        def lock() -> None:
            backend.try_lock(key, OWNER, LOCK_EXPIRE_S)
            backend.unlock(key, OWNER)
        return lock
    return lambda: backend.next_id(key)


def redis_commands(op: str, key: str, prefix: str) -> list[tuple[Any, ...]]:
    """The command(s) one iteration sends, as the host's Redis backends send them."""
    context = ComponentContext("redis", app_id=f"{prefix}app")
    if op == "get_state":
        return [("HMGET", key, "data", "version")]
    if op == "set_state":
        return [("EVALSHA", STORE_SET_SCRIPT.sha, 1, key, 0, VALUE, "0", "")]
    if op == "lock":
        stored = lock_key("appid", context, key)
        return [("SET", stored, OWNER, "NX", "PX", LOCK_EXPIRE_S * 1000), ("EVALSHA", UNLOCK_SCRIPT.sha, 1, stored,
                                                                           OWNER)]
    return [("INCR", sequencer_key("appid", context, key))]


def timed(call: Callable[[], object], k: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(k):
        call()
    return float(time.perf_counter_ns() - start)


@dataclass
class Python:
    """This process's ways of doing what the guest does."""
    prefix: str
    k: int
    client: redis.Redis = field(init=False)
    connection: redis.Connection = field(init=False)
    backends: dict[tuple[str, str], Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.client = redis.Redis(host=shared.REDIS_HOST, port=shared.REDIS_PORT, socket_timeout=10)
        self.client.script_load(STORE_SET_SCRIPT.source)
        self.client.script_load(UNLOCK_SCRIPT.source)
        self.connection = redis.Connection(host=shared.REDIS_HOST, port=shared.REDIS_PORT, socket_timeout=10)
        self.connection.connect()
        for op in OPS:
            for kind in STORES:
                capability = CAPABILITY[op]
                if (capability, kind) not in self.backends:
                    self.backends[(capability, kind)] = component(capability, kind, self.prefix)

    def component_ns(self, op: str, kind: str) -> float:
        return timed(component_call(op, self.backends[(CAPABILITY[op], kind)], key_for(op, self.prefix)), self.k)

    def client_ns(self, op: str) -> float:
        commands = redis_commands(op, key_for(op, self.prefix), self.prefix)
        execute = self.client.execute_command

        def iteration() -> None:
            for command in commands:
                execute(*command)
        return timed(iteration, self.k)

    def connection_ns(self, op: str) -> float:
        commands = redis_commands(op, key_for(op, self.prefix), self.prefix)
        connection = self.connection

        def iteration() -> None:
            for command in commands:
                connection.send_command(*command)
                connection.read_response()
        return timed(iteration, self.k)

    def close(self) -> None:
        self.connection.disconnect()
        self.client.close()
        for backend in self.backends.values():
            backend.close()


# --------------------------------------------------------------------------------------------
# the rounds and the report


@dataclass
class Result:
    header: shared.Header
    k: int
    # (way, op, store) -> ns per K iterations, one value per round
    samples: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    profiles: list[tuple[str, str]] = field(default_factory=list)  # (what ran, py-spy summary)

    def add(self, way: str, op: str, store: str, ns: float) -> None:
        self.samples.setdefault((way, op, store), []).append(ns)

    def per_call(self, way: str, op: str, store: str) -> list[float]:
        """µs per call in each round."""
        return [ns / self.k / CALLS_PER_ITERATION.get(op, 1) / 1000 for ns in self.samples.get((way, op, store), [])]

    def us_per_call(self, way: str, op: str, store: str) -> float:
        return shared.median(self.per_call(way, op, store))

    def best(self, way: str, op: str, store: str) -> float:
        """The fastest round: on a loaded machine, noise only ever adds time."""
        values = self.per_call(way, op, store)
        return min(values) if values else float("nan")


def run_round(result: Result, server: bench_run.Server, python: Python, prefix: str, k: int, reverse: bool) -> None:
    """Every way of every (op, store) back to back, so the guest and its Python references run seconds
    apart, under the same foreign load (a shared machine's load drifts); `reverse` flips their order."""
    for op in ("none", "log_level"):
        result.add("guest", op, "-", guest_ns(server, op, "", "", k))
    for store in STORES:
        for op in OPS:  # set_state first: get_state reads what it wrote
            steps: list[tuple[str, Callable[[], float]]] = [
                ("guest", functools.partial(guest_ns, server, op, store, key_for(op, prefix), k)),
                ("component", functools.partial(python.component_ns, op, store))]
            if store == "redis":
                steps += [("redis-py client", functools.partial(python.client_ns, op)),
                          ("redis-py Connection", functools.partial(python.connection_ns, op))]
            for way, step in reversed(steps) if reverse else steps:
                result.add(way, op, store, step())


def profile(result: Result, server: bench_run.Server, prefix: str, workdir: Path, seconds: float) -> None:
    """py-spy record of the host while one long request runs get_state on each store."""
    for store in STORES:
        per_call_us = result.us_per_call("guest", "get_state", store)
        k = int((seconds + 2) * 1e6 / (per_call_us if per_call_us == per_call_us else 100.0))  # outlasts the record
        failure: list[Exception] = []

        def request(store: str = store, k: int = k, failure: list[Exception] = failure) -> None:
            try:
                guest_ns(server, "get_state", store, key_for("get_state", prefix), k)
            except (RuntimeError, OSError) as error:
                failure.append(error)

        thread = threading.Thread(target=request)
        thread.start()
        time.sleep(0.5)
        _dump, summary = shared.profile_host(server.procs[0].pid, seconds, workdir, native=False)
        thread.join()
        if failure:
            summary += f"\n\n(the profiled request failed: {failure[0]})"
        result.profiles.append((f"`proxy_get_state_with_etag`, {store} store, one request of {k:,} calls", summary))


def cell(result: Result, way: str, op: str, store: str) -> str:
    """`median (best)` µs per call over the rounds."""
    median, best = result.us_per_call(way, op, store), result.best(way, op, store)
    return "–" if median != median else f"{median:.2f} ({best:.2f})"


def paired(result: Result, a: str, b: str, op: str, store: str, value: Callable[[float, float], float]) -> float:
    """The median over rounds of value(a's µs, b's µs): the two ran back to back in each round."""
    return shared.median([value(x, y) for x, y in zip(result.per_call(a, op, store), result.per_call(b, op, store),
                                                      strict=False)])


def render(result: Result, args: argparse.Namespace) -> str:
    lines = ["# Runtime host imports: µs per call from a guest, next to the same work from Python", "",
             *result.header.lines(f"- load: K = {result.k:,} calls per request (one request per row and round), "
                                  f"{args.rounds} round(s); in each, every way of one import runs back to back "
                                  "(guest first in odd rounds, last in even ones); one host worker, the function's "
                                  "instance_num = 1, Redis on the same cores"),
             "",
             f"Floor: `proxy_get_log_level` costs **{cell(result, 'guest', 'log_level', '-')} µs** per call from the "
             f"guest (median (best round)); the empty loop {cell(result, 'guest', 'none', '-')} µs per iteration.",
             "",
             "µs per call, median over the rounds (fastest round in brackets: on a loaded machine noise only adds "
             "time). Lock rows: per import of the try_lock + unlock pair.",
             "",
             "| import | store | guest → host import | component from Python | import − component (ABI + services) "
             "| redis-py client | redis-py Connection (network floor) | import ÷ client |",
             "|---|---|--:|--:|--:|--:|--:|--:|"]
    for store in STORES:
        for op in OPS:
            overhead = paired(result, "guest", "component", op, store, lambda g, c: g - c)
            ratio = paired(result, "guest", "redis-py client", op, store, lambda g, c: g / c if c > 0 else float("nan"))
            lines.append(f"| `{IMPORTS[op]}` | {store} | **{cell(result, 'guest', op, store)}** | "
                         f"{cell(result, 'component', op, store)} | {shared.fmt_num(overhead, '+.2f')} | "
                         f"{cell(result, 'redis-py client', op, store)} | "
                         f"{cell(result, 'redis-py Connection', op, store)} | "
                         f"{'–' if ratio != ratio else f'{ratio:.2f}×'} |")
    lines += ["", "Each round (guest µs per call):", ""]
    for store in STORES:
        for op in OPS:
            lines.append(f"- {op}, {store}: {', '.join(f'{v:.2f}' for v in result.per_call('guest', op, store))}")
    lines.append(f"- log_level: {', '.join(f'{v:.3f}' for v in result.per_call('guest', 'log_level', '-'))}")
    notes = [*result.notes, *shared.source_changed_note(result.header)]
    if notes:
        lines += ["", "Notes:", "", *[f"- {note}" for note in notes]]
    for what, summary in result.profiles:
        lines += ["", f"## py-spy of the host: {what}", "", "```", summary, "```"]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=1000, help="calls per request (default 1,000)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians shown (default 5)")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the host during a long get_state request on each store (after the rounds)")
    parser.add_argument("--quick", action="store_true", help="K = 200, 1 round: a smoke run")
    parser.add_argument("--out", type=Path, default=None, help="report file (default results/<date>-imports.md)")
    args = parser.parse_args(argv)
    if args.quick:
        args.k, args.rounds = 200, 1
    args.k, args.rounds = max(1, args.k), max(1, args.rounds)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    problem = shared.redis_reachable()
    if problem:
        print(f"imports: {problem}", file=sys.stderr)
        return 1
    result = Result(shared.Header(f"python bench/imports.py {' '.join(sys.argv[1:] if argv is None else argv)}"
                                  .strip()), args.k)
    prefix = shared.run_prefix("imports")
    python: Python | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="wasm-faas-imports-") as tmp:
            workdir = Path(tmp)
            log("building bench/functions/import_cost.c")
            wasm = shared.build_guest("import_cost", workdir)
            with shared.host(host_config(workdir, wasm, prefix), workdir) as server:
                python = py = Python(prefix, args.k)
                run_round(result, server, py, prefix, min(args.k, 100), False)  # warm-up: pools, connections, scripts
                result.samples.clear()
                for round_index in range(args.rounds):
                    log(f"round {round_index + 1}/{args.rounds}")
                    run_round(result, server, py, prefix, args.k, reverse=round_index % 2 == 1)
                if args.profile:
                    log("py-spy: profiling the host during long get_state requests")
                    profile(result, server, prefix, workdir, 4.0)
                bench_run.note_problems(bench_run.Report(notes=result.notes), server)
    except KeyboardInterrupt:
        log("interrupted; host stopped")
        return 130
    except (RuntimeError, OSError, redis.RedisError) as error:
        log(f"error: {error}")
        if not result.samples:
            return 1
        result.notes.append(f"run aborted: {str(error).splitlines()[0]}")
    finally:
        if python is not None:
            python.close()
        log(f"deleted {shared.delete_prefixed(prefix)} key(s) under {prefix}")
    result.header.finish()
    cold_start.publish(render(result, args), args.out or cold_start.default_out("imports"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Events into a function per second through Redis Streams, next to a plain redis-py consumer, in one run.

    python bench/events.py [--messages N] [--rounds R] [--quick] [--out FILE]

Issue 11 asks to show how fast `[[subscriptions]]` deliver; issue 16's target is >= 0.8x a plain
consumer doing the same work. Every side gets a pre-filled stream of N (default 20,000) CloudEvents
(the JSON envelope the host's own publish writes, `XADD <stream> * data <event>`) and does one state
write per message:

- `host`: `python -m host serve` with `[pubsub.bus] type = "redis"` and a `[[subscriptions]]` to
  bench/functions/event_sink.c, which saves the body under the event's ce-id in a redis state store
  (`proxy_set_state`: the store's Lua script, Dapr's hash layout) and answers 200 (= XACK);
- `redis-py, SET`: a loop in this process: XREADGROUP COUNT 16 (the subscription's default
  concurrency) / json.loads / SET <id> <data> / XACK, one command at a time;
- `redis-py, store script`: the same loop writing with the host's state script (EVALSHA of
  host/components/state/redis.py's set), so Redis does exactly the host's work;
- `redis-py, pipelined SET` (a reference, not a target): each batch's SETs and one XACK of its ids in
  one pipeline, one round trip per batch: what a consumer tuned for throughput reaches.

How a run is timed, the same for each side: the stream is filled with N - 1 entries and its consumer
group created at `$` (past the end), the consumer starts (the host: until ready), then the clock starts,
`XGROUP SETID <group> 0` rewinds the group and one more XADD wakes a blocked reader. The host's run ends
when XINFO GROUPS shows nothing pending and the last entry delivered (polled every 5 ms); a loop's when
it acked N. The state keys are counted after every run (N expected). Rounds alternate which side goes
first; the table shows medians. Measures, asserts nothing; writes bench/results/<date>-events.md.
Streams and keys are under a prefix of this run's own and deleted after each run.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
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

from host.components.pubsub.cloudevents import envelope  # noqa: E402
from host.components.state.redis import _SET as STORE_SET_SCRIPT  # noqa: E402

TARGET_RATIO = 0.8  # issue 16: events into a function >= 0.8x a plain consumer
FETCH = 16  # the subscription's default concurrency: what the host fetches at once
PUBSUB = "bus"
STATE = "sink"
SIDES = ("host", "redis-py, SET", "redis-py, store script", "redis-py, pipelined SET")
REFERENCE = "redis-py, pipelined SET"  # what a tuned consumer reaches: shown, not a target


def log(message: str) -> None:
    print(f"[events] {message}", file=sys.stderr, flush=True)


def client() -> redis.Redis:
    return redis.Redis(host=shared.REDIS_HOST, port=shared.REDIS_PORT, socket_timeout=30)


# --------------------------------------------------------------------------------------------
# the stream


@dataclass
class Stream:
    key: str
    group: str
    topic: str
    id_prefix: str  # each event's ce-id (and state key) is id_prefix + its number
    messages: int
    last_id: bytes = b""

    def event(self, number: int) -> bytes:
        return envelope(json.dumps({"n": number, "item": "book1"}).encode(), "application/json", topic=self.topic,
                        pubsub_name=PUBSUB, source="bench-events", event_id=f"{self.id_prefix}{number}")

    def prefill(self, r: redis.Redis) -> None:
        """N - 1 entries, and the group past them: nothing is delivered until `release`."""
        for start in range(0, self.messages - 1, 1000):
            with r.pipeline(transaction=False) as pipe:
                for number in range(start, min(start + 1000, self.messages - 1)):
                    pipe.xadd(self.key, {"data": self.event(number)})
                pipe.execute()
        r.xgroup_create(self.key, self.group, id="$", mkstream=True)

    def release(self, r: redis.Redis) -> None:
        """Rewind the group to the start and add the last entry (it wakes a reader blocked on the stream)."""
        r.xgroup_setid(self.key, self.group, id="0")
        entry_id = r.xadd(self.key, {"data": self.event(self.messages - 1)})
        self.last_id = entry_id if isinstance(entry_id, bytes) else str(entry_id).encode()

    def drained(self, r: redis.Redis) -> bool:
        for group in r.xinfo_groups(self.key):
            if group["name"] == self.group.encode() or group["name"] == self.group:
                return int(group["pending"]) == 0 and group["last-delivered-id"] == self.last_id
        return False

    def saved_keys(self, r: redis.Redis) -> int:
        return sum(1 for _ in r.scan_iter(match=f"{self.id_prefix}*", count=1000))


# --------------------------------------------------------------------------------------------
# the sides


@dataclass
class Run:
    side: str
    round_index: int
    messages: int
    seconds: float
    saved: int
    cpu_s: float  # the consumer's CPU: the host's process tree, or this process for a loop
    redis_cpu_s: float
    others_share: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else float("nan")


def host_config(workdir: Path, wasm: Path, prefix: str, stream: Stream) -> str:
    return f"""\
app_id = "{prefix}app"

[server]
grpc = ""
dapr_http = ""
cache_dir = {str(workdir / "module-cache")!r}

[functions.event_sink]
path = {str(wasm)!r}
instance_num = 2

[state.{STATE}]
type = "redis"
address = "{shared.REDIS_HOST}:{shared.REDIS_PORT}"

[pubsub.{PUBSUB}]
type = "redis"
address = "{shared.REDIS_HOST}:{shared.REDIS_PORT}"
stream_prefix = "{prefix}"

[[subscriptions]]
function = "event_sink"
pubsub = "{PUBSUB}"
topic = "{stream.topic}"
group = "{stream.group}"
max_attempts = 5
"""


def run_host(stream: Stream, workdir: Path, wasm: Path, prefix: str, redis_pid: int | None, timeout: float,
             round_index: int) -> Run:
    r = client()
    stream.prefill(r)
    with shared.host(host_config(workdir, wasm, prefix, stream), workdir, f"host-{round_index}") as server:
        with shared.CpuWindow(server.procs[0].pid, redis_pid) as cpu:
            start = time.perf_counter()
            stream.release(r)
            deadline = start + timeout
            while not stream.drained(r) and time.perf_counter() < deadline:
                time.sleep(0.005)
            seconds = time.perf_counter() - start
        note = "" if stream.drained(r) else f"**not drained after {timeout:.0f} s**"
        problems = server.logged_problems()
        if problems:
            note = "; ".join(filter(None, [note, f"host logged {len(problems)} warning(s): {problems[0][-160:]}"]))
    return Run("host", round_index, stream.messages, seconds, stream.saved_keys(r), cpu.host_s, cpu.redis_s,
               cpu.others_share, note)


def consume(r: redis.Redis, stream: Stream, save: Callable[[redis.Redis, str, bytes], object]) -> int:
    """A plain consumer: read a batch, then per message parse, save, ack. Returns the count acked."""
    acked = 0
    while acked < stream.messages:
        reply: Any = r.xreadgroup(stream.group, "bench-consumer", {stream.key: ">"}, count=FETCH, block=500)
        if not reply:
            continue
        for _key, entries in reply:
            for entry_id, fields in entries:
                event = json.loads(fields[b"data"])
                save(r, event["id"], json.dumps(event["data"], separators=(",", ":")).encode())
                r.xack(stream.key, stream.group, entry_id)
                acked += 1
    return acked


def consume_pipelined(r: redis.Redis, stream: Stream) -> int:
    """The tuned consumer: per batch, its SETs and one XACK of all its ids in one round trip."""
    acked = 0
    while acked < stream.messages:
        reply: Any = r.xreadgroup(stream.group, "bench-consumer", {stream.key: ">"}, count=FETCH, block=500)
        if not reply:
            continue
        for _key, entries in reply:
            with r.pipeline(transaction=False) as pipe:
                for _entry_id, fields in entries:
                    event = json.loads(fields[b"data"])
                    pipe.set(event["id"], json.dumps(event["data"], separators=(",", ":")).encode())
                pipe.xack(stream.key, stream.group, *(entry_id for entry_id, _ in entries))
                pipe.execute()
            acked += len(entries)
    return acked


def save_plain(r: redis.Redis, key: str, value: bytes) -> object:
    return r.set(key, value)


def save_script(r: redis.Redis, key: str, value: bytes) -> object:
    # The host store's arguments for an unconditional write: no ETag, not first-write, TTL unchanged.
    return r.evalsha(STORE_SET_SCRIPT.sha, 1, key, 0, value, "0", "")


def run_loop(side: str, stream: Stream, redis_pid: int | None, round_index: int) -> Run:
    r = client()
    r.script_load(STORE_SET_SCRIPT.source)
    stream.prefill(r)
    save = save_script if side == "redis-py, store script" else save_plain
    with shared.CpuWindow(None, redis_pid) as cpu:
        start = time.perf_counter()
        stream.release(r)
        if side == REFERENCE:
            consume_pipelined(r, stream)
        else:
            consume(r, stream, save)
        seconds = time.perf_counter() - start
    note = "" if stream.drained(r) else "**entries still pending**"
    return Run(side, round_index, stream.messages, seconds, stream.saved_keys(r), cpu.client_s, cpu.redis_s,
               cpu.others_share, note)


def check_saved(r: redis.Redis, side: str, stream: Stream) -> str:
    """One stored value read back as each side stores it (hash `data` for the host's store)."""
    key = f"{stream.id_prefix}{stream.messages // 2}"
    expected = json.dumps({"n": stream.messages // 2, "item": "book1"}, separators=(",", ":")).encode()
    got = r.hget(key, "data") if side in ("host", "redis-py, store script") else r.get(key)
    return "" if got == expected else f"{key} holds {got!r}, expected {expected!r}"


# --------------------------------------------------------------------------------------------
# report


@dataclass
class Result:
    header: shared.Header
    runs: list[Run] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def render(result: Result, args: argparse.Namespace) -> str:
    lines = ["# Events into a function (Redis Streams) next to a plain redis-py consumer", "",
             *result.header.lines(f"- load: {args.messages:,} messages per run, {args.rounds} round(s), the side "
                                  f"that goes first alternating; the host fetches {FETCH} at once (subscription "
                                  "concurrency), the loops XREADGROUP COUNT 16; all on the same cores as Redis"),
             "",
             "| side | events/s | seconds | state keys saved | consumer CPU s / 1,000 events | "
             "Redis CPU s / 1,000 | others' CPU | host ÷ this | each round |",
             "|---|--:|--:|--:|--:|--:|--:|--:|---|"]
    by_side = {side: [run for run in result.runs if run.side == side] for side in SIDES}
    checks = []
    for side, runs in by_side.items():
        if not runs:
            continue
        rate = shared.median([run.rate for run in runs])
        each = ", ".join(f"{run.rate:,.0f}" for run in runs)
        ratio = ""
        if side != "host":
            # The median of each round's host ÷ this (neighbours in time), not a ratio of medians.
            by_round = {run.round_index: run for run in by_side["host"]}
            pairs = [by_round[run.round_index].rate / run.rate for run in runs
                     if run.round_index in by_round and run.rate > 0]
            value = shared.median(pairs)
            ratio = f"**{value:.2f}×**"
            each += f" (host ÷ this: {', '.join(f'{p:.2f}×' for p in pairs)})"
            if side == REFERENCE:
                checks.append(f"| host ÷ {side} events/s | {value:.2f}× | reference, no target | |")
            else:
                checks.append(f"| host ÷ {side} events/s | {value:.2f}× | ≥ {TARGET_RATIO}× (issue 16) "
                              f"| {shared.verdict(value >= TARGET_RATIO)} |")
        lines.append(
            f"| {side} | {rate:,.0f} | {shared.median([r.seconds for r in runs]):.2f} | "
            f"{', '.join(str(r.saved) for r in runs)} | "
            f"{shared.fmt_num(shared.median([r.cpu_s / r.messages * 1000 for r in runs]))} | "
            f"{shared.fmt_num(shared.median([r.redis_cpu_s / r.messages * 1000 for r in runs]))} | "
            f"{bench_run.fmt_share(shared.median([r.others_share for r in runs]))} | {ratio} | {each} |")
    lines += ["", "| check | measured | target | |", "|---|--:|---|---|", *checks]
    notes = [*result.notes, *[f"{run.side}, round {run.round_index + 1}: {run.note}" for run in result.runs
                              if run.note], *shared.source_changed_note(result.header)]
    if notes:
        lines += ["", "Notes:", "", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000, help="messages per run (default 20,000)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians shown (default 3)")
    parser.add_argument("--timeout", type=float, default=600.0, help="give a host run up this long (default 600 s)")
    parser.add_argument("--quick", action="store_true", help="2,000 messages, 1 round: a smoke run")
    parser.add_argument("--out", type=Path, default=None, help="report file (default results/<date>-events.md)")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.rounds = 2_000, 1
    args.messages, args.rounds = max(2, args.messages), max(1, args.rounds)
    return args


def run_round(result: Result, args: argparse.Namespace, round_index: int, workdir: Path, wasm: Path, prefix: str,
              redis_pid: int | None) -> None:
    order = SIDES if round_index % 2 == 0 else SIDES[::-1]
    for side in order:
        tag = f"r{round_index}s{SIDES.index(side)}"
        stream = Stream(key=f"{prefix}{tag}", group=f"{prefix}group", topic=tag, id_prefix=f"{prefix}{tag}-",
                        messages=args.messages)
        log(f"round {round_index + 1}/{args.rounds}: {side}, {args.messages:,} messages")
        try:
            if side == "host":
                outcome = run_host(stream, workdir, wasm, prefix, redis_pid, args.timeout, round_index)
            else:
                outcome = run_loop(side, stream, redis_pid, round_index)
            problem = check_saved(client(), side, stream)
            if problem:
                outcome.note = "; ".join(filter(None, [outcome.note, f"wrong value: {problem}"]))
            result.runs.append(outcome)
            log(f"  {outcome.rate:,.0f} events/s ({outcome.seconds:.2f} s, {outcome.saved} keys)")
        finally:
            shared.delete_prefixed(stream.id_prefix)
            client().delete(stream.key)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    problem = shared.redis_reachable()
    if problem:
        print(f"events: {problem}", file=sys.stderr)
        return 1
    result = Result(shared.Header(f"python bench/events.py {' '.join(sys.argv[1:] if argv is None else argv)}"
                                  .strip()))
    prefix = shared.run_prefix("events")
    redis_pid = shared.redis_pid()
    if redis_pid is None:
        result.notes.append("Redis's pid is not visible here: its CPU column is empty")
    try:
        with tempfile.TemporaryDirectory(prefix="wasm-faas-events-") as tmp:
            workdir = Path(tmp)
            log("building bench/functions/event_sink.c")
            wasm = shared.build_guest("event_sink", workdir)
            for round_index in range(args.rounds):
                run_round(result, args, round_index, workdir, wasm, prefix, redis_pid)
    except KeyboardInterrupt:
        log("interrupted; host stopped")
        return 130
    except (RuntimeError, OSError, redis.RedisError) as error:
        log(f"error: {error}")
        if not result.runs:
            return 1
        result.notes.append(f"run aborted: {str(error).splitlines()[0]}")
    finally:
        log(f"deleted {shared.delete_prefixed(prefix)} leftover key(s) under {prefix}")
    result.header.finish()
    cold_start.publish(render(result, args), args.out or cold_start.default_out("events"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

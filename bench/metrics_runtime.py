"""Micro-benchmark of the runtime-call and event-delivery metrics (not a test): CPU time per call, in
process, rounds alternating so a loaded machine slows both sides alike.

1. `observe` of one runtime call: the plain-integer counts (host/metrics/runtime.py) next to
   prometheus_client's bound Counter + Histogram children (what the metrics used before).
2. What `RuntimeApi.run` adds for a component call, its own statements on the real objects (find
   the mark, read and check the component name, two clock reads, `observe`); and end to end,
   `RuntimeApi.run(state.get)` on a memory store from the event loop (the gRPC / HTTP path without
   the transport) through the api="grpc" view next to the unobserved API — a thread-pool round trip
   of ~60 µs each, so that difference is within its noise.
3. The delivery timing of one event (`OutcomeCounts.time` and two `perf_counter` calls).

    python bench/metrics_runtime.py [--calls N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prometheus_client import CollectorRegistry, Counter, Histogram  # noqa: E402

from host.api.observed import marked  # noqa: E402
from host.app import App  # noqa: E402
from host.config import validate_config  # noqa: E402
from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2 as pb  # noqa: E402
from host.metrics.counts import OutcomeCounts  # noqa: E402
from host.metrics.events import DELIVERY_BUCKETS  # noqa: E402
from host.metrics.runtime import RUNTIME_BUCKETS, RuntimeCallMetrics  # noqa: E402


def _per_call_us(body: Callable[[], object], calls: int) -> float:
    started = time.process_time_ns()
    for _ in range(calls):
        body()
    return (time.process_time_ns() - started) / calls / 1000


def _alternate(kinds: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(rounds):
        for name, measure in kinds.items():
            results[name].append(measure())
    return results


def observe_costs(calls: int, rounds: int) -> dict[str, list[float]]:
    registry = CollectorRegistry()
    counter = Counter("c", "c", ["api", "capability", "component", "outcome"], registry=registry)
    histogram = Histogram("h", "h", ["api", "capability", "component"], buckets=RUNTIME_BUCKETS, registry=registry)
    bound = (counter.labels("function", "state", "s", "ok"), histogram.labels("function", "state", "s"))

    def prometheus_children() -> None:  # the children cached, as the earlier code did
        bound[0].inc()
        bound[1].observe(0.0003)

    observer = RuntimeCallMetrics(CollectorRegistry()).for_api("function")
    return _alternate({
        "observe, prometheus_client children": lambda: _per_call_us(prometheus_children, calls),
        "observe, plain counts (now)": lambda: _per_call_us(lambda: observer.observe("state", "s", None, 0.0003),
                                                            calls),
    }, rounds)


def delivery_costs(calls: int, rounds: int) -> dict[str, list[float]]:
    latency = OutcomeCounts(DELIVERY_BUCKETS)
    clock = time.perf_counter

    def timed() -> None:
        started = clock()
        latency.time(clock() - started)

    return _alternate({"event delivery timing": lambda: _per_call_us(timed, calls)}, rounds)


async def api_costs(calls: int, rounds: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        config = validate_config({"server": {"listen": "127.0.0.1:0", "admin": "127.0.0.1:0", "cache_dir": tmp,
                                             "watch": False},
                                  "state": {"state_demo": {"type": "memory", "seed": {"book1": "100"}}}})
        app = App(config)
        await app.start()
        plain, observed = app.api, app.api.for_api("grpc")
        request = pb.GetStateRequest(store_name="state_demo", key="book1")

        async def per_call(api: object) -> float:
            run, get = api.run, api.state.get  # type: ignore[attr-defined]
            started = time.process_time_ns()
            for _ in range(calls):
                await run(get, request)
            return (time.process_time_ns() - started) / calls / 1000

        get, configured, clock = observed.state.get, app.components.of, time.perf_counter

        def hook() -> None:  # the statements RuntimeApi.run adds for an observed call
            spec = marked(get)
            assert spec is not None
            capability, component_of = spec
            name = component_of(request)
            if name not in configured(capability):
                name = ""
            started = clock()
            observed.observer.observe(capability, name, None, clock() - started)

        results: dict[str, list[float]] = {"RuntimeApi.run's metrics statements": [],
                                           "RuntimeApi.run(state.get), unobserved": [],
                                           "RuntimeApi.run(state.get), api=grpc view": []}
        try:
            await per_call(observed)  # warm-up: the thread pool and the bound series
            for _ in range(rounds):
                results["RuntimeApi.run's metrics statements"].append(_per_call_us(hook, calls * 10))
                results["RuntimeApi.run(state.get), unobserved"].append(await per_call(plain))
                results["RuntimeApi.run(state.get), api=grpc view"].append(await per_call(observed))
        finally:
            await app.stop()
            app.api.close()
        return results


def report(results: dict[str, list[float]], calls: int) -> None:
    for label, per_call in results.items():
        print(f"{label}: min {min(per_call):.2f} µs, median {statistics.median(per_call):.2f} µs CPU per call "
              f"({len(per_call)} rounds of {calls})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    report(observe_costs(args.calls, args.rounds), args.calls)
    report(delivery_costs(args.calls, args.rounds), args.calls)
    api_calls = max(1, args.calls // 10)  # each one a thread-pool round trip
    api = asyncio.run(api_costs(api_calls, args.rounds))
    hook, unobserved, observed = api.values()
    report({label: values for label, values in api.items() if values is not hook}, api_calls)
    report({label: values for label, values in api.items() if values is hook}, api_calls * 10)
    print(f"runtime-call metrics on the API path: {min(observed) - min(unobserved):+.2f} µs (min), "
          f"{statistics.median(observed) - statistics.median(unobserved):+.2f} µs (median) per call")


if __name__ == "__main__":
    main()

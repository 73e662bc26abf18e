"""Micro-benchmark of the one call path's hot loop (not a test): CPU time per `Dispatcher.try_now`
of the cheap `hello` function, in process, no listener. Rounds alternate between the real request
metrics and a stub that records nothing, so the difference is the metrics hook's cost — about a
microsecond, which a wrk run on a shared 2-core machine cannot resolve.

    python bench/metrics_hot_path.py [--calls N] [--rounds R]

Timings on a shared machine are noisy; for instruction counts (deterministic), run one kind of
round under callgrind at two call counts and divide the difference:

    valgrind --tool=callgrind python bench/metrics_hot_path.py --only metrics --rounds 1 --calls 2000
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from abi import HttpRequest  # noqa: E402
from host.app import App  # noqa: E402
from host.config import validate_config  # noqa: E402


class _Silent:
    def answered(self, status: int, seconds: float) -> None:
        return None

    def refused(self, error: object, seconds: float) -> None:
        return None


class _NoMetrics:
    """Stands in for RequestMetrics: what the call path costs without the metrics hook."""

    def __init__(self) -> None:
        self.silent = _Silent()

    def of(self, function_id: str) -> _Silent:
        return self.silent


async def measure(calls: int, rounds: int, only: str | None) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "functions"
        folder.mkdir()
        shutil.copy(REPO / "examples" / "functions" / "hello.wasm", folder / "hello.wasm")
        config = validate_config({"server": {"listen": "127.0.0.1:0", "admin": "127.0.0.1:0",
                                             "cache_dir": str(REPO / ".cache" / "bench-modules"),
                                             "watch": False},
                                  "functions_dirs": [str(folder)], "function_defaults": {"instance_num": 1}})
        app = App(config)
        await app.start()
        dispatcher = app.dispatcher
        real = dispatcher.metrics
        results: dict[str, list[float]] = {"metrics": [], "no metrics": []}
        try:
            version = dispatcher.find("hello")
            request = HttpRequest.build("GET", "/", [("id", "hello")], authority="localhost", lowered=True)
            for _ in range(rounds if only else rounds * 2):
                while not version.policy.inline:  # (re)promote the cheap function to inline runs
                    await dispatcher.call(version, request)
                label = only or ("metrics" if len(results["metrics"]) <= len(results["no metrics"]) else "no metrics")
                dispatcher.metrics = real if label == "metrics" else _NoMetrics()  # type: ignore[assignment]
                try_now = dispatcher.try_now
                started = time.process_time_ns()
                answered = sum(1 for _ in range(calls) if try_now(version, request) is not None)
                elapsed = time.process_time_ns() - started
                if answered == calls:  # a round where the policy demoted the function measures nothing
                    results[label].append(elapsed / calls / 1000)
            return results
        finally:
            dispatcher.metrics = real
            await app.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=8, help="rounds of each kind, alternating")
    parser.add_argument("--only", choices=["metrics", "no metrics"], help="run one kind of round only")
    args = parser.parse_args()
    results = asyncio.run(measure(args.calls, args.rounds, args.only))
    for label, per_call in results.items():
        if per_call:
            print(f"try_now(hello), {label}: min {min(per_call):.2f} µs, median {statistics.median(per_call):.2f} µs "
                  f"CPU per call ({len(per_call)} rounds of {args.calls})")
    if results["metrics"] and results["no metrics"]:
        print(f"metrics hook: {min(results['metrics']) - min(results['no metrics']):+.2f} µs (min), "
              f"{statistics.median(results['metrics']) - statistics.median(results['no metrics']):+.2f} µs (median)")


if __name__ == "__main__":
    main()

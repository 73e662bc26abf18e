"""Every benchmark against its baseline, in one command; a dated table of results.

    python bench/all.py [--quick] [--only run,cold_start,...] [--date YYYY-MM-DD]

Runs each bench/ script below in turn (never two at once: they would measure each other), each
writing its own report to bench/results/<date>-<name>.md, then writes bench/results/<date>-all.md:
one line per target (each script's "check | measured | target" rows, and the density and cold-start
figures), with the machine and its load at the start and end. A script that fails is reported as
failed with the tail of its output; the others still run. Measures, asserts nothing: the exit code
is non-zero only when no script produced a report.

| name | script | baseline |
|---|---|---|
| run | bench/run.py | bare aiohttp handlers (hello, 2 workers, demo with Redis, latency); the no-op function |
| runtime_api | bench/runtime_api.py | the same client reading Redis directly (GetState over gRPC) |
| events | bench/events.py | a plain redis-py Streams consumer doing the same work |
| cold_start | bench/cold_start.py | targets: file landing -> first 200, `serve` -> ready |
| density | bench/density.py | the host's own baseline RSS and memory maps (1k/3k/10k functions) |
| tracing | bench/tracing.py | the host with tracing off (propagation only, sampled export) |
| imports | bench/imports.py | host imports' cost per call |
| components | bench/components.py | a component function next to the proxy-wasm one |
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from run import load_average  # bench/run.py

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"


@dataclass(frozen=True)
class Script:
    name: str
    args: tuple[str, ...]  # the standard run
    quick: tuple[str, ...]  # --quick: a smoke run of each
    timeout_s: float


SCRIPTS = (
    Script("run", ("--rounds", "3", "--duration", "5"), ("--quick",), 1800),
    Script("runtime_api", (), ("--quick",), 1200),
    Script("events", (), ("--quick",), 1200),
    Script("cold_start", (), ("--reps", "3"), 1200),
    Script("density", ("--counts", "1000,3000,10000"), ("--counts", "200"), 2400),
    Script("tracing", ("--rounds", "3", "--duration", "3"), ("--rounds", "1", "--duration", "2"), 1800),
    Script("imports", (), ("--quick",), 900),
    Script("components", (), ("--requests", "200", "--reps", "2"), 1200),
)


def log(message: str) -> None:
    print(f"[all] {message}", file=sys.stderr, flush=True)


def run(script: Script, out: Path, quick: bool) -> tuple[str, float]:
    """(status, seconds); the script writes its report to `out`."""
    command = [sys.executable, str(BENCH / f"{script.name}.py"), *(script.quick if quick else script.args),
               "--out", str(out)]
    log(f"{script.name}: {' '.join(command[1:])}")
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=BENCH.parent, capture_output=True, text=True, timeout=script.timeout_s)
    except subprocess.TimeoutExpired:
        return f"did not finish within {script.timeout_s:.0f} s", time.monotonic() - started
    seconds = time.monotonic() - started
    if done.returncode != 0 or not out.exists():
        tail = " / ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        return f"failed (exit {done.returncode}): {tail[:300]}", seconds
    return "ok", seconds


_CHECK = re.compile(r"^\|(?P<name>[^|]+)\|(?P<measured>[^|]+)\|"
                    r"(?P<target>[^|]*(?:≥|≤|<|>|under)[^|]*)\|(?P<verdict>[^|]*)\|")


def checks(report: Path) -> list[str]:
    """The target rows of a report: `| check | measured | target | verdict |` lines."""
    if not report.exists():
        return []
    rows = []
    for line in report.read_text().splitlines():
        match = _CHECK.match(line)
        if match and "measured" not in match["measured"]:
            rows.append(f"| {match['name'].strip()} | {match['measured'].strip()} | {match['target'].strip()} | "
                        f"{match['verdict'].strip()} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of each script")
    parser.add_argument("--only", default=",".join(script.name for script in SCRIPTS),
                        help="comma-separated subset (default: all)")
    parser.add_argument("--date", default=dt.date.today().isoformat(), help="the results' date prefix")
    args = parser.parse_args(argv)
    wanted = set(args.only.split(","))
    unknown = wanted - {script.name for script in SCRIPTS}
    if unknown:
        parser.error(f"unknown script(s): {', '.join(sorted(unknown))}")
    RESULTS.mkdir(exist_ok=True)
    suffix = "-quick" if args.quick else ""
    started, load_start = dt.datetime.now(dt.UTC), load_average()
    lines = [f"# All benchmarks, {args.date}{' (quick)' if args.quick else ''}", "",
             f"- command: `python bench/all.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
             f"- machine: {os.cpu_count()} CPUs, {Path('/proc/version').read_text().split()[2]}; "
             f"Python {sys.version.split()[0]}",
             f"- started {started:%H:%M} UTC, load average {load_start} (1/5/15 min)", "",
             "| script | status | seconds | report |", "|---|---|--:|---|"]
    targets: list[str] = []
    produced = 0
    for script in SCRIPTS:
        if script.name not in wanted:
            continue
        out = RESULTS / f"{args.date}-{script.name}{suffix}.md"
        status, seconds = run(script, out, args.quick)
        produced += out.exists() and status == "ok"
        lines.append(f"| {script.name} | {status} | {seconds:.0f} | {out.name if out.exists() else '–'} |")
        targets += [row.replace("| ", f"| {script.name}: ", 1) for row in checks(out)]
    lines += ["", f"- finished {dt.datetime.now(dt.UTC):%H:%M} UTC, load average {load_average()}", "",
              "## Targets", "", "| check | measured | target | |", "|---|--:|--:|---|", *targets, ""]
    summary = RESULTS / f"{args.date}-all{suffix}.md"
    summary.write_text("\n".join(lines))
    print(summary.read_text())
    log(f"wrote {summary}")
    return 0 if produced else 1


if __name__ == "__main__":
    sys.exit(main())

"""Where a function request's time goes: py-spy of the host under wrk load, per function id.

    python bench/profile_http.py [--ids hello,noop] [--path /] [--seconds 8] [--also-tree DIR] [--out FILE]

Starts the host as bench/run.py does (the example functions plus bench/functions/noop.wat, one
worker), loads it with wrk (16 connections) on each id in turn while `py-spy record` samples the
host's main thread, and prints, per tree and id, the server's CPU per request and the heaviest
frames: by own time and including callees. With `--also-tree DIR` the same is measured on another
checkout (e.g. the commit before a change), for a before/after pair.

py-spy samples wall-clock stacks of a running thread: a thread preempted while another process
runs (wrk shares the cores) is sampled where it stopped, often in a system call such as the socket
write. Read the shares as where the thread is, and the CPU per request as what it costs.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import run as bench  # bench/run.py: servers, config, wrk

TOP = 22


def py_spy() -> str:
    return shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))


def record(pid: int, seconds: float, out: Path) -> None:
    subprocess.run([py_spy(), "record", "-p", str(pid), "-d", f"{seconds:g}", "-r", "250", "-f", "raw",
                    "-o", str(out), "--nonblocking"], capture_output=True, timeout=seconds + 60, check=False)


def summarize(raw: Path) -> tuple[int, list[tuple[float, str]], list[tuple[float, str]]]:
    """(samples, heaviest frames by own time, heaviest frames including callees)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines() if raw.exists() else []:
        stack, _, count = line.rpartition(" ")
        frames = [frame for frame in stack.split(";") if "(asyncio/" not in frame and "runpy>" not in frame]
        if not frames or not count.isdigit():
            continue
        n = int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    share = (lambda counter: [(n / total, frame) for frame, n in counter.most_common(TOP)]) if total else (
        lambda counter: [])
    return total, share(own), share(inclusive)


def profile_tree(tree: bench.Tree, ids: list[str], path: str, seconds: float, workdir: Path,
                 load: bench.Load) -> list[str]:
    lines = [f"## {tree.label or 'this tree'} ({tree.root})", ""]
    with bench.host_server(tree, 1, workdir) as host:
        pid = host.procs[0].pid
        for function_id in ids:
            headers = {"id": function_id}
            bench.measure(host.url + path, headers, 16, load)  # warm-up and the CPU per request
            result = bench.measure(host.url + path, headers, 16, load, warm_up=False, server_pids=[pid])
            wrk = subprocess.Popen(["wrk", "-t1", "-c16", f"-d{seconds + 2:g}s", "-H", f"id: {function_id}",
                                    host.url + path], stdout=subprocess.DEVNULL)
            try:
                time.sleep(1)
                raw = workdir / f"{tree.label or 'this'}-{function_id}.raw"
                record(pid, seconds, raw)
            finally:
                wrk.wait(timeout=seconds + 30)
            total, own, inclusive = summarize(raw)
            lines += [f"### id `{function_id}`: {result.rps:,.0f} req/s, server CPU {result.server_cpu_us:.0f} µs "
                      f"per request; {total} samples", "", "| own | frame | | incl. | frame |", "|--:|---|---|--:|---|"]
            for (own_share, own_frame), (inc_share, inc_frame) in zip(own, inclusive, strict=False):
                lines.append(f"| {own_share:.1%} | `{own_frame}` | | {inc_share:.1%} | `{inc_frame}` |")
            lines.append("")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", default="hello,noop")
    parser.add_argument("--path", default="/", help="request path and query, e.g. /?name=book1 for id_1")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--also-tree", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("needs wrk on PATH", file=sys.stderr)
        return 2
    load = bench.Load(duration=5, warmup=2, threads=1, rounds=1)
    trees = [bench.Tree(bench.REPO), *([bench.Tree(args.also_tree, args.also_tree.name)] if args.also_tree else [])]
    lines = ["# Hot-path profiles (py-spy, host under wrk)", "",
             f"- load average at the start: {bench.load_average()}; command: `python bench/profile_http.py "
             f"{' '.join(sys.argv[1:])}`", ""]
    with tempfile.TemporaryDirectory(prefix="wasm-faas-profile-") as tmp:
        workdir = Path(tmp)
        functions = workdir / "functions"
        functions.mkdir()
        shutil.copy(bench.NOOP_SRC, functions / bench.NOOP_SRC.name)
        trees = [bench.write_host_config(workdir, functions, 2, tree) for tree in trees]
        for tree in trees:
            with contextlib.suppress(RuntimeError):
                lines += profile_tree(tree, args.ids.split(","), args.path, args.seconds, workdir, load)
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

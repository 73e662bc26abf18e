"""Where a warm-cache deploy's time goes: each step of `Deployments.deploy` timed with perf_counter.

    python bench/deploy_steps.py [MODULE.wasm] [--reps N] [--disk]

An in-process App (no listeners, no watcher) deploys copies of the module under new names; the first
deploy compiles (untimed), the rest hit the compiled-module cache in memory — or, with --disk, on disk
(the in-memory entries are dropped before each deploy). Steps are wrapped where they exist (the names
are the host's internals; a step that was renamed is reported missing rather than timed). Prints one
median per step; measures, asserts nothing."""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from host.app import App  # noqa: E402
from host.config import HostConfig  # noqa: E402
from host.functions import cache as cache_module  # noqa: E402
from host.functions import deployer as deployer_module  # noqa: E402
from host.functions import deployments as deployments_module  # noqa: E402

TIMES: dict[str, list[float]] = collections.defaultdict(list)
MISSING: list[str] = []

STEPS = [  # (owner, attribute, label), outermost last
    (deployments_module, "spec_for", "settings: spec_for (config + name.toml)"),
    (deployments_module.Deployments, "_check_source", "checks: _check_source (links, entries)"),
    (deployer_module.Deployer, "read_module", "read the file"),
    (cache_module.ModuleCache, "key", "cache key (sha256 of the bytes)"),
    (cache_module.ModuleCache, "_from_disk", "cache: artifact from disk (read + deserialize)"),
    (cache_module.ModuleCache, "load", "cache: load (memory or disk, incl. key)"),
    (deployer_module.Deployer, "compile", "compile step (cache load + import check)"),
    (deployer_module, "ProxyWasmVM", "instantiate + start (ProxyWasmVM)"),
    (deployer_module, "InstancePool", "pool object"),
    (deployer_module.Deployer, "deploy", "whole build in the guest thread (Deployer.deploy)"),
    (deployments_module.Router, "replace", "router swap (deploys and removals)"),
]


def wrap(owner: Any, name: str, label: str) -> None:
    original = getattr(owner, name, None)
    if original is None:
        MISSING.append(f"{label} ({name})")
        return

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            TIMES[label].append((time.perf_counter() - started) * 1000)

    setattr(owner, name, timed)


def drop_memory_entries(cache: Any) -> None:
    for attribute in ("_loaded", "_alive"):
        entries = getattr(cache, attribute, None)
        if entries is not None:
            entries.clear()


async def measure(module: Path, reps: int, disk: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="wasm-faas-deploy-steps-"))
    try:
        folder = tmp / "functions"
        folder.mkdir()
        config = HostConfig.model_validate({
            "server": {"listen": "127.0.0.1:0", "admin": "127.0.0.1:0", "grpc": "", "dapr_http": "",
                       "cache_dir": str(tmp / "cache"), "watch": False},
            "functions_dirs": [str(folder)]})
        app = App(config)
        await app.start()
        data = module.read_bytes()
        totals = []
        for rep in range(reps + 1):
            path = folder / f"copy{rep}.wasm"
            path.write_bytes(data)
            if disk:
                drop_memory_entries(app.cache)
            started = time.perf_counter()
            record = await app.deployments.deploy(path)
            elapsed = (time.perf_counter() - started) * 1000
            if record.last_outcome != "deployed":
                raise SystemExit(f"{module}: {record.last_error}")
            await app.deployments.remove(path)
            path.unlink()
            if rep == 0:
                TIMES.clear()  # the first one compiles
                continue
            totals.append(elapsed)
        stats = app.cache.stats()
        await app.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{module.name} ({len(data):,} bytes): {reps} deploys from the {'disk' if disk else 'memory'} cache; "
          f"module_cache {stats}")
    print(f"  Deployments.deploy, end to end: median {statistics.median(totals):.3f} ms")
    for label, values in TIMES.items():
        print(f"  {label:52s} median {statistics.median(values):.3f} ms  (n={len(values)})")
    for label in MISSING:
        print(f"  {label}: not found, not timed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("module", nargs="?", type=Path, default=REPO / "examples" / "functions" / "hello.wasm")
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--disk", action="store_true", help="drop the in-memory cache entries before each deploy")
    args = parser.parse_args()
    for owner, name, label in STEPS:
        wrap(owner, name, label)
    asyncio.run(measure(args.module, args.reps, args.disk))


if __name__ == "__main__":
    main()

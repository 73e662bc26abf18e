#!/usr/bin/env python3
"""Build the C guest modules (proxy-wasm 0.2.1 + Layotto) with zig cc.

    python scripts/build_guests.py                 # examples/functions/*.c -> *.wasm (in place)
    python scripts/build_guests.py --tests OUTDIR  # tests/guests/c/*.c -> OUTDIR/*.wasm
    python scripts/build_guests.py --check         # exit 1 if committed example .wasm are stale

Run it with the Python that has ziglang installed (e.g. .venv/bin/python): the
compiler is `sys.executable -m ziglang cc`, pinned to one ziglang version so
that the committed .wasm files are reproducible byte for byte. Every run uses
a fresh temporary zig cache (unless --zig-cache is given), so results never
depend on what an earlier build left behind.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.metadata
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # guest_builds.py, beside this script
from guest_builds import BuildError, report_stale, sources_in  # noqa: E402

ZIGLANG_VERSION = "0.17.0"

ROOT = Path(__file__).resolve().parent.parent
SDK_DIR = Path("sdk-guest/c")
EXAMPLES_DIR = Path("examples/functions")
TEST_GUESTS_DIR = Path("tests/guests/c")

CFLAGS = [
    "-target", "wasm32-wasi",
    # Reactor: exports _initialize (libc setup) instead of _start/main.
    "-mexec-model=reactor",
    "-O2",
    "-std=c11",
    "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror",
    "-I", str(SDK_DIR),
    # No debug info or names: smaller modules and no build paths inside.
    "-s",
    # zig links wasm with a 16 MiB stack by default, i.e. 16 MiB of linear
    # memory per instance before the first request; 1 MiB is plenty here.
    "-Wl,-z,stack-size=1048576",
]


def check_zig_version() -> None:
    try:
        found = importlib.metadata.version("ziglang")
    except importlib.metadata.PackageNotFoundError:
        raise BuildError(
            f"the 'ziglang' package is not installed for {sys.executable}; "
            f"install it with: {sys.executable} -m pip install ziglang=={ZIGLANG_VERSION}"
        ) from None
    if found != ZIGLANG_VERSION:
        raise BuildError(
            f"ziglang {found} is installed but the guests are pinned to "
            f"ziglang=={ZIGLANG_VERSION} (other versions produce different .wasm bytes); "
            f"run: {sys.executable} -m pip install ziglang=={ZIGLANG_VERSION}"
        )


def compile_one(src: Path, out: Path, env: dict[str, str]) -> None:
    """Compile src (relative to ROOT) to out, replacing out atomically so
    that a file watcher never sees a half-written module."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    cmd = [sys.executable, "-m", "ziglang", "cc", *CFLAGS, "-o", str(partial), str(src)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BuildError(
            f"compiling {src} failed (exit {proc.returncode}):\n"
            f"  {' '.join(cmd)}\n{proc.stdout}{proc.stderr}"
        )
    os.replace(partial, out)


def build_all(sources: list[Path], out_dir: Path, jobs: int, zig_cache: Path | None) -> list[Path]:
    """Build every source into out_dir/<stem>.wasm; returns the outputs."""
    with tempfile.TemporaryDirectory(prefix="zig-cache-") as tmp:
        cache = zig_cache if zig_cache is not None else Path(tmp)
        env = dict(os.environ)
        env["ZIG_GLOBAL_CACHE_DIR"] = str(cache / "global")
        env["ZIG_LOCAL_CACHE_DIR"] = str(cache / "local")
        outputs = [out_dir / (src.stem + ".wasm") for src in sources]
        if not sources:
            return outputs
        # The first build also compiles wasi-libc into the cache; doing it
        # alone avoids two compilers racing to build the same libc.
        compile_one(sources[0], outputs[0], env)
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [
                pool.submit(compile_one, src, out, env)
                for src, out in zip(sources[1:], outputs[1:])
            ]
            errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise BuildError("\n".join(str(e) for e in errors))
        return outputs


def check_examples(jobs: int, zig_cache: Path | None) -> int:
    sources = sources_in(EXAMPLES_DIR, ".c")
    with tempfile.TemporaryDirectory(prefix="guests-check-") as tmp:
        fresh = build_all(sources, Path(tmp), jobs, zig_cache)
        return report_stale(sources, fresh, EXAMPLES_DIR, "example modules", "python scripts/build_guests.py")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--tests", metavar="OUTDIR", type=Path,
                      help=f"build {TEST_GUESTS_DIR}/*.c into OUTDIR instead of the examples")
    mode.add_argument("--check", action="store_true",
                      help="rebuild the examples in a temporary directory and fail "
                           "if a committed .wasm differs")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="parallel compiler processes (default: %(default)s)")
    parser.add_argument("--zig-cache", type=Path, default=None,
                        help="reuse this zig cache directory (faster repeated builds; "
                             "default: a fresh temporary one)")
    args = parser.parse_args(argv)

    try:
        check_zig_version()
        jobs = max(1, args.jobs)
        zig_cache = args.zig_cache.resolve() if args.zig_cache else None
        if args.check:
            return check_examples(jobs, zig_cache)
        if args.tests is not None:
            out_dir = args.tests.resolve()
            outputs = build_all(sources_in(TEST_GUESTS_DIR, ".c"), out_dir, jobs, zig_cache)
        else:
            outputs = build_all(sources_in(EXAMPLES_DIR, ".c"), ROOT / EXAMPLES_DIR, jobs, zig_cache)
    except BuildError as exc:
        print(f"build_guests: error: {exc}", file=sys.stderr)
        return 1
    for out in outputs:
        print(f"built {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

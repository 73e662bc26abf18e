#!/usr/bin/env python3
"""Build the Rust guest modules (proxy-wasm 0.2.1 + Layotto) with Debian's rustc.

    python scripts/build_rust_guests.py           # examples/functions/rust/*.rs -> examples/functions-rust/*.wasm
    python scripts/build_rust_guests.py --check   # exit 1 if committed Rust example .wasm are stale

No cargo and no crates: the SDK (sdk-guest/rust/proxy_wasm_sdk.rs) is compiled
as an rlib into a temporary directory, then every example is linked against it
as a cdylib for wasm32-unknown-unknown. The compiler is always /usr/bin/rustc
(Debian's `rustc` package, plus `libstd-rust-dev-wasm32` for the wasm32
standard library) - a rustup toolchain earlier on PATH is never used - and it
is pinned to one release so that the committed .wasm files are reproducible
byte for byte. Builds are deterministic: source paths are passed relative to
the repository and every absolute path is remapped, rustc embeds no timestamps,
and nothing is reused from an earlier run.

The outputs go to examples/functions-rust/, not examples/functions/: the host
deploys every *.wasm of a functions folder, and the Rust modules report the
same ids (id_1, id_2, hello) as the C ones there.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # guest_builds.py, beside this script
from guest_builds import BuildError, report_stale, sources_in  # noqa: E402

RUSTC = Path("/usr/bin/rustc")
# rustc links wasm with rust-lld; Debian's is a symlink (package rustc) to lld-14, which
# libstd-rust-dev-wasm32 only recommends.
WASM_LINKER = Path("/usr/bin/rust-lld")
TARGET = "wasm32-unknown-unknown"
DEBIAN_PACKAGES = ("rustc", "libstd-rust-dev-wasm32")
# The committed modules were built with Debian bookworm's rustc 1.63.0+dfsg1-2;
# another compiler (or LLVM) produces different bytes.
PINNED = {"release": "1.63.0", "LLVM version": "14.0.6"}

ROOT = Path(__file__).resolve().parent.parent
SDK_SOURCE = Path("sdk-guest/rust/proxy_wasm_sdk.rs")
SDK_CRATE = "proxy_wasm_sdk"
EXAMPLES_DIR = Path("examples/functions/rust")
OUTPUT_DIR = Path("examples/functions-rust")

COMMON_FLAGS = ["--edition", "2021", "--target", TARGET, "-D", "warnings", "-C", "panic=abort"]
SDK_FLAGS = ["--crate-type", "rlib", "--crate-name", SDK_CRATE, "-O"]
EXAMPLE_FLAGS = [
    "--crate-type", "cdylib",
    "-C", "opt-level=s",
    "-C", "lto",
    "-C", "codegen-units=1",
    # No names, no debug info: smaller modules and no build paths inside.
    "-C", "strip=symbols",
]


def install_hint() -> str:
    return (f"install Debian's packages {' and '.join(DEBIAN_PACKAGES)}: "
            f"apt-get install -y {' '.join(DEBIAN_PACKAGES)}")


def check_toolchain(any_rustc: bool) -> None:
    """/usr/bin/rustc exists, has the wasm32 standard library and is the pinned release."""
    if not (RUSTC.is_file() and os.access(RUSTC, os.X_OK)):
        raise BuildError(f"{RUSTC} not found; {install_hint()}")
    proc = subprocess.run([str(RUSTC), "-vV"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"`{RUSTC} -vV` failed: {proc.stderr.strip()}; {install_hint()}")
    info = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    sysroot = subprocess.run([str(RUSTC), "--print", "sysroot"], capture_output=True, text=True).stdout.strip()
    std_dir = Path(sysroot or "/usr") / "lib" / "rustlib" / TARGET / "lib"
    if not list(std_dir.glob("libstd-*.rlib")):
        raise BuildError(f"the {TARGET} standard library is missing for {RUSTC} (no libstd-*.rlib in "
                         f"{std_dir}); {install_hint()}")
    if not WASM_LINKER.exists():  # a dangling symlink when lld-14 (a Recommends) was left out
        raise BuildError(f"the wasm linker {WASM_LINKER} (a link to lld-14) is missing; install the "
                         f"packages with their recommendations, or: apt-get install -y lld-14")
    found = {key: info.get(key, "?") for key in PINNED}
    if found != PINNED and not any_rustc:
        raise BuildError(
            f"{RUSTC} is rustc {found['release']} (LLVM {found['LLVM version']}) but the Rust guests are "
            f"pinned to rustc {PINNED['release']} (LLVM {PINNED['LLVM version']}, Debian bookworm's "
            f"rustc 1.63.0+dfsg1-2); other versions produce different .wasm bytes. Pass --any-rustc to "
            f"build anyway (not for committing).")


def run_rustc(args: list[str], what: str) -> None:
    cmd = [str(RUSTC), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUSTFLAGS", "CARGO", "RUSTC_"))}
    env["LC_ALL"] = "C"
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"compiling {what} failed (exit {proc.returncode}):\n"
                         f"  {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")


def remaps(work: Path) -> list[str]:
    # Sources are passed relative to ROOT; these catch anything absolute.
    return ["--remap-path-prefix", f"{work}=/build", "--remap-path-prefix", f"{ROOT}=."]


def build_sdk(work: Path) -> Path:
    rlib = work / f"lib{SDK_CRATE}.rlib"
    run_rustc([*SDK_FLAGS, *COMMON_FLAGS, *remaps(work), "-o", str(rlib), str(SDK_SOURCE)], str(SDK_SOURCE))
    return rlib


def build_example(src: Path, out: Path, rlib: Path, work: Path) -> None:
    """Compile src (relative to ROOT) into out, which is replaced atomically so
    that a file watcher never sees a half-written module."""
    crate = re.sub(r"[^0-9A-Za-z_]", "_", src.stem)
    scratch = work / crate
    scratch.mkdir()
    built = scratch / f"{src.stem}.wasm"
    run_rustc([*EXAMPLE_FLAGS, "--crate-name", crate, *COMMON_FLAGS, *remaps(work),
               "--extern", f"{SDK_CRATE}={rlib}", "-L", f"dependency={rlib.parent}",
               "-o", str(built), str(src)], str(src))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    shutil.copyfile(built, partial)
    os.replace(partial, out)


def build_all(sources: list[Path], out_dir: Path, jobs: int) -> list[Path]:
    """Build every source into out_dir/<stem>.wasm; returns the outputs."""
    outputs = [out_dir / (src.stem + ".wasm") for src in sources]
    with tempfile.TemporaryDirectory(prefix="rust-guests-") as tmp:
        work = Path(tmp)
        rlib = build_sdk(work)
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(build_example, src, out, rlib, work) for src, out in zip(sources, outputs)]
            errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise BuildError("\n".join(str(e) for e in errors))
    return outputs


def check_examples(jobs: int) -> int:
    sources = sources_in(EXAMPLES_DIR, ".rs")
    with tempfile.TemporaryDirectory(prefix="rust-guests-check-") as tmp:
        fresh = build_all(sources, Path(tmp), jobs)
        return report_stale(sources, fresh, OUTPUT_DIR, "Rust example modules", "python scripts/build_rust_guests.py")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="rebuild the examples in a temporary directory and fail if a committed .wasm differs")
    parser.add_argument("--any-rustc", action="store_true",
                        help=f"build with whatever {RUSTC} is installed, not only the pinned release")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="parallel compiler processes (default: %(default)s)")
    args = parser.parse_args(argv)

    try:
        check_toolchain(args.any_rustc)
        jobs = max(1, args.jobs)
        if args.check:
            return check_examples(jobs)
        outputs = build_all(sources_in(EXAMPLES_DIR, ".rs"), ROOT / OUTPUT_DIR, jobs)
    except BuildError as exc:
        print(f"build_rust_guests: error: {exc}", file=sys.stderr)
        return 1
    for out in outputs:
        print(f"built {out.relative_to(ROOT)} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Compiles the runtime API's `.proto` files into Python modules: the one implementation of codegen.

Why it exists: generated code is never committed. setup.py runs `generate` at install time (into the
build tree for `pip install .`, into the source tree for `pip install -e .`), and developers who edit a
`.proto` run `python -m host.grpc.codegen` to regenerate in place. setup.py loads this file by path,
before the package is importable, so it imports only the standard library at module level.

Layout: protoc's import root is the source root (the folder holding `host/`), so a source at
`host/grpc/proto/dapr/proto/runtime/v1/dapr.proto` imports its siblings as
`import "host/grpc/proto/..."`, and protoc turns that into `from host.grpc.proto... import x_pb2`: the
generated modules import each other as ordinary subpackages of `host`, with no sys.path tricks and no
top-level `dapr` or `spec` package that could shadow the Dapr SDK's.

Post-processing, two small steps: each `*_pb2.py` is made to register in `host.grpc.pool.POOL`
instead of protobuf's default pool (why: see host/grpc/pool.py); it rewrites exactly one generated line
and fails loudly if a new protoc ever emits something else. Each `*_pb2_grpc.py` (untyped, with no
stub) gets a `# mypy: ignore-errors` first line so typed modules importing it stay mypy-clean.
"""

from __future__ import annotations

import argparse
import importlib.resources
import sys
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = Path("host", "grpc", "proto")
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")

_DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
_PRIVATE_POOL = "_HOST_POOL.AddSerializedFile("
_IMPORTS_POINT = "# @@protoc_insertion_point(imports)\n"
_POOL_IMPORT = "from host.grpc.pool import POOL as _HOST_POOL\n"
# The gRPC plugin writes untyped code and no stubs; mypy follows imports into it from typed modules.
_UNTYPED_HEADER = "# mypy: ignore-errors\n"


class CodegenError(RuntimeError):
    """protoc failed, or its output no longer has the shape the pool rewrite expects."""


def proto_sources(root: Path = SOURCE_ROOT) -> list[Path]:
    """Every `.proto` under host/grpc/proto, relative to `root` (protoc's import root)."""
    return sorted(path.relative_to(root) for path in (root / PROTO_DIR).rglob("*.proto"))


def expected_outputs(root: Path = SOURCE_ROOT) -> list[Path]:
    """The generated files, relative to the output root, for every source."""
    return [source.with_name(source.stem + suffix) for source in proto_sources(root)
            for suffix in GENERATED_SUFFIXES]


def generate(out: Path, root: Path = SOURCE_ROOT) -> list[Path]:
    """Compiles every source under `root` into `out` (same relative paths); returns the files written.

    Leftovers from a removed `.proto` are deleted, so `out` holds exactly what the sources define.
    """
    from grpc_tools import protoc  # a build/dev dependency only: imported when generating

    sources = proto_sources(root)
    if not sources:
        raise CodegenError(f"no .proto files under {root / PROTO_DIR}")
    out.mkdir(parents=True, exist_ok=True)
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    args = ["grpc_tools.protoc", f"--proto_path={root}", f"--proto_path={well_known}",
            f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}",
            *(str(root / source) for source in sources)]
    status = protoc.main(args)
    if status != 0:
        raise CodegenError(f"protoc exited with {status} (its messages are on stderr)")
    written = [out / path for path in expected_outputs(root)]
    for path in written:
        if not path.is_file():
            raise CodegenError(f"protoc did not write {path}")
        if path.name.endswith("_pb2.py"):
            _use_private_pool(path)
        elif path.name.endswith("_pb2_grpc.py"):
            path.write_text(_UNTYPED_HEADER + path.read_text(encoding="utf-8"), encoding="utf-8")
    _remove_leftovers(out, set(written))
    return written


def _use_private_pool(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    if text.count(_DEFAULT_POOL) != 1 or text.count(_IMPORTS_POINT) != 1:
        raise CodegenError(f"{path}: unexpected generated code; cannot move it to the private descriptor pool")
    # protoc's insertion points mark where added code belongs: imports go right before this one.
    text = text.replace(_IMPORTS_POINT, _POOL_IMPORT + _IMPORTS_POINT).replace(_DEFAULT_POOL, _PRIVATE_POOL)
    path.write_text(text, encoding="utf-8")


def _remove_leftovers(out: Path, keep: set[Path]) -> None:
    for suffix in GENERATED_SUFFIXES:
        for path in (out / PROTO_DIR).rglob("*" + suffix):
            if path not in keep:
                path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m host.grpc.codegen", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SOURCE_ROOT,
                        help="output root (default: in place, next to the sources: %(default)s)")
    options = parser.parse_args(argv)
    try:
        written = generate(options.out.resolve())
    except CodegenError as error:
        print(f"codegen: {error}", file=sys.stderr)
        return 1
    print(f"codegen: wrote {len(written)} files under {options.out / PROTO_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

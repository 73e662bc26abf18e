"""Builds what pyproject.toml cannot declare: the optional C extension and the generated gRPC modules.

`optional=True`: without a C compiler the package still installs, and the engine falls back to
its ctypes back-end (abi/engine/__init__.py). The extension needs only Python's headers.

The runtime API's `*_pb2*.py` modules are generated from host/grpc/proto/**/*.proto by
host/grpc/codegen.py (grpcio-tools is a build requirement) and never committed: into the build tree
for `pip install .` / wheels, and in place for `pip install -e .`, where setuptools' editable build
runs build_py with `editable_mode` set and the import finder maps `host` to this source tree.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _codegen() -> ModuleType:
    # Loaded by path: the `host` package is not importable (nor its dependencies installed) at build time.
    spec = importlib.util.spec_from_file_location("_host_grpc_codegen", ROOT / "host" / "grpc" / "codegen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the embedded quickstart in an installed package (issue 15 item 12) ---
QUICKSTART_DIRS = 'functions_dirs = ["../examples/functions"]'


def _package_quickstart(build_lib: Path) -> None:
    """`wasm-faas serve` with no --config loads configs/quickstart.toml; an installed package has no
    repository beside it, so the file and the example modules it serves go into host/quickstart/
    (host/config/model.py DEFAULT_CONFIG falls back to them), the folder rewritten to point there."""
    text = (ROOT / "configs" / "quickstart.toml").read_text()
    if QUICKSTART_DIRS not in text:
        raise SystemExit(f"configs/quickstart.toml: expected the line {QUICKSTART_DIRS!r} to rewrite")
    target = build_lib / "host" / "quickstart"
    (target / "functions").mkdir(parents=True, exist_ok=True)
    (target / "quickstart.toml").write_text(text.replace(QUICKSTART_DIRS, 'functions_dirs = ["functions"]'))
    for module in sorted((ROOT / "examples" / "functions").glob("*.wasm")):
        (target / "functions" / module.name).write_bytes(module.read_bytes())
# --- end embedded quickstart ---


class BuildPyWithProtos(build_py):
    """build_py, then protoc into the tree the installed package will be imported from (and, for a
    regular build, the embedded quickstart)."""

    def run(self) -> None:
        super().run()
        if not self.editable_mode:  # an editable install reads the repository's own files
            _package_quickstart(Path(self.build_lib))
        # After the copy, so modules generated now replace any stale in-place ones build_py copied.
        target = ROOT if self.editable_mode else Path(self.build_lib)
        try:
            _codegen().generate(target, ROOT)
        except Exception as error:
            # SystemExit, because setuptools' editable build turns an Exception from a customised build_py
            # into a warning and would install a package without its gRPC modules.
            raise SystemExit(f"generating the gRPC modules failed: {error!r}") from error


setup(ext_modules=[Extension("abi.engine._native", ["abi/engine/_native.c", "abi/engine/_native_calls.c",
                                                       "abi/engine/_native_fast.c", "abi/engine/_native_ticker.c"],
                             depends=["abi/engine/_native.h"], optional=True,
                             extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                                 "-Wno-missing-field-initializers", "-Wno-cast-function-type",
                                                 "-pthread"],
                             extra_link_args=["-pthread"])],  # the epoch ticker's thread
      cmdclass={"build_py": BuildPyWithProtos},
      # The sources ship too (for clients and reflection tools); every package picks up its own *.proto.
      package_data={"": ["*.proto"]})

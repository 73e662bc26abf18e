"""`python -m host inspect FILE.wasm`: what a module needs and whether it will run here (a component
is described by host/functions/components/inspect.py)."""

from __future__ import annotations

from pathlib import Path

import wasmtime

from abi import WasmEngine, all_host_functions
from abi.engine import HostLinker
from abi.vm import abi_version
from host.functions.components import is_component
from host.functions.components.inspect import inspect_component

CALLBACK_PREFIX = "proxy_on_"


def _signature(kind: object) -> str:
    if isinstance(kind, wasmtime.FuncType):
        params = ", ".join(str(p) for p in kind.params)
        results = ", ".join(str(r) for r in kind.results) or "()"
        return f"({params}) -> {results}"
    return type(kind).__name__


def inspect_module(path: Path) -> tuple[str, bool]:
    """A readable report, and whether the module can run on this host."""
    engine = WasmEngine("public")
    raw = path.read_bytes()
    try:
        wasm = bytes(wasmtime.wat2wasm(raw.decode())) if path.suffix == ".wat" else raw
        if is_component(wasm):
            return inspect_component(path, wasm)
        module = engine.compile(wasm)
    except (wasmtime.WasmtimeError, UnicodeDecodeError) as error:
        return f"{path}: not a valid WebAssembly module: {str(error).strip().splitlines()[0]}", False
    linker = HostLinker(engine, all_host_functions())
    missing = set(linker.missing_imports(module))
    exports = {e.name: e.type for e in module.exports}
    version = abi_version(exports.__contains__)
    lines = [f"module: {path} ({len(raw)} bytes)",
             f"proxy-wasm ABI: {version if version != 'unknown' else 'no marker (treated as 0.2.1)'}"]
    lines.append(f"imports ({len(module.imports)}):")
    problems = []
    for imp in module.imports:
        name = f"{imp.module}.{imp.name}"
        problem = next((m for m in missing if m.startswith(name + " ")), None)
        lines.append(f"  {'MISSING' if problem else 'ok     '} {name} {_signature(imp.type)}")
        if problem:
            problems.append(problem)
    lines.append(f"exports ({len(exports)}):")
    for name, kind in exports.items():
        lines.append(f"  {name} {_signature(kind)}")
    callbacks = sorted(n for n in exports if n.startswith(CALLBACK_PREFIX))
    allocator = "proxy_on_memory_allocate" if "proxy_on_memory_allocate" in exports else (
        "malloc" if "malloc" in exports else None)
    start = "_initialize" if "_initialize" in exports else ("_start" if "_start" in exports else "none")
    lines += [f"callbacks: {', '.join(callbacks) or 'none'}",
              f"allocator: {allocator or 'none (host imports that return data will fail)'}",
              f"start function: {start}",
              "function id: " + ("reported by proxy_get_id" if "proxy_get_id" in exports
                                 else f"the file stem: {path.stem}")]
    runs = not problems and "memory" in exports
    if "memory" not in exports:
        problems.append("the module exports no memory")
    verdict = "will run here" if runs else "will NOT run here: " + "; ".join(problems)
    lines.append(f"verdict: {verdict}")
    return "\n".join(lines), runs

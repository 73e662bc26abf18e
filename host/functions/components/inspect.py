"""`python -m host inspect FILE.wasm` for a component: its world, what it imports (and whether this
host provides each), what it exports, and a verdict found by doing what a deploy does — compile
(through the default compiled-module cache: a Python component takes tens of seconds the first
time), check the exports' types, start one instance and ask its id."""

from __future__ import annotations

import logging
from pathlib import Path

import wasmtime
import wasmtime.component as wc

from abi import HostServices, PluginSettings
from abi.engine import GuestTrap, WasmEngine
from host.functions.cache import ModuleCache, default_cache_dir
from host.functions.components.instance import ComponentCode, ComponentInstance, ComponentRefused, describe_error
from host.functions.components.linker import ComponentLinker
from host.functions.components.signature import func_text, instance_functions, item_text
from host.functions.components.world import HANDLER, IDENTITY, PACKAGE, RUNTIME, VERSION, provided_import


def inspect_component(path: Path, wasm: bytes, cache_dir: Path | None = None) -> tuple[str, bool]:
    """A readable report, and whether the component can run on this host as a function."""
    engine = WasmEngine()
    cache = ModuleCache(engine, cache_dir or default_cache_dir())
    try:
        component = cache.load_component(wasm)
    except wasmtime.WasmtimeError as error:
        return f"{path}: not a valid WebAssembly component: {describe_error(error)}", False
    imports = {name: extern.ty for name, extern in component.type.imports(engine.engine).items()}
    exports = {name: extern.ty for name, extern in component.type.exports(engine.engine).items()}
    world = "named-function" if IDENTITY in exports else "function"
    lines = [f"component: {path} ({len(wasm)} bytes)",
             f"world: {PACKAGE}/{world}@{VERSION}" if HANDLER in exports else
             f"world: not {PACKAGE}@{VERSION} (no {HANDLER} export)",
             f"imports ({len(imports)}):"]
    for name, item in imports.items():
        line = f"  {'ok     ' if provided_import(name) else 'MISSING'} {name} {item_text(item)}"
        if name == RUNTIME:  # which capabilities the function uses
            line += " (" + ", ".join(instance_functions(engine.engine, item)) + ")"
        lines.append(line)
    lines.append(f"exports ({len(exports)}):")
    for name, item in exports.items():
        functions = instance_functions(engine.engine, item)
        lines.append(f"  {name} {item_text(item)}")
        lines += [f"    {func} {func_text(kind)}" for func, kind in functions.items()]
    verdict, function_id = _try_start(engine, component, path.stem)
    lines.append("function id: " + (f"{function_id} (reported by {IDENTITY})" if IDENTITY in exports
                                    else f"the file stem: {path.stem}"))
    lines.append(f"verdict: {verdict or 'will run here'}")
    return "\n".join(lines), verdict is None


def _try_start(engine: WasmEngine, component: wc.Component, name: str) -> tuple[str | None, str]:
    """(None, its id) when an instance starts; (why not, "?") otherwise."""
    engine.start_ticker()  # the start-up deadline needs the epoch to advance
    try:
        code = ComponentCode.prepare(ComponentLinker(engine), component)
        services = HostServices(logger=logging.getLogger("wasm.guest"))
        instance = ComponentInstance(code, PluginSettings(name=name), services, start_deadline_s=10.0)
    except ComponentRefused as error:
        return f"will NOT run here: {error}", "?"
    except GuestTrap as trap:
        return f"will NOT run here: it does not start: {trap}", "?"
    finally:
        engine.stop_ticker()
    instance.close()
    return None, instance.function_id

"""Component types as WIT-like text, and the check that a component's exports have the world's types.

wasmtime checks imports when it links an instance, but an export is only type-checked when it is
called: a component whose `handle` has another shape would link, start, and fail every request.
So the deployer compares each export the host calls with the world's declared type, and `inspect`
prints what a component imports and exports in the same notation.
"""

from __future__ import annotations

from typing import Any

import wasmtime
import wasmtime.component as wc

from host.functions.components.world import FUNCTION_ID, HANDLE, HANDLER, IDENTITY

_HEADERS = "list<tuple<string, string>>"
# The world's types for what the host calls (parameter names are not part of the check).
EXPECTED = {
    (HANDLER, HANDLE): f"func(record {{ method: string, path: string, headers: {_HEADERS}, body: list<u8> }}) -> "
                       f"record {{ status: u16, headers: {_HEADERS}, body: list<u8> }}",
    (IDENTITY, FUNCTION_ID): "func() -> string",
}

_SIMPLE = {wc.Bool: "bool", wc.S8: "s8", wc.S16: "s16", wc.S32: "s32", wc.S64: "s64", wc.U8: "u8", wc.U16: "u16",
           wc.U32: "u32", wc.U64: "u64", wc.F32: "f32", wc.F64: "f64", wc.Char: "char", wc.String: "string"}


def value_text(ty: Any) -> str:
    """A value type in WIT notation (records and variants spelled out, as they have no names here)."""
    simple = _SIMPLE.get(type(ty))
    if simple is not None:
        return simple
    if isinstance(ty, wc.ListType):
        return f"list<{value_text(ty.element)}>"
    if isinstance(ty, wc.TupleType):
        return f"tuple<{', '.join(value_text(e) for e in ty.elements)}>"
    if isinstance(ty, wc.RecordType):
        return "record { " + ", ".join(f"{name}: {value_text(t)}" for name, t in ty.fields) + " }"
    if isinstance(ty, wc.VariantType):
        cases = (f"{name}({value_text(t)})" if t is not None else name for name, t in ty.cases)
        return "variant { " + ", ".join(cases) + " }"
    if isinstance(ty, wc.EnumType):
        return "enum { " + ", ".join(ty.names) + " }"
    if isinstance(ty, wc.FlagsType):
        return "flags { " + ", ".join(ty.names) + " }"
    if isinstance(ty, wc.OptionType):
        return f"option<{value_text(ty.payload)}>"
    if isinstance(ty, wc.ResultType):
        ok = value_text(ty.ok) if ty.ok is not None else "_"
        return f"result<{ok}, {value_text(ty.err)}>" if ty.err is not None else f"result<{ok}>"
    if isinstance(ty, wc.OwnType):
        return "own<resource>"
    if isinstance(ty, wc.BorrowType):
        return "borrow<resource>"
    return type(ty).__name__.lower()


def func_text(func: wc.FuncType, *, names: bool = True) -> str:
    params = ", ".join(f"{name}: {value_text(t)}" if names else value_text(t) for name, t in func.params)
    result = func.result
    return f"func({params})" + (f" -> {value_text(result)}" if result is not None else "")


def item_text(item: Any) -> str:
    """One import or export: a function's signature, an instance's function names, else its kind."""
    if isinstance(item, wc.FuncType):
        return func_text(item)
    if isinstance(item, wc.ComponentInstanceType):
        return "instance"
    return type(item).__name__


def instance_functions(engine: wasmtime.Engine, item: Any) -> dict[str, wc.FuncType]:
    """The functions an imported or exported instance holds, by name."""
    if not isinstance(item, wc.ComponentInstanceType):
        return {}
    found = {}
    for name, extern in item.exports(engine).items():
        kind = extern.ty
        if isinstance(kind, wc.FuncType):
            found[name] = kind
    return found


def export_problems(engine: wasmtime.Engine, component: wc.Component) -> list[str]:
    """Exports the host calls whose type is not the world's (an absent identity is fine)."""
    exports = {name: extern.ty for name, extern in component.type.exports(engine).items()}
    problems = []
    for (interface, name), expected in EXPECTED.items():
        func = instance_functions(engine, exports.get(interface)).get(name)
        if func is None:
            continue
        found = func_text(func, names=False)
        if found != expected:
            problems.append(f"{interface}#{name} is {found}, the world declares {expected}")
    return problems

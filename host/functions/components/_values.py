"""The function world's values as wasmtime's C API holds them (`wasmtime_component_val_t`), written
and read here directly instead of through wasmtime-py's generic converters.

Why not those converters (wasmtime-py 50.0.1): they choose a `result`'s or `option`'s case from the
Python type of the value, so `result<option<T>, error>` cannot carry its error case (the `none` case
claims every Python object); they keep per-call state in module globals (a guest thread could see
another's); and they convert a `list<u8>` one Python call per byte. The world is small and fixed
(sdk-guest/wit/function.wit), so each of its types has a writer and a reader below, and a `list<u8>`
is two strided copies (kinds, then bytes) over the C array of values.

Ownership follows the C API: a value written here belongs to whoever hands it to wasmtime (an
argument array: the caller deletes it after the call; a host function's result: wasmtime frees it).
Encoding happens before anything is allocated, and each writer sets the value's kind last: a value
left half-written by an error still reads as a `bool` (what wasmtime initialises results with), so
wasmtime frees nothing that was not written — it leaks instead of crashing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence

from wasmtime import _ffi as ffi

Val = ffi.wasmtime_component_val_t
VAL_SIZE = ctypes.sizeof(Val)
_PAYLOAD = Val.of.offset  # where a value's payload (the union) starts

BOOL = ffi.WASMTIME_COMPONENT_BOOL.value
U8 = ffi.WASMTIME_COMPONENT_U8.value
U16 = ffi.WASMTIME_COMPONENT_U16.value
U32 = ffi.WASMTIME_COMPONENT_U32.value
U64 = ffi.WASMTIME_COMPONENT_U64.value
STRING = ffi.WASMTIME_COMPONENT_STRING.value
LIST = ffi.WASMTIME_COMPONENT_LIST.value
RECORD = ffi.WASMTIME_COMPONENT_RECORD.value
TUPLE = ffi.WASMTIME_COMPONENT_TUPLE.value
VARIANT = ffi.WASMTIME_COMPONENT_VARIANT.value
ENUM = ffi.WASMTIME_COMPONENT_ENUM.value
OPTION = ffi.WASMTIME_COMPONENT_OPTION.value
RESULT = ffi.WASMTIME_COMPONENT_RESULT.value
_U8_KIND = bytes((U8,))

Writer = Callable[[Val], None]
Headers = list[tuple[str, str]]


class ValueShapeError(Exception):
    """A value does not have the shape the world declares (a component built against another world
    version would be refused at instantiation; this guards the readers all the same)."""


def utf8(text: str) -> bytes:
    """Component strings must be valid UTF-8 (wasmtime aborts on anything else): lone surrogates,
    which Python strings may hold, become U+FFFD."""
    return text.encode("utf-8", "replace")


# -- writers -------------------------------------------------------------------------------------
def _fill(vec: ffi.wasm_byte_vec_t, data: bytes) -> None:
    ffi.wasm_byte_vec_new_uninitialized(ctypes.byref(vec), len(data))
    if data:
        ctypes.memmove(vec.data, data, len(data))


def put_string(val: Val, data: bytes) -> None:
    """`data`: UTF-8 (see `utf8`)."""
    _fill(val.of.string, data)
    val.kind = STRING


def put_bytes(val: Val, data: bytes) -> None:
    """A `list<u8>`: the C array holds one value per byte, filled with two strided copies."""
    count = len(data)
    ffi.wasmtime_component_vallist_new_uninit(ctypes.byref(val.of.list), count)
    if count:
        address = ctypes.cast(val.of.list.data, ctypes.c_void_p).value
        array = memoryview((ctypes.c_ubyte * (count * VAL_SIZE)).from_address(address or 0)).cast("B")
        array[0::VAL_SIZE] = _U8_KIND * count
        array[_PAYLOAD::VAL_SIZE] = data
    val.kind = LIST


def put_headers(val: Val, headers: Sequence[tuple[bytes, bytes]]) -> None:
    """A `list<tuple<string, string>>` of UTF-8 pairs."""
    ffi.wasmtime_component_vallist_new_uninit(ctypes.byref(val.of.list), len(headers))
    items = val.of.list.data
    for index, (name, value) in enumerate(headers):
        item = items[index]
        ffi.wasmtime_component_valtuple_new_uninit(ctypes.byref(item.of.tuple), 2)
        put_string(item.of.tuple.data[0], name)
        put_string(item.of.tuple.data[1], value)
        item.kind = TUPLE
    val.kind = LIST


def put_record(val: Val, fields: Sequence[tuple[bytes, Writer]]) -> None:
    """A record with `fields` (name, writer) in the order the world declares them."""
    ffi.wasmtime_component_valrecord_new_uninit(ctypes.byref(val.of.record), len(fields))
    entries = val.of.record.data
    for index, (name, write) in enumerate(fields):
        entry = entries[index]
        _fill(entry.name, name)
        write(entry.val)
    val.kind = RECORD


def put_bool(val: Val, value: bool) -> None:
    val.of.boolean = value
    val.kind = BOOL


def put_u64(val: Val, value: int) -> None:
    val.of.u64 = value
    val.kind = U64


def put_enum(val: Val, case: bytes) -> None:
    _fill(val.of.enumeration, case)
    val.kind = ENUM


def _boxed(write: Writer) -> ctypes._Pointer[Val]:
    """A heap value for an option's, result's or variant's payload (wasmtime frees it with its owner)."""
    payload = Val()
    write(payload)
    return ffi.wasmtime_component_val_new(ctypes.byref(payload))


def put_option(val: Val, write: Writer | None) -> None:
    """`none` when `write` is None, else `some` of what it writes."""
    val.of.option = _boxed(write) if write is not None else None
    val.kind = OPTION


def put_variant(val: Val, case: bytes, write: Writer | None) -> None:
    payload = _boxed(write) if write is not None else None
    _fill(val.of.variant.discriminant, case)
    val.of.variant.val = payload
    val.kind = VARIANT


def put_ok(val: Val, write: Writer | None = None) -> None:
    """`ok` of what `write` writes; `write` None for a `result<_, E>`."""
    val.of.result.val = _boxed(write) if write is not None else None
    val.of.result.is_ok = True
    val.kind = RESULT


def put_err(val: Val, write: Writer) -> None:
    val.of.result.val = _boxed(write)
    val.of.result.is_ok = False
    val.kind = RESULT


def put_request(val: Val, method: str, path: str, headers: Sequence[tuple[str, str]], body: bytes) -> None:
    """The world's `request` record."""
    encoded = [(utf8(name), utf8(value)) for name, value in headers]
    method_bytes, path_bytes = utf8(method), utf8(path)
    put_record(val, (
        (b"method", lambda field: put_string(field, method_bytes)),
        (b"path", lambda field: put_string(field, path_bytes)),
        (b"headers", lambda field: put_headers(field, encoded)),
        (b"body", lambda field: put_bytes(field, body)),
    ))


# -- readers -------------------------------------------------------------------------------------
def _expect(val: Val, kind: int, what: str) -> None:
    if val.kind != kind:
        raise ValueShapeError(f"expected {what}, got a value of kind {val.kind}")


def _vec_bytes(vec: ffi.wasm_byte_vec_t) -> bytes:
    return ctypes.string_at(vec.data, vec.size) if vec.size else b""


def get_string(val: Val) -> str:
    _expect(val, STRING, "a string")
    return _vec_bytes(val.of.string).decode("utf-8")


def get_bytes(val: Val) -> bytes:
    _expect(val, LIST, "a list<u8>")
    count = val.of.list.size
    if not count:
        return b""
    address = ctypes.cast(val.of.list.data, ctypes.c_void_p).value
    array = memoryview((ctypes.c_ubyte * (count * VAL_SIZE)).from_address(address or 0)).cast("B")
    if array[0::VAL_SIZE].tobytes().count(_U8_KIND) != count:
        raise ValueShapeError("expected a list<u8>")
    return array[_PAYLOAD::VAL_SIZE].tobytes()


def get_headers(val: Val) -> Headers:
    _expect(val, LIST, "a list of header pairs")
    items = val.of.list.data
    pairs = []
    for index in range(val.of.list.size):
        item = items[index]
        _expect(item, TUPLE, "a (name, value) tuple")
        if item.of.tuple.size != 2:
            raise ValueShapeError("expected a (name, value) pair")
        pairs.append((get_string(item.of.tuple.data[0]), get_string(item.of.tuple.data[1])))
    return pairs


def get_record(val: Val) -> dict[str, Val]:
    """A record's fields by name (views into `val`: read them before `val` is deleted)."""
    _expect(val, RECORD, "a record")
    entries = val.of.record.data
    return {_vec_bytes(entries[index].name).decode("utf-8"): entries[index].val
            for index in range(val.of.record.size)}


def get_u16(val: Val) -> int:
    _expect(val, U16, "a u16")
    return int(val.of.u16)


def get_u32(val: Val) -> int:
    _expect(val, U32, "a u32")
    return int(val.of.u32)


def get_enum(val: Val) -> str:
    _expect(val, ENUM, "an enum case")
    return _vec_bytes(val.of.enumeration).decode("utf-8")


def get_option_string(val: Val) -> str | None:
    _expect(val, OPTION, "an option")
    payload = val.of.option
    return get_string(payload.contents) if payload else None


def get_response(val: Val) -> tuple[int, Headers, bytes]:
    """The world's `response` record: (status, headers, body)."""
    fields = get_record(val)
    try:
        return get_u16(fields["status"]), get_headers(fields["headers"]), get_bytes(fields["body"])
    except KeyError as missing:
        raise ValueShapeError(f"response record without field {missing}") from None


def delete(val: Val) -> None:
    """Free what `val` owns (not `val` itself: it lives in a ctypes array)."""
    ffi.wasmtime_component_val_delete(ctypes.byref(val))

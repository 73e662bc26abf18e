"""The function world's values as wasmtime's C API holds them (`wasmtime_component_val_t`), written
and read here directly instead of through wasmtime-py's generic converters.

Why not those converters (wasmtime-py 50.0.1): they choose a `result`'s or `option`'s case from the
Python type of the value, so `result<option<T>, error>` cannot carry its error case (the `none` case
claims every Python object); they keep per-call state in module globals (a guest thread could see
another's); they convert a `list<u8>` one Python call per byte; and they ask wasmtime for the types
again at every call. The world is small and fixed (sdk-guest/wit/function.wit), so each of its types
has a writer and a reader below, working on addresses (a value is 32 bytes: its kind, then its
payload at offset 8), and a `list<u8>` is two strided copies (kinds, then bytes) over the C array.

The C API's small allocation functions are called through `ctypes.PyDLL` (they do not block: keeping
the GIL across them halves their cost); guest calls go through wasmtime-py's `CDLL`, which releases
the GIL while the guest runs.

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
_ENTRY_SIZE = ctypes.sizeof(ffi.wasmtime_component_valrecord_entry)


def _offset(struct: type, field: str) -> int:
    return int(getattr(struct, field).offset)


_ENTRY_VAL = _offset(ffi.wasmtime_component_valrecord_entry, "val")
_VARIANT_VAL = _offset(ffi.wasmtime_component_valvariant, "val")
_RESULT_VAL = _offset(ffi.wasmtime_component_valresult, "val")
# The readers and writers below rely on this layout (wasmtime 50.0.1's).
if (_PAYLOAD, _offset(ffi.wasm_byte_vec_t, "data"), _offset(ffi.wasmtime_component_vallist, "data")) != (8, 8, 8):
    raise ImportError("wasmtime's component value layout is not the one host/functions/components was written for")

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

_lib = ctypes.PyDLL(ffi.dll._name)


def _c(name: str, restype: type | None, *argtypes: type) -> Callable[..., int]:
    function = getattr(_lib, name)
    function.restype, function.argtypes = restype, list(argtypes)
    return function


_vec_new = _c("wasm_byte_vec_new", None, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p)
_list_new = _c("wasmtime_component_vallist_new_uninit", None, ctypes.c_void_p, ctypes.c_size_t)
_tuple_new = _c("wasmtime_component_valtuple_new_uninit", None, ctypes.c_void_p, ctypes.c_size_t)
_record_new = _c("wasmtime_component_valrecord_new_uninit", None, ctypes.c_void_p, ctypes.c_size_t)
_val_new = _c("wasmtime_component_val_new", ctypes.c_void_p, ctypes.c_void_p)
_val_delete = _c("wasmtime_component_val_delete", None, ctypes.c_void_p)

_u8 = ctypes.c_uint8.from_address
_u16 = ctypes.c_uint16.from_address
_u32 = ctypes.c_uint32.from_address
_u64 = ctypes.c_uint64.from_address
_size = ctypes.c_size_t.from_address
_pointer = ctypes.c_void_p.from_address

Writer = Callable[[int], None]  # writes a value at the address it is given
Headers = list[tuple[str, str]]


class ValueShapeError(Exception):
    """A value does not have the shape the world declares (a component built against another world
    version is refused before it runs; this guards the readers all the same)."""


def utf8(text: str) -> bytes:
    """Component strings must be valid UTF-8 (wasmtime aborts on anything else): lone surrogates,
    which Python strings may hold, become '?'."""
    return text.encode("utf-8", "replace")


def address(value: ctypes.Structure | ctypes.Array[Val]) -> int:
    return ctypes.addressof(value)


# -- writers -------------------------------------------------------------------------------------
def _kind(at: int, kind: int) -> None:
    _u8(at).value = kind


def _items(at: int) -> int:
    """The address of the first element of the list, tuple or record at `at`."""
    return _pointer(at + _PAYLOAD + 8).value or 0


def put_string(at: int, data: bytes) -> None:
    """`data`: UTF-8 (see `utf8`)."""
    _vec_new(at + _PAYLOAD, len(data), data)
    _kind(at, STRING)


def put_bytes(at: int, data: bytes) -> None:
    """A `list<u8>`: the C array holds one value per byte, filled with two strided copies."""
    count = len(data)
    _list_new(at + _PAYLOAD, count)
    if count:
        array = memoryview((ctypes.c_ubyte * (count * VAL_SIZE)).from_address(_items(at))).cast("B")
        array[0::VAL_SIZE] = _U8_KIND * count
        array[_PAYLOAD::VAL_SIZE] = data
    _kind(at, LIST)


def put_headers(at: int, headers: Sequence[tuple[bytes, bytes]]) -> None:
    """A `list<tuple<string, string>>` of UTF-8 pairs."""
    _list_new(at + _PAYLOAD, len(headers))
    item = _items(at)
    for name, value in headers:
        _tuple_new(item + _PAYLOAD, 2)
        pair = _items(item)
        put_string(pair, name)
        put_string(pair + VAL_SIZE, value)
        _kind(item, TUPLE)
        item += VAL_SIZE
    _kind(at, LIST)


def put_record(at: int, fields: Sequence[tuple[bytes, Writer]]) -> None:
    """A record with `fields` (name, writer) in the order the world declares them."""
    _record_new(at + _PAYLOAD, len(fields))
    entry = _items(at)
    for name, write in fields:
        _vec_new(entry, len(name), name)
        write(entry + _ENTRY_VAL)
        entry += _ENTRY_SIZE
    _kind(at, RECORD)


def put_bool(at: int, value: bool) -> None:
    _u8(at + _PAYLOAD).value = int(value)
    _kind(at, BOOL)


def put_u64(at: int, value: int) -> None:
    _u64(at + _PAYLOAD).value = value
    _kind(at, U64)


def put_enum(at: int, case: bytes) -> None:
    _vec_new(at + _PAYLOAD, len(case), case)
    _kind(at, ENUM)


def _boxed(write: Writer | None) -> int | None:
    """A heap value for an option's, result's or variant's payload (freed with its owner)."""
    if write is None:
        return None
    payload = Val()
    write(address(payload))
    return _val_new(address(payload))  # moves the payload's contents


def put_option(at: int, write: Writer | None) -> None:
    """`none` when `write` is None, else `some` of what it writes."""
    _pointer(at + _PAYLOAD).value = _boxed(write)
    _kind(at, OPTION)


def put_variant(at: int, case: bytes, write: Writer | None) -> None:
    payload = _boxed(write)
    _vec_new(at + _PAYLOAD, len(case), case)
    _pointer(at + _PAYLOAD + _VARIANT_VAL).value = payload
    _kind(at, VARIANT)


def _put_result(at: int, ok: bool, write: Writer | None) -> None:
    _pointer(at + _PAYLOAD + _RESULT_VAL).value = _boxed(write)
    _u8(at + _PAYLOAD).value = int(ok)
    _kind(at, RESULT)


def put_ok(at: int, write: Writer | None = None) -> None:
    """`ok` of what `write` writes; `write` None for a `result<_, E>`."""
    _put_result(at, True, write)


def put_err(at: int, write: Writer) -> None:
    _put_result(at, False, write)


def put_request(at: int, method: str, path: str, headers: Sequence[tuple[str, str]], body: bytes) -> None:
    """The world's `request` record."""
    encoded = [(utf8(name), utf8(value)) for name, value in headers]
    method_bytes, path_bytes = utf8(method), utf8(path)
    put_record(at, ((b"method", lambda field: put_string(field, method_bytes)),
                    (b"path", lambda field: put_string(field, path_bytes)),
                    (b"headers", lambda field: put_headers(field, encoded)),
                    (b"body", lambda field: put_bytes(field, body))))


# -- readers -------------------------------------------------------------------------------------
def _expect(at: int, kind: int, what: str) -> None:
    found = _u8(at).value
    if found != kind:
        raise ValueShapeError(f"expected {what}, got a value of kind {found}")


def _vec_bytes(at: int) -> bytes:
    """A wasm_byte_vec_t (size, data) at `at`."""
    size = _size(at).value
    return ctypes.string_at(_pointer(at + 8).value or 0, size) if size else b""


def get_string(at: int) -> str:
    _expect(at, STRING, "a string")
    return _vec_bytes(at + _PAYLOAD).decode("utf-8")


def get_bytes(at: int) -> bytes:
    _expect(at, LIST, "a list<u8>")
    count = _size(at + _PAYLOAD).value
    if not count:
        return b""
    array = memoryview((ctypes.c_ubyte * (count * VAL_SIZE)).from_address(_items(at))).cast("B")
    if array[0::VAL_SIZE].tobytes().count(_U8_KIND) != count:
        raise ValueShapeError("expected a list<u8>")
    return array[_PAYLOAD::VAL_SIZE].tobytes()


def get_headers(at: int) -> Headers:
    _expect(at, LIST, "a list of header pairs")
    item = _items(at)
    pairs = []
    for _ in range(_size(at + _PAYLOAD).value):
        _expect(item, TUPLE, "a (name, value) tuple")
        if _size(item + _PAYLOAD).value != 2:
            raise ValueShapeError("expected a (name, value) pair")
        pair = _items(item)
        pairs.append((get_string(pair), get_string(pair + VAL_SIZE)))
        item += VAL_SIZE
    return pairs


def get_record(at: int) -> dict[str, int]:
    """A record's fields by name (addresses inside the record: read them before it is deleted)."""
    _expect(at, RECORD, "a record")
    entry = _items(at)
    fields = {}
    for _ in range(_size(at + _PAYLOAD).value):
        fields[_vec_bytes(entry).decode("utf-8")] = entry + _ENTRY_VAL
        entry += _ENTRY_SIZE
    return fields


def get_u16(at: int) -> int:
    _expect(at, U16, "a u16")
    return int(_u16(at + _PAYLOAD).value)


def get_u32(at: int) -> int:
    _expect(at, U32, "a u32")
    return int(_u32(at + _PAYLOAD).value)


def get_enum(at: int) -> str:
    _expect(at, ENUM, "an enum case")
    return _vec_bytes(at + _PAYLOAD).decode("utf-8")


def get_option_string(at: int) -> str | None:
    _expect(at, OPTION, "an option")
    payload = _pointer(at + _PAYLOAD).value
    return get_string(payload) if payload else None


def get_response(at: int) -> tuple[int, Headers, bytes]:
    """The world's `response` record: (status, headers, body)."""
    fields = get_record(at)
    try:
        return get_u16(fields["status"]), get_headers(fields["headers"]), get_bytes(fields["body"])
    except KeyError as missing:
        raise ValueShapeError(f"response record without field {missing}") from None


def delete(at: int) -> None:
    """Free what the value at `at` owns (not the value itself: it lives in a ctypes object)."""
    _val_delete(at)

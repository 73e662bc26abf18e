"""Serialized header maps: u32 count, count x (u32 key_len, u32 value_len), then each key and value + NUL."""

from __future__ import annotations

import struct

HeaderList = list[tuple[str, str]]

_U32 = struct.Struct("<I")
# A map with more entries is refused when decoded or grown (abi/limits.py): each entry costs the host
# far more than its 10 serialized bytes, so a guest's map must not turn into millions of tuples.
MAX_MAP_ENTRIES = 8192


def first_value(pairs: HeaderList, name: str) -> str | None:
    """The value of the first pair named `name` (compared as is), or None."""
    for key, value in pairs:
        if key == name:
            return value
    return None


def encode_map(pairs: HeaderList) -> bytes:
    encoded = [(k.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape")) for k, v in pairs]
    sizes = [n for k, v in encoded for n in (len(k), len(v))]
    head = struct.pack(f"<{1 + len(sizes)}I", len(encoded), *sizes)
    body = b"".join(k + b"\0" + v + b"\0" for k, v in encoded)
    return head + body


def decode_map(data: bytes) -> HeaderList:
    """Parse a serialized map; raises ValueError when the bytes are not a well-formed map."""
    if len(data) < 4:
        raise ValueError("map shorter than its count")
    (count,) = _U32.unpack_from(data, 0)
    if count > MAX_MAP_ENTRIES:
        raise ValueError(f"map of {count} entries (at most {MAX_MAP_ENTRIES})")
    header_end = 4 + 8 * count
    if header_end > len(data):
        raise ValueError("map sizes run past the end")
    sizes = struct.unpack_from(f"<{2 * count}I", data, 4)
    pairs: HeaderList = []
    pos = header_end
    for i in range(count):
        key_len, value_len = sizes[2 * i], sizes[2 * i + 1]
        key_end = pos + key_len
        value_end = key_end + 1 + value_len
        if value_end + 1 > len(data):
            raise ValueError("map entry runs past the end")
        key = data[pos:key_end].decode("utf-8", "surrogateescape")
        value = data[key_end + 1:value_end].decode("utf-8", "surrogateescape")
        pairs.append((key, value))
        pos = value_end + 1
    return pairs

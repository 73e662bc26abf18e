"""Host-side foreign functions a guest can call with `proxy_call_foreign_function(name, args)`.

Each takes the argument bytes and returns the result bytes; a ValueError becomes BadArgument.
  compress    zlib-compress the arguments
  uncompress  reverse of compress
  sha256      the 32-byte SHA-256 digest of the arguments
  base64_encode / base64_decode
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Callable

ForeignFunction = Callable[[bytes], bytes]


def _uncompress(data: bytes) -> bytes:
    try:
        return zlib.decompress(data)
    except zlib.error as error:
        raise ValueError(f"not zlib data: {error}") from None


def _b64decode(data: bytes) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error as error:
        raise ValueError(f"not base64: {error}") from None


DEFAULT_FOREIGN_FUNCTIONS: dict[str, ForeignFunction] = {
    "compress": zlib.compress,
    "uncompress": _uncompress,
    "sha256": lambda data: hashlib.sha256(data).digest(),
    "base64_encode": base64.b64encode,
    "base64_decode": _b64decode,
}

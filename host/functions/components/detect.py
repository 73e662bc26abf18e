"""Which kind of WebAssembly binary a file holds, from its 8-byte header: after the magic `\\0asm`,
a core module has version 1 and layer 0 (`01 00 00 00`), a component (the component model's
binary format) a version of its own and layer 1 (`0d 00 01 00` today). Only the layer tells the
kinds apart: the component version has changed during the proposal and may change again."""

from __future__ import annotations

MAGIC = b"\0asm"
_COMPONENT_LAYER = b"\x01\x00"


def is_component(wasm: bytes) -> bool:
    return len(wasm) >= 8 and wasm[:4] == MAGIC and wasm[6:8] == _COMPONENT_LAYER

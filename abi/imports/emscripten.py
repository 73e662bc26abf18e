"""The `env` imports an emscripten-built module needs beside proxy-wasm's: what the official C++ SDK's
build recipe (`em++ -sSTANDALONE_WASM -sALLOW_MEMORY_GROWTH=1 --no-entry`) leaves for the host to
provide. The reference host (proxy-wasm-cpp-host, src/wasm.cc) stubs exactly these two; the rest of
emscripten's runtime is compiled into the module in standalone mode, or reaches the host as WASI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from abi.imports._registry import ImportGroup

if TYPE_CHECKING:
    from abi.vm import ProxyWasmVM

hostcall = ImportGroup(module="env", on_memory_error=None, pure=True)


@hostcall("ii")
def pthread_equal(vm: ProxyWasmVM, left: int, right: int) -> int:
    """libc++/abseil compare thread ids with it; a module without threads has one thread id."""
    return int(left == right)


@hostcall("i", result=False)
def emscripten_notify_memory_growth(vm: ProxyWasmVM, memory_index: int) -> None:
    """Called after `memory.grow` so a JavaScript host can refresh its views. Nothing to do here:
    guest memory never moves, and its size is re-read when an access falls past the known end."""

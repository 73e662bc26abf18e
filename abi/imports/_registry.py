"""A tiny decorator that turns `def proxy_x(vm, a, b) -> int` into a HostFunction description."""

from __future__ import annotations

from typing import Callable, Optional

from ..codes import Status
from ..engine import I32, I64, HostFunction

_KINDS = {"i": I32, "I": I64}


class ImportGroup:
    """The host imports of one concern (buffers, header maps, ...), in one module each."""

    def __init__(self, module: str = "env", on_memory_error: Optional[int] = Status.INVALID_MEMORY_ACCESS):
        self.module = module
        self.on_memory_error = on_memory_error
        self.functions: list[HostFunction] = []

    def __call__(self, params: str = "", *, result: bool = True, name: Optional[str] = None) -> Callable:
        """`params` spells the wasm parameter types: "i" for i32, "I" for i64."""

        def register(impl: Callable) -> Callable:
            self.functions.append(HostFunction(
                module=self.module, name=name or impl.__name__, params=tuple(_KINDS[p] for p in params),
                results=(I32,) if result else (), impl=impl, on_memory_error=self.on_memory_error))
            return impl

        return register

    def unimplemented(self, name: str, params: str) -> None:
        """Define an import that links but answers Unimplemented (until a capability lands)."""
        self(params, name=name)(lambda vm, *args: Status.UNIMPLEMENTED)

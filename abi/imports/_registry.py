"""A tiny decorator that turns `def proxy_x(vm, a, b) -> int` into a HostFunction description,
and the facts recorded on it: whether an import is pure (the function listener may run a module
that imports only pure calls inline on the event loop), and the one allow-list check."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from abi.codes import Status
from abi.engine import I32, I64, HostFunction

if TYPE_CHECKING:
    from abi.vm import ProxyWasmVM

_KINDS = {"i": I32, "I": I64}


class ImportGroup:
    """The host imports of one concern (buffers, header maps, ...), in one module each.

    `pure` imports neither block nor have effects outside their instance, so replaying a request
    that used only them on a fresh instance is safe. Blocking calls (state, invoke) and calls with
    outside effects (http/gRPC calls, shared data, queues, metrics, timers) are not pure.

    `reads` marks a blocking import that only reads (a state read; invoking another function,
    which the dispatcher allows on the event loop only when that function is replayable too): a
    module whose imports are all pure or reads may run inline as well, its blocking calls bounded
    by the inline budget (host/loop_budget.py), and be replayed when one would wait longer."""

    def __init__(self, module: str = "env", on_memory_error: int | None = Status.INVALID_MEMORY_ACCESS,
                 pure: bool = False):
        self.module = module
        self.on_memory_error = on_memory_error
        self.pure = pure
        self.functions: list[HostFunction] = []

    def __call__(self, params: str = "", *, result: bool = True, name: str | None = None,
                 pure: bool | None = None, reads: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """`params` spells the wasm parameter types: "i" for i32, "I" for i64."""

        def register(impl: Callable[..., Any]) -> Callable[..., Any]:
            self.functions.append(HostFunction(
                module=self.module, name=name or impl.__name__, params=tuple(_KINDS[p] for p in params),
                results=(I32,) if result else (), impl=impl, on_memory_error=self.on_memory_error,
                pure=self.pure if pure is None else pure, reads=reads))
            return impl

        return register


def refused(vm: ProxyWasmVM, allow_list: str, name: str, call: str) -> bool:
    """The one allow-list check (`allow_list` is the setting's name, e.g. "allowed_state_stores").
    A refused name is answered exactly as an unknown one (each import returns the status it gives
    an unknown name), so a function cannot probe what exists."""
    allowed = vm.settings.allow_lists.get(allow_list)
    if allowed is None or name in allowed:
        return False
    vm.log.warning("function %s: %s(%r) refused: not in %s", vm.function_id, call, name, allow_list)
    return True
